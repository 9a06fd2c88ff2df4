"""Fragment-conditioned models: random training fragments, the state's fixed rows (clean at every
level, no noise, their centroid the origin), the network's flag input, the loss over free rows only,
and equivariance with a fragment."""

import pytest
import torch

from molediff.config import DiffusionConfig, ModelConfig
from molediff.draws import random_fragments
from molediff.graph import MolGraph
from molediff.models import build_network
from molediff.molecular import MolecularDiffusion, _per_molecule_mean
from molediff.state import MolState
from molediff.testing import assert_e3_equivariant
from tests.test_molecular import _set

TINY = ModelConfig(hidden=16, layers=2, pair_hidden=8)
FRAG = DiffusionConfig(charges=True, bonds=True, self_condition=True, fragments=0.5)


def _batch_with_fragments(sizes=(6, 5, 7, 4), seed=0):
    b = _set(list(sizes), seed=seed).collate(list(range(len(sizes))))
    fixed = torch.zeros(len(b.pos), dtype=torch.bool)
    for i, k in enumerate([3, 0, 2, 1]):  # molecule 1 has no fragment
        fixed[int(b.ptr[i]) : int(b.ptr[i]) + k] = True
    return b, fixed


def _connected(fixed_local: list[int], bonds: set[tuple[int, int]]) -> bool:
    if not fixed_local:
        return True
    seen, todo = {fixed_local[0]}, [fixed_local[0]]
    while todo:
        a = todo.pop()
        for x, y in bonds:
            for u, v in ((x, y), (y, x)):
                if u == a and v in fixed_local and v not in seen:
                    seen.add(v)
                    todo.append(v)
    return seen == set(fixed_local)


