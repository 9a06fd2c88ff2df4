"""Molecular diffusion: the state with parts, centre-of-mass handling, the parametrisation (oracle
denoiser), equivariance of the denoiser, sampling, losses, overfitting, device-safe randomness."""

import pytest
import torch
from torch import nn

from molediff.config import DiffusionConfig, ModelConfig
from molediff.data.molecules import MoleculeSet, ptr_from_counts
from molediff.diffusion import NoiseSchedule
from molediff.draws import sizes_from_histogram
from molediff.graph import MolGraph
from molediff.models import build_network
from molediff.molecular import MolecularDiffusion
from molediff.state import MolState, finite_molecules, remove_mean
from molediff.testing import assert_e3_equivariant

TINY = ModelConfig(hidden=16, layers=2, pair_hidden=8)
JOINT = DiffusionConfig(charges=True, bonds=True)


def _set(sizes, seed=0):
    """Random molecules with random bonds and charges, as a MoleculeSet."""
    g = torch.Generator().manual_seed(seed)
    ptr = ptr_from_counts(torch.tensor(sizes))
    n = int(ptr[-1])
    src, dst, order, counts = [], [], [], []
    for k in sizes:
        i = torch.arange(k - 1)
        src.append(i)
        dst.append(i + 1)
        order.append(torch.randint(1, 4, (k - 1,), generator=g))
        counts.append(k - 1)
    return MoleculeSet(torch.randn(n, 3, generator=g) * 1.5, torch.randint(0, 5, (n,), generator=g), ptr, [],
                       torch.randint(-1, 2, (n,), generator=g), torch.stack([torch.cat(src), torch.cat(dst)]),
                       torch.cat(order), ptr_from_counts(torch.tensor(counts)), torch.ones(len(sizes), dtype=torch.bool))


def _com(pos, batch, n):
    return torch.zeros(n, 3, dtype=pos.dtype).index_add_(0, batch, pos) / torch.bincount(batch, minlength=n)[:, None]


def test_remove_mean_centres_each_molecule():
    data = _set([3, 7, 5])
    batch = data.collate([0, 1, 2]).batch
    centred = remove_mean(data.pos + torch.tensor([5.0, -2.0, 1.0]), batch, 3)
    assert _com(centred, batch, 3).abs().max() < 1e-5
    torch.testing.assert_close(centred[4] - centred[5], data.pos[4] - data.pos[5])


def test_encode_decode_round_trip_and_layout():
    data = _set([4, 6])
    b = data.collate([0, 1])
    d = MolecularDiffusion(JOINT)
    x0 = d.encode(b)
    assert x0.node.shape == (10, 3 + 5 + 3) and x0.pair.shape == (6 + 15, 4)
    mols = d.decode(x0)
    assert torch.equal(mols.atom_type, b.atom_type) and torch.equal(mols.charge, b.charge)
    assert torch.equal(mols.bond_order, b.bond_type)
    torch.testing.assert_close(mols.pos, remove_mean(b.pos, b.batch, 2))
    assert [p.name for p in d.parts] == ["pos", "atom", "charge", "bond"]
    # atoms-only layout: [pos | one-hot], no pair columns
    plain = MolecularDiffusion(DiffusionConfig())
    assert plain.encode(b).node.shape == (10, 8) and plain.encode(b).pair.shape == (21, 0)


def test_noise_stays_in_the_subspace_and_noising_stays_centred():
    data = _set([4, 9, 6])
    b = data.collate([0, 1, 2])
    d = MolecularDiffusion(JOINT)
    x0 = d.encode(b)
    g = torch.Generator().manual_seed(0)
    noise = x0.noise_like(g)
    assert _com(noise.node[:, :3], b.batch, 3).abs().max() < 1e-5
    assert noise.node[:, 3:].abs().mean() > 0.5 and noise.pair.shape == x0.pair.shape
    for t in (0, 10, 500, 999):
        x_t = d.add_noise(x0, noise, torch.full((3,), t))
        assert _com(x_t.node[:, :3], b.batch, 3).abs().max() < 1e-5
    # per-molecule timesteps reach each molecule's atoms and pairs
    x_t = d.add_noise(x0, noise, torch.tensor([0, 999, 0]))
    a, sig = d.schedule.sqrt_alphas_cumprod, d.schedule.sqrt_one_minus_alphas_cumprod
    torch.testing.assert_close(x_t.pair[:6], a[0] * x0.pair[:6] + sig[0] * noise.pair[:6])
    torch.testing.assert_close(x_t.pair[6:42], a[999] * x0.pair[6:42] + sig[999] * noise.pair[6:42])


