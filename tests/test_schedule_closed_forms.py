"""The DDPM core against closed forms computed independently (float64, by hand, or by Monte Carlo)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from molediff.diffusion.losses import epsilon_loss
from molediff.diffusion.schedule import NoiseSchedule

T = 1000


@pytest.fixture(scope="module", params=["linear", "cosine", "polynomial"])
def schedule(request) -> NoiseSchedule:
    return NoiseSchedule.from_name(request.param, T)


def _alpha_bar64(schedule: NoiseSchedule) -> np.ndarray:
    """ᾱ recomputed in float64 from the stored betas, independently of the schedule's own tables."""
    return np.cumprod(1.0 - schedule.betas.double().numpy())


# ------------------------------------------------------------------------------ forward process
@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_q_sample_moments_monte_carlo(schedule, t):
    """Empirical mean/variance of x_t ~ q(x_t | x0) over many draws vs q_mean_variance.

    With N draws the sample mean has standard error √(v/N) and the sample variance √(2/(N−1))·v;
    5 standard errors keeps the false-alarm rate negligible while still catching wrong coefficients.
    """
    N = 200_000
    x0 = torch.tensor([-1.5, 0.0, 0.7, 2.0])
    g = torch.Generator().manual_seed(10 + t)
    x_t, _ = schedule.q_sample(x0.expand(N, 4).contiguous(), t, generator=g)
    mean, var = schedule.q_mean_variance(x0[None], t)
    emp_mean, emp_var = x_t.double().mean(0), x_t.double().var(0)
    v = var.double().reshape(-1)
    assert torch.all((emp_mean - mean.double()[0]).abs() <= 5 * torch.sqrt(v / N) + 1e-7)
    assert torch.all((emp_var - v).abs() <= 5 * math.sqrt(2 / (N - 1)) * v + 1e-9)
    # and the closed form itself, from float64 ᾱ
    ab = _alpha_bar64(schedule)[t]
    np.testing.assert_allclose(mean.double()[0].numpy(), math.sqrt(ab) * x0.double().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(v.numpy(), 1 - ab, rtol=1e-5, atol=1e-7)


def test_q_sample_per_row_timesteps(schedule):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 5, 2, generator=g)
    t = torch.tensor([0, 400, 999])
    x_t, noise = schedule.q_sample(x0, t, generator=g)
    torch.testing.assert_close(x_t, schedule.add_noise(x0, noise, t))
    for i in range(3):  # per-row t is the same as an int t on that row
        torch.testing.assert_close(x_t[i : i + 1], schedule.add_noise(x0[i : i + 1], noise[i : i + 1], int(t[i])))
    given = torch.ones_like(x0)
    assert schedule.q_sample(x0, t, noise=given)[1] is given  # given noise is used as it is


# ------------------------------------------------------------------------------ posterior
@pytest.mark.parametrize("t", [1, 2, 50, 500, 999])
def test_q_posterior_is_the_gaussian_bayes_posterior(schedule, t):
    """Posterior of x_{t−1} given x_t and x0 by completing the square, all in float64:

    prior x_{t−1} | x0 ~ N(m0, v0) with m0 = √ᾱ_{t−1} x0, v0 = 1 − ᾱ_{t−1};
    likelihood x_t | x_{t−1} ~ N(√α_t x_{t−1}, β_t).
    Precision 1/v = 1/v0 + α_t/β_t; mean = v (m0/v0 + √α_t x_t/β_t).
    """
    beta = schedule.betas.double().numpy()
    ab = _alpha_bar64(schedule)
    a_t, b_t, ab_prev = 1 - beta[t], beta[t], ab[t - 1]
    m0_coef, v0 = math.sqrt(ab_prev), 1 - ab_prev
    g = torch.Generator().manual_seed(t)
    x0 = torch.randn(16, generator=g, dtype=torch.float64)
    x_t = torch.randn(16, generator=g, dtype=torch.float64)
    post_var = 1.0 / (1.0 / v0 + a_t / b_t)
    post_mean = post_var * (m0_coef * x0.numpy() / v0 + math.sqrt(a_t) * x_t.numpy() / b_t)

    mean, var = schedule.q_posterior(x0.float(), x_t.float(), t)
    np.testing.assert_allclose(var.double().numpy(), post_var, rtol=1e-4)
    np.testing.assert_allclose(mean.double().numpy(), post_mean, rtol=1e-4, atol=1e-5)
    # β̃_t formula of the docstring, too
    np.testing.assert_allclose(float(schedule.posterior_variance[t]), b_t * (1 - ab_prev) / (1 - ab[t]), rtol=1e-4)


def test_q_posterior_at_t0_returns_x0(schedule):
    """ᾱ_{−1} = 1: x_{−1} is x0 itself, with zero variance."""
    g = torch.Generator().manual_seed(0)
    x0, x_t = torch.randn(10, generator=g), torch.randn(10, generator=g)
    mean, var = schedule.q_posterior(x0, x_t, 0)
    torch.testing.assert_close(mean, x0, rtol=1e-4, atol=1e-5)
    assert float(var) == 0.0