def test_random_fragments_are_connected_pieces_of_size_1_to_n_minus_1():
    data = _set([9] * 200, seed=1)  # chains 0-1-2-...-8
    b = data.collate(list(range(200)))
    fixed = random_fragments(b, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(fixed, random_fragments(b, 0.5, torch.Generator().manual_seed(0)))  # the generator decides
    counts = [int(fixed[int(b.ptr[i]) : int(b.ptr[i + 1])].sum()) for i in range(200)]
    with_fragment = [c for c in counts if c]
    assert 70 < len(with_fragment) < 130 and min(with_fragment) >= 1 and max(with_fragment) <= 8
    assert len(set(with_fragment)) > 5  # sizes spread over 1 .. n − 1
    chain = {(i, i + 1) for i in range(8)}
    pieces = [[a for a in range(9) if fixed[9 * i + a]] for i in range(200) if counts[i]]
    connected = sum(_connected(p, chain) for p in pieces)
    assert connected >= 0.7 * len(pieces)  # one seed in three cases of four; two seeds may give two pieces
    assert not random_fragments(b, 0.0).any()
    everything = random_fragments(b, 1.0)
    assert all(1 <= int(everything[9 * i : 9 * i + 9].sum()) <= 8 for i in range(200))


def test_fixed_rows_stay_clean_and_get_no_noise():
    d = MolecularDiffusion(FRAG)
    b, fixed = _batch_with_fragments()
    x0 = d.encode(b, fixed)
    g = x0.graph
    # the origin is the fragment's centroid where there is one, else the centre of mass
    for i, k in enumerate([3, 0, 2, 1]):
        rows = slice(int(b.ptr[i]), int(b.ptr[i + 1]))
        centre = x0.node[rows][:k, :3].mean(0) if k else x0.node[rows][:, :3].mean(0)
        assert centre.abs().max() < 1e-5
    noise = x0.noise_like(torch.Generator().manual_seed(0))
    assert not noise.node[fixed].any() and not noise.pair[g.fixed_pairs].any()
    free_mean = noise.node[b.batch == 0][3:, :3].mean(0)
    assert free_mean.abs().max() > 1e-4  # free atoms' noise is not projected: the fragment fixes the frame
    assert noise.node[b.batch == 1][:, :3].mean(0).abs().max() < 1e-5  # no fragment: zero centre of mass
    for t in (0, 500, 999):
        x_t = d.add_noise(x0, noise, torch.full((4,), t))
        assert torch.equal(x_t.node[fixed], x0.node[fixed]) and torch.equal(x_t.pair[g.fixed_pairs], x0.pair[g.fixed_pairs])


def test_network_reads_the_flag_and_its_estimate_keeps_the_fragment():
    torch.manual_seed(0)
    d = MolecularDiffusion(FRAG)
    assert d.input_labels()[-1] == "fixed"
    assert d.network_widths()["in_features"] == MolecularDiffusion(DiffusionConfig(charges=True, bonds=True, self_condition=True)
                                                                   ).network_widths()["in_features"] + 1
    net = build_network(TINY, d)
    b, fixed = _batch_with_fragments()
    x0 = d.encode(b, fixed)
    t = torch.full((4,), 700)
    x_t = d.add_noise(x0, x0.noise_like(torch.Generator().manual_seed(1)), t)
    out, _ = d.predict(net, x_t, t)
    assert torch.equal(out.node[fixed], x0.node[fixed]) and torch.equal(out.pair[x0.graph.fixed_pairs], x0.pair[x0.graph.fixed_pairs])
    # the flag reaches the network: the same state without it predicts something else
    plain = MolState(x_t.node, x_t.pair, MolGraph.from_ptr(b.ptr), x_t.parts)
    out_plain, _ = d.predict(net, plain, t)
    free = ~fixed
    assert not torch.allclose(out.node[free, 3:], out_plain.node[free, 3:])


def test_loss_scores_free_rows_only():
    torch.manual_seed(0)
    d = MolecularDiffusion(DiffusionConfig(charges=True, bonds=True, fragments=0.5))
    net = build_network(TINY, d)
    b, fixed = _batch_with_fragments()
    x0 = d.encode(b, fixed)
    g = x0.graph
    t = torch.tensor([100, 400, 700, 900])
    noise = x0.noise_like(torch.Generator().manual_seed(2))
    losses = d.training_losses(net, x0, t, noise)
    x_t = d.add_noise(x0, noise, t)
    out, logits = d.predict(net, x_t, t)
    eps = d.schedule.to_eps(out.node, x_t.node, t[g.batch])
    cols = list(range(0, 3)) + list(range(3, 8))  # positions and atom types (ε-MSE parts)
    per_atom = ((eps[:, cols] - noise.node[:, cols]) ** 2).mean(1)
    free = ~fixed
    torch.testing.assert_close(losses["mse"], _per_molecule_mean(per_atom[free], g.batch[free], 4))
    bond_ce = torch.nn.functional.cross_entropy(logits["bond"], x0.part("bond").argmax(1), reduction="none")
    fp = ~g.fixed_pairs
    torch.testing.assert_close(losses["bond"], _per_molecule_mean(bond_ce[fp], g.pair_batch[fp], 4))
    # and the masked rows matter: without the fragment the same molecules score differently
    assert not torch.allclose(losses["mse"], d.training_losses(net, d.encode(b), t, d.encode(b).noise_like(
        torch.Generator().manual_seed(2)))["mse"])


@pytest.mark.parametrize("t", [0, 500, 999])
def test_denoiser_with_a_fragment_is_e3_equivariant(t):
    torch.manual_seed(0)
    d = MolecularDiffusion(FRAG)
    net = build_network(TINY, d).double()
    b, fixed = _batch_with_fragments()
    x = d.encode(b, fixed)
    node_h = torch.randn(len(b.pos), x.node.shape[1] - 3, dtype=torch.float64)
    pair = torch.randn(x.pair.shape, dtype=torch.float64)
    tt = torch.full((4,), t)

    def fn(p):
        from molediff.state import centre

        state = MolState(torch.cat([centre(p, x.graph), node_h], dim=1), pair, x.graph, x.parts)
        out, _ = d.predict(net, state, tt)
        return out.node[:, :3], torch.cat([out.node[:, 3:].flatten(), out.pair.flatten()])[:, None]

    assert_e3_equivariant(fn, b.pos, atol=1e-6)


def test_sampling_shows_the_network_a_clean_fragment_every_time():
    """With a fragment-conditioned model the fixed rows the network reads are the fragment itself at
    every call, RePaint rounds included, and the output keeps them."""
    torch.manual_seed(0)
    d = MolecularDiffusion(FRAG)
    inner = build_network(TINY, d)
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kw):
            seen.append(args[1].clone())
            return self.inner(*args, **kw)

    b, fixed = _batch_with_fragments()
    known = d.encode(b, fixed)
    mols = d.sample(Spy(), b.ptr[1:] - b.ptr[:-1], num_steps=5, generator=torch.Generator().manual_seed(0),
                    known=known, resample=3)  # the start is drawn on known's graph
    assert len(seen) > 5 * 2  # resampling rounds and self-conditioning passes
    for pos in seen:
        assert torch.equal(pos[fixed], known.node[fixed, :3])
    assert torch.equal(mols.atom_type[fixed], b.atom_type[fixed])

    # a fragment needs a fragment-conditioned model and one graph for the start and the fragment
    plain = MolecularDiffusion(DiffusionConfig(charges=True, bonds=True, self_condition=True))
    with pytest.raises(ValueError, match="fragment-conditioned"):
        plain.sample(inner, b.ptr[1:] - b.ptr[:-1], num_steps=2, known=known)
    with pytest.raises(ValueError, match="fixed mask"):
        d.sample(inner, b.ptr[1:] - b.ptr[:-1], num_steps=2, known=known, x_T=d.prior(MolGraph.from_ptr(b.ptr)))


def test_fragment_with_conditions_is_refused_before_other_advice(tmp_path):
    """Asking for a fragment and property targets at once gets the one message that applies, whatever the model."""
    from molediff import sampling
    from molediff.checkpoint import save_model_file
    from molediff.config import TrainConfig
    from molediff.errors import UserError

    config = TrainConfig(model=TINY)
    config.diffusion = FRAG
    path = tmp_path / "m.pt"
    save_model_file(path, build_network(TINY, MolecularDiffusion(FRAG)).state_dict(), config, {"step": 0, "size_histogram": [0, 1, 1]})
    gen = sampling.load_pretrained(path)
    with pytest.raises(UserError, match="under property conditions"):
        gen.check_conditions({"gap": 0.25}, 1.0, fragment=object())
