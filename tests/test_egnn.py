"""The EGNN layer and network: E(3) equivariance, permutation equivariance, no cross-talk in a batch,
for atoms-only networks and for networks with a pair state (bond outputs)."""

import pytest
import torch

from molediff.data.molecules import PAIRS
from molediff.models.egnn import EGNN, FullyConnectedEdges
from molediff.testing import assert_e3_equivariant

EDGES = FullyConnectedEdges()


def _random_batch(sizes, features=6, pair_features=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ptr = torch.tensor([0] + list(torch.cumsum(torch.tensor(sizes), 0)))
    n = int(ptr[-1])
    pairs = PAIRS(ptr)
    pos = torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.5
    h = torch.randn(n, features, generator=g, dtype=torch.float64)
    pair = torch.randn(pairs.shape[1], pair_features, generator=g, dtype=torch.float64)
    return pos, h, pair, ptr


def _net(pairs: bool, hidden=16, layers=2):
    torch.manual_seed(0)
    kw = dict(pair_in=5, pair_out=4, pair_hidden=8) if pairs else {}
    net = EGNN(6, 5, hidden=hidden, layers=layers, **kw).double()
    if pairs:  # the pair read-in starts at zero (warm starts); give it weights so the tests see it
        for layer in net.layers:
            torch.nn.init.normal_(layer.pair_in.weight, std=0.3)
    return net


def _run(net, h, pos, pair, ptr):
    edge_index, edge_pair = EDGES(ptr)
    has_pairs = hasattr(net, "pair_embed")
    return net(h, pos, edge_index, pair if has_pairs else None, edge_pair, PAIRS(ptr))


@pytest.mark.parametrize("pairs", [False, True])
def test_egnn_is_e3_equivariant(pairs):
    net = _net(pairs, hidden=32, layers=3)
    pos, h, pair, ptr = _random_batch([7, 4, 9])

    def fn(p):
        x_out, h_out, pair_out = _run(net, h, p, pair, ptr)
        inv = h_out if pair_out is None else torch.cat([h_out.flatten(), pair_out.flatten()])[:, None]
        return x_out - p, inv  # the displacement is the equivariant vector output

    assert_e3_equivariant(fn, pos, atol=1e-9)


@pytest.mark.parametrize("pairs", [False, True])
def test_egnn_output_actually_depends_on_geometry(pairs):
    """Guards the equivariance test against a network that ignores positions."""
    net = _net(pairs)
    pos, h, pair, ptr = _random_batch([6])
    _, a, pa = _run(net, h, pos, pair, ptr)
    _, b, pb = _run(net, h, pos * 1.3, pair, ptr)
    assert (a - b).abs().max() > 1e-4
    if pairs:
        assert (pa - pb).abs().max() > 1e-4


def test_pair_input_reaches_atom_outputs_and_pair_outputs_are_per_pair():
    net = _net(True)
    pos, h, pair, ptr = _random_batch([6])
    _, a, pa = _run(net, h, pos, pair, ptr)
    _, b, pb = _run(net, h, pos, pair * 0.0, ptr)
    assert (a - b).abs().max() > 1e-4  # messages read the pair state
    assert pa.shape == (15, 4)


@pytest.mark.parametrize("pairs", [False, True])
def test_permuting_atoms_permutes_outputs(pairs):
    net = _net(pairs)
    n = 8
    pos, h, pair, ptr = _random_batch([n])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    # the pair (i, j) of the permuted molecule is the pair (perm[i], perm[j]) of the original
    pi = PAIRS(ptr)
    dense = torch.zeros(n, n, dtype=torch.long)
    dense[pi[0], pi[1]] = torch.arange(pi.shape[1])
    dense = dense + dense.T
    new_pairs = dense[perm[pi[0]], perm[pi[1]]]
    x1, h1, p1 = _run(net, h, pos, pair, ptr)
    x2, h2, p2 = _run(net, h[perm], pos[perm], pair[new_pairs], ptr)
    torch.testing.assert_close(x2, x1[perm], atol=1e-10, rtol=0)
    torch.testing.assert_close(h2, h1[perm], atol=1e-10, rtol=0)
    if pairs:
        torch.testing.assert_close(p2, p1[new_pairs], atol=1e-10, rtol=0)


@pytest.mark.parametrize("pairs", [False, True])
def test_molecule_output_unchanged_when_others_join_the_batch(pairs):
    net = _net(pairs)
    pos, h, pair, ptr = _random_batch([5, 11, 3])
    x_all, h_all, p_all = _run(net, h, pos, pair, ptr)
    a, b = int(ptr[1]), int(ptr[2])
    pa, pb = 10, 10 + 55  # pairs of the first molecule, then of the second
    x_one, h_one, p_one = _run(net, h[a:b], pos[a:b], pair[pa:pb], torch.tensor([0, b - a]))
    torch.testing.assert_close(x_all[a:b], x_one, atol=1e-10, rtol=0)
    torch.testing.assert_close(h_all[a:b], h_one, atol=1e-10, rtol=0)
    if pairs:
        torch.testing.assert_close(p_all[pa:pb], p_one, atol=1e-10, rtol=0)


def test_fully_connected_edges_stay_within_molecules_and_name_their_pairs():
    ptr = torch.tensor([0, 3, 3, 7, 8])  # sizes 3, 0, 4, 1
    e, edge_pair = FullyConnectedEdges()(ptr)
    assert e.shape == (2, 3 * 2 + 4 * 3)
    mol = torch.bucketize(e, ptr[1:], right=True)
    assert torch.equal(mol[0], mol[1])
    assert not (e[0] == e[1]).any()
    assert len({tuple(x) for x in e.T.tolist()}) == e.shape[1]
    pairs = PAIRS(ptr)
    assert pairs.shape == (2, 3 + 6)
    # each directed edge points at the unordered pair of its two atoms; each pair gets both directions
    got = pairs[:, edge_pair]
    assert torch.equal(got.min(0).values, e.min(0).values) and torch.equal(got.max(0).values, e.max(0).values)
    assert torch.equal(torch.bincount(edge_pair), torch.full((9,), 2))
