"""The EGNN layer and network: E(3) equivariance, permutation equivariance, no cross-talk in a batch."""

import pytest
import torch

from molediff.models.egnn import EGNN, FullyConnectedEdges, RadialBasis
from tests.equivariance import assert_e3_equivariant


def _random_batch(sizes, features=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ptr = torch.tensor([0] + list(torch.cumsum(torch.tensor(sizes), 0)))
    n = int(ptr[-1])
    return torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.5, torch.randn(n, features, generator=g, dtype=torch.float64), ptr


@pytest.mark.parametrize("distance_features", ["squared", "rbf"])
def test_egnn_is_e3_equivariant(distance_features):
    torch.manual_seed(0)
    net = EGNN(6, 5, hidden=32, layers=3, distance_features=distance_features).double()
    pos, h, ptr = _random_batch([7, 4, 9])
    edges = FullyConnectedEdges()(ptr)

    def fn(p):
        x_out, h_out = net(h, p, edges)
        return x_out - p, h_out  # the displacement is the equivariant vector output

    assert_e3_equivariant(fn, pos, atol=1e-9)


def test_egnn_output_actually_depends_on_geometry():
    """Guards the equivariance test against a network that ignores positions."""
    torch.manual_seed(0)
    net = EGNN(6, 5, hidden=16, layers=2).double()
    pos, h, ptr = _random_batch([6])
    edges = FullyConnectedEdges()(ptr)
    _, a = net(h, pos, edges)
    _, b = net(h, pos * 1.3, edges)
    assert (a - b).abs().max() > 1e-4


def test_permuting_atoms_permutes_outputs():
    torch.manual_seed(0)
    net = EGNN(6, 5, hidden=16, layers=2).double()
    pos, h, ptr = _random_batch([8])
    edges = FullyConnectedEdges()(ptr)
    perm = torch.randperm(8)
    x1, h1 = net(h, pos, edges)
    x2, h2 = net(h[perm], pos[perm], edges)
    torch.testing.assert_close(x2, x1[perm], atol=1e-10, rtol=0)
    torch.testing.assert_close(h2, h1[perm], atol=1e-10, rtol=0)


def test_molecule_output_unchanged_when_others_join_the_batch():
    torch.manual_seed(0)
    net = EGNN(6, 5, hidden=16, layers=2).double()
    pos, h, ptr = _random_batch([5, 11, 3])
    edges = FullyConnectedEdges()
    x_all, h_all = net(h, pos, edges(ptr))
    a, b = int(ptr[1]), int(ptr[2])
    x_one, h_one = net(h[a:b], pos[a:b], edges(torch.tensor([0, b - a])))
    torch.testing.assert_close(x_all[a:b], x_one, atol=1e-10, rtol=0)
    torch.testing.assert_close(h_all[a:b], h_one, atol=1e-10, rtol=0)


def test_fully_connected_edges_stay_within_molecules():
    ptr = torch.tensor([0, 3, 3, 7, 8])  # sizes 3, 0, 4, 1
    e = FullyConnectedEdges()(ptr)
    assert e.shape == (2, 3 * 2 + 4 * 3)
    mol = torch.bucketize(e, ptr[1:], right=True)
    assert torch.equal(mol[0], mol[1])
    assert not (e[0] == e[1]).any()
    assert len({tuple(x) for x in e.T.tolist()}) == e.shape[1]


def test_radial_basis_shape_and_peak():
    rbf = RadialBasis(num_basis=8, cutoff=7.0)
    out = rbf(torch.tensor([[0.0], [3.0]]))
    assert out.shape == (2, 8)
    assert out[1].argmax() == 1 + 2  # centres at 0, 1, 2, 3, ...: 3 Å peaks at the 4th centre
