"""Parity of the DDPM core with Hugging Face diffusers' reference schedulers.

diffusers builds its tables in float32 (``torch.linspace`` / ``torch.cumprod``) while our core builds
them in float64 and stores float32, so the comparisons use float32-level tolerances.
"""

from __future__ import annotations

import pytest
import torch

from molediff.diffusion.samplers import ddim_sample
from molediff.diffusion.schedule import NoiseSchedule

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402

T = 1000
RTOL, ATOL = 1e-5, 1e-6


def _ddpm(variance_type: str = "fixed_small", beta_schedule: str = "linear") -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=T, beta_schedule=beta_schedule, clip_sample=False, variance_type=variance_type
    )


@pytest.fixture(scope="module")
def ours() -> NoiseSchedule:
    return NoiseSchedule.linear(T)


def test_linear_betas_and_alphas_cumprod(ours):
    ref = _ddpm()
    torch.testing.assert_close(ours.betas, ref.betas, rtol=RTOL, atol=1e-8)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=RTOL, atol=1e-8)
    assert ours.betas.dtype == torch.float32


def test_cosine_betas_match_squaredcos_cap_v2():
    ours = NoiseSchedule.cosine(T)
    ref = _ddpm(beta_schedule="squaredcos_cap_v2")
    torch.testing.assert_close(ours.betas, ref.betas, rtol=RTOL, atol=1e-7)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=1e-4, atol=1e-7)
    assert float(ours.betas.max()) == pytest.approx(0.999)  # the cap is hit at the end


def test_add_noise_per_sample_timesteps(ours):
    ref = _ddpm()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, 5, 4, generator=g)
    noise = torch.randn(6, 3, 5, 4, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    expected = ref.add_noise(x0, noise, t)
    torch.testing.assert_close(ours.add_noise(x0, noise, t), expected, rtol=RTOL, atol=2e-6)
    # q_sample with explicit noise is the same thing
    x_t, n = ours.q_sample(x0, t, noise=noise)
    torch.testing.assert_close(x_t, expected, rtol=RTOL, atol=2e-6)
    assert n is noise or torch.equal(n, noise)
    # int timestep = same step for all rows
    torch.testing.assert_close(ours.add_noise(x0, noise, 321), ref.add_noise(x0, noise, torch.full((6,), 321)),
                               rtol=RTOL, atol=2e-6)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("t", [0, 1, 2, 10, 500, 998, 999])
def test_step_matches_diffusers(ours, variance_type, t):
    """Same eps, same x_t, same noise (the draw diffusers' randn_tensor makes from the same seeded generator).

    diffusers' "fixed_large" uses σ_t² = β_t (``current_beta_t``) for every t > 0 and adds no noise at
    t = 0, exactly our ``variance="fixed_large"`` (Ho et al.'s code uses β̃_1 in place of β_0, but
    only as the log-variance at t = 0, where no noise is drawn), so both variance types must agree.
    """
    ref = _ddpm(variance_type)
    g = torch.Generator().manual_seed(1234 + t)
    x_t = torch.randn(4, 2, 7, generator=g)
    eps = torch.randn(4, 2, 7, generator=g)
    expected = ref.step(eps, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7))
    # at t = 999, 1/√α_t and β_t/√(1−ᾱ_t) are computed in different orders: a few float32 ulps apart
    torch.testing.assert_close(ours.step(eps, t, x_t, noise=z, variance=variance_type), expected,
                               rtol=1e-4, atol=1e-5)


def test_step_variances_differ_for_t_positive(ours):
    """Guard against the parametrised test above passing vacuously: the two variance types do differ."""
    g = torch.Generator().manual_seed(0)
    x_t, eps, z = (torch.randn(2, 3, generator=g) for _ in range(3))
    small = ours.step(eps, 5, x_t, noise=z)
    large = ours.step(eps, 5, x_t, variance="fixed_large", noise=z)
    assert not torch.allclose(small, large)


def _toy_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed, deterministic stand-in for a trained network: eps = 0.1·x + sin(t)."""
    t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return 0.1 * x + torch.sin(t)


def test_ddim_eta0_full_loop_matches_diffusers(ours):
    steps, spacing = 50, "trailing"
    ref = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                        timestep_spacing=spacing)
    ref.set_timesteps(steps)
    ours_ts = NoiseSchedule.linear(T).set_timesteps(steps, spacing=spacing)
    assert ours_ts.tolist() == ref.timesteps.tolist()
    assert ours_ts[0] == 999

    x_T = torch.randn(8, 3, 4, generator=torch.Generator().manual_seed(3))
    x = x_T.clone()
    for t in ref.timesteps:
        x = ref.step(_toy_eps(x, t.expand(x.shape[0])), t, x, eta=0.0).prev_sample
    got = ddim_sample(_toy_eps, x_T.clone(), NoiseSchedule.linear(T), num_steps=steps, eta=0.0, spacing=spacing)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, x, rtol=1e-4, atol=1e-4)
    # the loop really moved the sample (the comparison is not between two copies of x_T)
    assert (got - x_T).abs().max() > 0.1


def test_ddim_single_step_eta_positive_matches_diffusers(ours):
    """Stochastic DDIM: same σ_t(η) and the same injected noise as diffusers."""
    ref = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                        timestep_spacing="trailing")
    ref.set_timesteps(50)
    g = torch.Generator().manual_seed(5)
    x_t, eps, z = (torch.randn(3, 6, generator=g) for _ in range(3))
    for t in (999, 499, 19):
        expected = ref.step(eps, t, x_t, eta=0.7, variance_noise=z).prev_sample
        got = ours.ddim_step(eps, t, t - 20 if t - 20 >= 0 else -1, x_t, eta=0.7, noise=z)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_trailing_spacing_with_uneven_stride_uses_the_real_next_timestep():
    """Where T / steps is not an integer diffusers' DDIM steps to ``t − T // steps`` (e.g. 966 → 933)
    while its own grid continues at 932; our sampler steps to the next grid point. Same grid, though."""
    ref = DDIMScheduler(num_train_timesteps=T, timestep_spacing="trailing")
    ref.set_timesteps(30)
    ours_ts = NoiseSchedule.linear(T).set_timesteps(30, spacing="trailing")
    assert ours_ts.tolist() == ref.timesteps.tolist()
    assert ours_ts[1] - ours_ts[2] == 34 and T // 30 == 33
