"""Molecular diffusion: centre-of-mass handling, equivariance of the denoiser, sampling, overfitting."""

import pytest
import torch

from molediff.config import DiffusionConfig, ModelConfig
from molediff.molecular import NUM_TYPES, MolecularDiffusion, finite_molecules, remove_mean, sizes_from_histogram
from tests.equivariance import assert_e3_equivariant

TINY = ModelConfig(hidden=16, layers=2)


def _mols(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    ptr = torch.tensor([0] + torch.cumsum(torch.tensor(sizes), 0).tolist())
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    pos = torch.randn(int(ptr[-1]), 3, generator=g) * 1.5
    types = torch.randint(0, 5, (int(ptr[-1]),), generator=g)
    return pos, types, batch, ptr


def _com(pos, batch, n):
    return torch.zeros(n, 3, dtype=pos.dtype).index_add_(0, batch, pos) / torch.bincount(batch, minlength=n)[:, None]


def test_remove_mean_centres_each_molecule():
    pos, _, batch, ptr = _mols([3, 7, 5])
    centred = remove_mean(pos + torch.tensor([5.0, -2.0, 1.0]), batch, 3)
    assert _com(centred, batch, 3).abs().max() < 1e-5
    # within a molecule, relative geometry is untouched
    torch.testing.assert_close(centred[4] - centred[5], pos[4] - pos[5])


def test_forward_noising_stays_centred():
    m = MolecularDiffusion(TINY, DiffusionConfig())
    pos, types, batch, ptr = _mols([4, 9, 6])
    x0 = m.encode(pos + 3.0, types, batch, 3)
    for t in (0, 10, 500, 999):
        noise = m.project_noise(torch.randn_like(x0), batch, 3)
        x_t = m.schedule.add_noise(x0, noise, torch.full((len(x0),), t))
        assert _com(x_t[:, :3], batch, 3).abs().max() < 1e-5
    # feature noise is not projected
    raw = torch.randn_like(x0)
    torch.testing.assert_close(m.project_noise(raw, batch, 3)[:, 3:], raw[:, 3:])


@pytest.mark.parametrize("steps", [None, 20])
def test_reverse_process_stays_centred(steps):
    torch.manual_seed(0)
    m = MolecularDiffusion(TINY, DiffusionConfig(timesteps=50))
    sizes = [5, 8]
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor(sizes))
    worst = []
    pos, types, ptr = m.sample(sizes, num_steps=steps, generator=torch.Generator().manual_seed(0),
                               callback=lambda i, t, x: worst.append(float(_com(x[:, :3], batch, 2).abs().max())))
    assert len(worst) == (steps or 50)
    assert max(worst) < 1e-4
    assert pos.shape == (13, 3) and types.shape == (13,) and ptr.tolist() == [0, 5, 13]
    assert types.min() >= 0 and types.max() < 5


@pytest.mark.parametrize("parametrization", ["eps", "x0", "precond"])
@pytest.mark.parametrize("t", [0, 300, 999])
def test_denoiser_is_e3_equivariant(parametrization, t):
    torch.manual_seed(0)
    m = MolecularDiffusion(ModelConfig(hidden=16, layers=2, distance_features="rbf"), DiffusionConfig(parametrization=parametrization)).double()
    pos, types, batch, ptr = _mols([6, 4])
    h = torch.randn(10, 5, dtype=torch.float64)
    t_atom = torch.full((10,), t)

    def fn(p):
        x = torch.cat([remove_mean(p, batch, 2), h], dim=1)
        eps = m.predict_eps(x, t_atom, batch, ptr)
        return eps[:, :3], eps[:, 3:]

    # x0-type outputs divide by σ_t, which is ~3e-3 at t = 0: scale the tolerance accordingly
    assert_e3_equivariant(fn, pos, atol=1e-6)