class Oracle(nn.Module):
    """A fake denoiser that returns the true clean state (positions, and one-hot × scale or, for
    cross-entropy parts, large logits of the true class)."""

    def __init__(self, diffusion, x0):
        super().__init__()
        self.d, self.x0 = diffusion, x0
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, h, pos, graph, pair=None):
        out = []
        for p in self.d.parts[1:]:
            if p.level != "atom":
                continue
            v = self.x0.part(p.name)
            out.append(v * 1e3 if p.loss == "ce" else v)
        pair_out = self.x0.part("bond") * 1e3 if self.d.pair_width else None
        return self.x0.node[:, :3] + 0 * pos, torch.cat(out, dim=1), pair_out


@pytest.mark.parametrize("cfg", [DiffusionConfig(), JOINT], ids=["atoms", "joint"])
def test_oracle_denoiser_gives_the_true_eps_and_ddim_lands_on_the_clean_state(cfg):
    d = MolecularDiffusion(cfg)
    b = _set([5, 7]).collate([0, 1])
    x0 = d.encode(b)
    oracle = Oracle(d, x0)
    g = torch.Generator().manual_seed(1)
    noise = x0.noise_like(g)
    t = torch.tensor([300, 700])
    x_t = d.add_noise(x0, noise, t)
    out, _ = d.predict(oracle, x_t, t)
    eps = d.schedule.to_eps(out.node, x_t.node, t[x_t.graph.batch])
    torch.testing.assert_close(eps, noise.node, atol=1e-3, rtol=0)
    losses = d.training_losses(oracle, x0, t, noise)
    assert float(losses["mse"]) < 1e-5 and all(float(v) < 1e-3 for v in losses.values())
    # DDIM, η = 0, from pure noise: every step's x̂0 is the truth, so it lands on the clean state
    mols = d.sample(oracle, [5, 7], num_steps=10, generator=g, eta=0.0)
    torch.testing.assert_close(mols.pos, x0.node[:, :3], atol=1e-4, rtol=0)
    assert torch.equal(mols.atom_type, b.atom_type)
    if cfg.bonds:
        assert torch.equal(mols.bond_order, b.bond_type) and torch.equal(mols.charge, b.charge)


@pytest.mark.parametrize("steps", [None, 20])
def test_reverse_process_stays_centred_and_hook_replaces(steps):
    torch.manual_seed(0)
    d = MolecularDiffusion(DiffusionConfig(timesteps=50, charges=True, bonds=True))
    net = build_network(TINY, d)
    worst, hooked = [], []

    def replace(i, t, x):
        hooked.append(t)
        x.node[0, 3:] = 0.0  # the hook may overwrite part of the state
        return x

    def cb(i, t, x):
        worst.append(float(_com(x.node[:, :3], x.graph.batch, 2).abs().max()))
        assert float(x.node[0, 3:].abs().max()) == 0.0

    mols = d.sample(net, [5, 8], num_steps=steps, generator=torch.Generator().manual_seed(0), callback=cb, replace=replace)
    assert len(worst) == (steps or 50) and hooked[-1] == -1
    assert max(worst) < 1e-4
    assert mols.pos.shape == (13, 3) and mols.ptr.tolist() == [0, 5, 13] and mols.bond_order.shape == (10 + 28,)


@pytest.mark.parametrize("cfg", [DiffusionConfig(parametrization="eps"), DiffusionConfig(), JOINT], ids=["eps", "x0", "joint"])
@pytest.mark.parametrize("t", [0, 300, 999])
def test_denoiser_is_e3_equivariant(cfg, t):
    torch.manual_seed(0)
    d = MolecularDiffusion(cfg)
    net = build_network(TINY, d).double()
    b = _set([6, 4]).collate([0, 1])
    x = d.encode(b)
    node_h = torch.randn(10, x.node.shape[1] - 3, dtype=torch.float64)
    pair = torch.randn(x.pair.shape, dtype=torch.float64)
    tt = torch.full((2,), t)

    def fn(p):
        state = MolState(torch.cat([remove_mean(p, x.graph.batch, 2), node_h], dim=1), pair, x.graph, x.parts)
        out, _ = d.predict(net, state, tt)
        return out.node[:, :3], torch.cat([out.node[:, 3:].flatten(), out.pair.flatten()])[:, None]

    assert_e3_equivariant(fn, b.pos, atol=1e-6)