# ------------------------------------------------------------------------------ parametrisations
@pytest.mark.parametrize("t", [0, 1, 200, 700, 999])
def test_predict_x0_from_eps_inverts_add_noise(schedule, t):
    g = torch.Generator().manual_seed(t)
    x0, eps = torch.randn(32, 3, generator=g), torch.randn(32, 3, generator=g)
    x_t = schedule.add_noise(x0, eps, t)
    # at large t x0 is recovered from a tiny √ᾱ_t: the error grows like ulp(x_t)/√ᾱ_t
    ab = float(schedule.alphas_cumprod[t])
    atol = 1e-5 + 4e-7 / math.sqrt(ab)
    torch.testing.assert_close(schedule.predict_x0_from_eps(x_t, t, eps), x0, rtol=1e-4, atol=atol)
    if t > 0:  # at t = 0 the noise is scaled by √(1−ᾱ_0) ≈ 0.01: too small to recover eps to 1e-4
        torch.testing.assert_close(schedule.predict_eps_from_x0(x_t, t, x0), eps, rtol=1e-4, atol=1e-3)
    # per-row timesteps
    tt = torch.full((32,), t)
    torch.testing.assert_close(schedule.predict_x0_from_eps(x_t, tt, eps), x0, rtol=1e-4, atol=atol)