def test_weights_and_time_distributions():
    uni = MolecularDiffusion(TINY, DiffusionConfig())
    t = torch.tensor([0, 500, 999])
    assert torch.equal(uni.loss_weight(t), torch.ones(3, 1))
    msnr = MolecularDiffusion(TINY, DiffusionConfig(loss_weighting="min_snr", min_snr_gamma=5.0))
    w = msnr.loss_weight(t).squeeze(1)
    assert w[0] < 1e-3 and w[2] == 1.0  # low noise (huge SNR) is down-weighted
    ln = MolecularDiffusion(TINY, DiffusionConfig(time_sampling="lognormal", logsnr_mean=4.0, logsnr_std=1.0))
    p = ln._t_probs
    assert abs(float(p.sum()) - 1) < 1e-5
    peak = int(p.argmax())
    assert abs(float(ln.schedule.log_snr[peak]) - 4.0) < 0.5
    draws = ln.sample_t(4000, generator=torch.Generator().manual_seed(0))
    assert abs(float(ln.schedule.log_snr[draws].mean()) - 4.0) < 0.3
    # a mixture keeps a uniform floor under every timestep and its log-normal part where asked
    mix = MolecularDiffusion(TINY, DiffusionConfig(time_sampling="lognormal", logsnr_mean=4.0, logsnr_std=1.0, lognormal_mix=0.5))
    q = mix._t_probs
    assert abs(float(q.sum()) - 1) < 1e-5 and float(q.min()) >= 0.5 / 1000 * (1 - 1e-4)
    torch.testing.assert_close(q, 0.5 * p + 0.5 / 1000)
    with pytest.raises(ValueError):
        MolecularDiffusion(TINY, DiffusionConfig(parametrization="v"))
    with pytest.raises(ValueError, match="lognormal_mix"):
        MolecularDiffusion(TINY, DiffusionConfig(time_sampling="lognormal", lognormal_mix=1.5))


@pytest.mark.parametrize("parametrization", ["eps", "x0", "precond"])
def test_tiny_model_overfits_a_handful_of_molecules(parametrization):
    """Fixed molecules, timesteps and noise: the loss must fall by a large factor within seconds."""
    torch.manual_seed(0)
    m = MolecularDiffusion(ModelConfig(hidden=32, layers=2), DiffusionConfig(parametrization=parametrization))
    pos, types, batch, ptr = _mols([5, 7, 6, 4], seed=1)
    t = torch.tensor([50, 200, 400, 700])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = m.training_loss(pos, types, batch, ptr, generator=torch.Generator().manual_seed(0), t=t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_finite_molecules_and_size_draws():
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0], [0.01, 0, 0], [float("nan"), 0, 0], [1, 1, 1]])
    ok = finite_molecules(pos, torch.tensor([0, 2, 4, 6]))
    assert ok.tolist() == [True, False, False]
    hist = torch.tensor([0, 0, 0, 5, 0, 5])
    sizes = sizes_from_histogram(hist, 200, generator=torch.Generator().manual_seed(0))
    assert set(sizes.tolist()) == {3, 5}


def test_unweighted_loss_is_plain_eps_mse():
    """weighted=False drops the recipe's weighting; with uniform weighting both agree exactly."""
    pos, types, batch, ptr = _mols([5, 7, 6, 4], seed=2)
    t = torch.tensor([3, 200, 600, 990])
    losses = {}
    for w in ("uniform", "min_snr"):
        torch.manual_seed(0)
        m = MolecularDiffusion(ModelConfig(hidden=16, layers=1), DiffusionConfig(loss_weighting=w))
        kw = dict(generator=None, t=t, noise=torch.randn(pos.shape[0], 3 + NUM_TYPES, generator=torch.Generator().manual_seed(5)))
        with torch.no_grad():
            losses[w] = (float(m.training_loss(pos, types, batch, ptr, **kw)),
                         float(m.training_loss(pos, types, batch, ptr, weighted=False, **kw)))
    assert losses["uniform"][0] == pytest.approx(losses["uniform"][1])
    assert losses["min_snr"][1] == pytest.approx(losses["uniform"][1])  # same weights init, same plain loss
    assert losses["min_snr"][0] < losses["min_snr"][1]  # min-SNR weights ≤ 1, < 1 at t = 3