@pytest.mark.parametrize("cfg", [DiffusionConfig(parametrization="eps"), DiffusionConfig(), JOINT,
                                 DiffusionConfig(charges=True, bonds=True, self_condition=True)],
                         ids=["eps", "x0", "joint", "joint+sc"])
def test_tiny_model_overfits_a_handful_of_molecules(cfg):
    """Fixed molecules, timesteps and noise: the loss must fall by a large factor within seconds."""
    torch.manual_seed(0)
    d = MolecularDiffusion(cfg)
    net = build_network(ModelConfig(hidden=32, layers=2, pair_hidden=16), d)
    x0 = d.encode(_set([5, 7, 6, 4], seed=1).collate([0, 1, 2, 3]))
    t = torch.tensor([50, 200, 400, 700])
    noise = x0.noise_like(torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = d.training_losses(net, x0, t, noise)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_state_arithmetic_and_slicing():
    d = MolecularDiffusion(JOINT)
    x = d.encode(_set([3, 5, 4]).collate([0, 1, 2]))
    y = (2.0 * x - x / 2 + x) * torch.tensor(2.0)
    torch.testing.assert_close(y.node, 5.0 * x.node)
    torch.testing.assert_close(y.pair, 5.0 * x.pair)
    s = x.slice(1, 3)
    assert s.num_graphs == 2 and s.node.shape[0] == 9 and s.pair.shape[0] == 10 + 6
    torch.testing.assert_close(s.node, x.node[3:])


def test_finite_molecules_and_size_draws():
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0], [0.01, 0, 0], [float("nan"), 0, 0], [1, 1, 1]])
    ok = finite_molecules(pos, torch.tensor([0, 2, 4, 6]))
    assert ok.tolist() == [True, False, False]
    hist = torch.tensor([0, 0, 0, 5, 0, 5])
    sizes = sizes_from_histogram(hist, 200, generator=torch.Generator().manual_seed(0))
    assert set(sizes.tolist()) == {3, 5}


def test_noise_is_drawn_on_the_generators_device(monkeypatch):
    """A CPU generator with tensors elsewhere: CUDA refuses ``torch.randn(..., generator=cpu, device=cuda)``.
    Emulated without a GPU: a strict randn that refuses a device other than the generator's, with
    tensors on the 'meta' device. Every draw of the core (training timesteps, q_sample, the samplers'
    fresh noise for ancestral and DDIM steps with η > 0) must go through the device-safe helper."""
    real_randn, real_randint = torch.randn, torch.randint

    def strict(real):
        def draw(*args, generator=None, device=None, **kw):
            if generator is not None and device is not None and torch.device(device) != generator.device:
                raise RuntimeError(f"generator on {generator.device}, tensor requested on {device}")
            return real(*args, generator=generator, device=device, **kw)
        return draw

    monkeypatch.setattr(torch, "randn", strict(real_randn))
    monkeypatch.setattr(torch, "randint", strict(real_randint))
    s = NoiseSchedule.polynomial(50)
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 6, device="meta")
    assert s.sample_timesteps(3, generator=g, device="meta").device.type == "meta"
    assert s.q_sample(x, 10, generator=g)[0].device.type == "meta"
    from molediff.diffusion.noise import noise_like

    z = noise_like(x, g)
    assert z.device.type == "meta"
    assert s.step(x, 10, x, noise=z).device.type == "meta"
    assert s.ddim_step(x, 10, 5, x, eta=1.0, noise=z).device.type == "meta"
    # and a molecular state's own noise
    graph = MolGraph.from_ptr(torch.tensor([0, 2]))
    state = MolState(torch.zeros(2, 8), torch.zeros(1, 0), graph, MolecularDiffusion(DiffusionConfig()).parts)
    assert state.noise_like(g).node.shape == (2, 8)