def test_predict_eps_from_x0_inverts_predict_x0_from_eps(schedule):
    g = torch.Generator().manual_seed(1)
    x_t, eps = torch.randn(64, generator=g), torch.randn(64, generator=g)
    t = torch.randint(1, T, (64,), generator=g)
    x0 = schedule.predict_x0_from_eps(x_t, t, eps)
    torch.testing.assert_close(schedule.predict_eps_from_x0(x_t, t, x0), eps, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------ polynomial schedule
def test_polynomial_schedule_shape():
    s = NoiseSchedule.polynomial(T)
    ac = s.alphas_cumprod.double()
    assert len(ac) == T
    assert torch.all(ac[1:] < ac[:-1]), "ᾱ must be strictly decreasing"
    assert float(ac.min()) >= 1e-5 * (1 - 1e-4) and float(ac.max()) < 1.0
    assert float(ac[-1]) == pytest.approx(1e-5, rel=1e-3)
    assert float(ac[0]) == pytest.approx(1.0, abs=1e-4)
    # ᾱ_t = s + (1−2s)(1 − ((t+1)/T)²)² away from the clipped tail (index t uses u = (t+1)/T)
    u = np.arange(1, T + 1) / T
    closed = 1e-5 + (1 - 2e-5) * (1 - u**2) ** 2
    np.testing.assert_allclose(ac.numpy()[: T - 50], closed[: T - 50], rtol=1e-4)
    assert torch.all((s.betas > 0) & (s.betas < 1))


# ------------------------------------------------------------------------------ reverse process
def test_step_at_t0_adds_no_noise(schedule):
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    a = schedule.step(eps, 0, x_t)  # no noise needed at t = 0
    c = schedule.step(eps, 0, x_t, noise=torch.full_like(x_t, 100.0), variance="fixed_large")
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs its noise"):
        schedule.step(eps, 1, x_t)
    # and the result is x̂0 = the sample predicted from eps
    torch.testing.assert_close(a, schedule.predict_x0_from_eps(x_t, 0, eps), rtol=1e-4, atol=1e-5)


def test_step_adds_noise_with_posterior_std(schedule):
    g = torch.Generator().manual_seed(0)
    x_t, eps, z = (torch.randn(5, 3, generator=g) for _ in range(3))
    t = 400
    diff_small = schedule.step(eps, t, x_t, noise=z) - schedule.step(eps, t, x_t, noise=torch.zeros_like(z))
    diff_large = schedule.step(eps, t, x_t, noise=z, variance="fixed_large") - schedule.step(
        eps, t, x_t, noise=torch.zeros_like(z), variance="fixed_large")
    torch.testing.assert_close(diff_small, schedule.posterior_variance[t].sqrt() * z, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(diff_large, schedule.betas[t].sqrt() * z, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("t", [1, 10, 300, 900, 999])
def test_reverse_mean_with_true_eps_is_posterior_mean_with_true_x0(schedule, t):
    """μ_θ(x_t, t) with ε_θ = the true ε equals μ̃_t(x_t, x0): the two parametrisations are consistent."""
    g = torch.Generator().manual_seed(t)
    x0, eps = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    x_t = schedule.add_noise(x0, eps, t)
    mean = schedule.step(eps, t, x_t, noise=torch.zeros_like(x_t))
    post_mean, _ = schedule.q_posterior(x0, x_t, t)
    # cosine/polynomial reach β ≈ 1 at the very end, where 1/√α_t amplifies float32 rounding
    atol = 1e-4 if float(schedule.betas[t]) < 0.5 else 2e-2
    torch.testing.assert_close(mean, post_mean, rtol=1e-3, atol=atol)


@pytest.mark.parametrize("bad", [0, -3, T + 1])
def test_set_timesteps_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="between 1 and"):
        NoiseSchedule.linear(T).set_timesteps(bad)


def test_step_rejects_unknown_variance():
    x_t = torch.randn(2, 3)
    with pytest.raises(ValueError, match="variance"):
        NoiseSchedule.linear(T).step(torch.zeros_like(x_t), 5, x_t, variance="learned")


def test_set_timesteps_rejects_unknown_spacing():
    with pytest.raises(ValueError, match="spacing"):
        NoiseSchedule.linear(T).set_timesteps(10, spacing="linspace")


@pytest.mark.parametrize("spacing", ["trailing", "logsnr"])
@pytest.mark.parametrize("n", [1, 7, 50, T])
def test_set_timesteps_grid(spacing, n):
    ts = NoiseSchedule.linear(T).set_timesteps(n, spacing=spacing)
    assert len(ts) == n and ts.dtype == torch.int64
    assert torch.all(ts[1:] < ts[:-1]) and int(ts.min()) >= 0 and int(ts.max()) <= T - 1
    assert int(ts[0]) == T - 1
    if n == T:
        assert ts.tolist() == list(range(T - 1, -1, -1))


@pytest.mark.parametrize("t", [1, 2, 250, 998])
def test_ddim_eta1_on_full_grid_is_the_ddpm_posterior(schedule, t):
    """With steps = T and η = 1, a stochastic DDIM step t → t−1 has variance β̃_t and, when ε is the true
    noise, mean μ̃_t(x_t, x0): DDIM(η=1) is DDPM with the fixed_small variance."""
    g = torch.Generator().manual_seed(t)
    x0, eps, z = (torch.randn(6, 3, generator=g) for _ in range(3))
    x_t = schedule.add_noise(x0, eps, t)
    with_noise = schedule.ddim_step(eps, t, t - 1, x_t, eta=1.0, noise=z)
    without = schedule.ddim_step(eps, t, t - 1, x_t, eta=1.0, noise=torch.zeros_like(z))
    sigma = ((with_noise - without) / z).double()
    torch.testing.assert_close(sigma, torch.full_like(sigma, float(schedule.posterior_variance[t].double().sqrt())),
                               rtol=1e-3, atol=1e-6)
    post_mean, _ = schedule.q_posterior(x0, x_t, t)
    atol = 1e-4 if float(schedule.betas[t]) < 0.5 else 2e-2
    torch.testing.assert_close(without, post_mean, rtol=1e-3, atol=atol)
    # and it equals the ancestral DDPM step with the same noise
    torch.testing.assert_close(with_noise, schedule.step(eps, t, x_t, noise=z), rtol=1e-3, atol=atol)


def test_ddim_eta0_is_deterministic_and_lands_on_x0_at_the_end():
    s = NoiseSchedule.linear(T)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    x_t = s.add_noise(x0, eps, 19)
    a = s.ddim_step(eps, 19, -1, x_t, eta=0.0)  # no noise drawn or needed
    b = s.ddim_step(eps, 19, -1, x_t, eta=1.0, noise=torch.full_like(x_t, 100.0))  # none added at the last step either
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, x0, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="needs its noise"):
        s.ddim_step(eps, 19, 9, x_t, eta=0.5)


# ------------------------------------------------------------------------------ loss
def test_epsilon_loss_is_the_mean_of_per_sample_mean_squares():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]],
                         [[0.0, 0.0], [1.0, 1.0], [2.0, -2.0]]])  # [2, 3, 2]
    target = torch.zeros_like(pred)
    # per-sample mean of squares: (1+4+9+16)/6 = 5, (0+0+1+1+4+4)/6 = 10/6
    assert float(epsilon_loss(pred, target)) == pytest.approx((5 + 10 / 6) / 2)
    p = pred.clone().requires_grad_(True)
    epsilon_loss(p, target).backward()
    torch.testing.assert_close(p.grad, 2 * pred / (2 * 6))


@pytest.mark.parametrize("num_steps", [None, 20])
def test_noise_scale_multiplies_exactly_the_injected_noise(num_steps):
    """With a constant ε̂ = 0 the reverse process is linear in (x_T, noise): scaling the noise by s moves
    the result from the noise-free one by exactly s times the full-noise displacement."""
    from molediff.diffusion import sample

    schedule = NoiseSchedule.from_name("cosine", 100)
    x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731

    def run(s):
        return sample(zero, x_T, schedule, num_steps=num_steps, eta=1.0, generator=torch.Generator().manual_seed(1), noise_scale=s)

    full, half, none = run(1.0), run(0.5), run(0.0)
    torch.testing.assert_close(half - none, 0.5 * (full - none), atol=1e-10, rtol=1e-8)
    assert (full - none).abs().max() > 1e-3  # noise was injected at all
    # without injected noise the result no longer depends on the generator
    other = sample(zero, x_T, schedule, num_steps=num_steps, eta=1.0, generator=torch.Generator().manual_seed(2), noise_scale=0.0)
    torch.testing.assert_close(other, none, atol=0, rtol=0)
    with pytest.raises(ValueError, match="noise_scale"):
        run(-1.0)
