"""DPM-Solver++ multistep: parity with diffusers, an exact-score oracle, hooks, calls, generic states."""

from __future__ import annotations

import inspect
import math
import textwrap

import numpy as np
import pytest
import torch

from molediff.diffusion import SAMPLERS, NoiseSchedule, ddim_sample, ddpm_sample, dpm_solver_sample, sample

T = 1000
DPM = {"dpm++2m": (2, False), "dpm++2m-sde": (2, True), "dpm++3m": (3, False)}
SOLVERS = {**DPM, "3m-sde": (3, True)}  # order 3 + SDE: dpm_solver_sample only (not a named sampler)


def _solve(x_T, schedule, steps, name, **kw):
    order, stochastic = SOLVERS[name]
    return dpm_solver_sample(toy, x_T, schedule, steps, order=order, stochastic=stochastic, **kw)


def toy(x: torch.Tensor, t: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """A fixed, smooth, non-linear stand-in for a network (so that the multistep terms matter)."""
    t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return scale * (0.6 * torch.tanh(x) + 0.3 * torch.cos(t / 150.0))


def _x_T(shape=(6, 4), seed=0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------------ diffusers parity
diffusers = pytest.importorskip("diffusers")
from diffusers import DPMSolverMultistepScheduler  # noqa: E402


def _float64_scheduler_class():
    """diffusers' scheduler whose ``step`` does not cast the sample and the noise to float32 (its only
    two float32 casts, removed from its own source), so a float64 comparison measures the algorithm."""
    import diffusers.schedulers.scheduling_dpmsolver_multistep as module

    src = textwrap.dedent(inspect.getsource(DPMSolverMultistepScheduler.step))
    patched = src.replace("sample = sample.to(torch.float32)", "pass").replace("dtype=torch.float32", "dtype=sample.dtype")
    if patched.count("pass") <= src.count("pass") or "float32" in patched:
        pytest.skip("this diffusers version's DPMSolverMultistepScheduler.step is not the one patched here")
    namespace: dict = {}
    exec(compile(patched, module.__file__, "exec"), module.__dict__, namespace)  # noqa: S102
    return type("DPMSolverMultistepScheduler64", (DPMSolverMultistepScheduler,), {"step": namespace["step"]})


F64 = _float64_scheduler_class()


def _reference(schedule: NoiseSchedule, ts: list[int], order: int, sde: bool, f64: bool = True):
    cls = F64 if f64 else DPMSolverMultistepScheduler
    ref = cls(num_train_timesteps=schedule.num_train_timesteps, trained_betas=schedule.betas.double().numpy(),
              solver_order=order, algorithm_type="sde-dpmsolver++" if sde else "dpmsolver++",
              prediction_type=schedule.prediction_type, timestep_spacing="trailing")
    if f64:  # the same float64 ᾱ as ours (diffusers keeps float32 tables)
        ref.alphas_cumprod = schedule.alphas_cumprod64.clone()
    ref.set_timesteps(timesteps=ts)
    if f64:
        ac = schedule.alphas_cumprod64.numpy()
        ref.sigmas = torch.from_numpy(np.append(np.sqrt((1 - ac) / ac)[ts], 0.0))
    return ref


def _run_reference(ref, x_T: torch.Tensor, noises: list[torch.Tensor] | None) -> torch.Tensor:
    x = x_T.clone()
    for i, t in enumerate(ref.timesteps):
        out = toy(x, t.expand(x.shape[0]))
        x = ref.step(out, t, x, variance_noise=None if noises is None else noises[i]).prev_sample
    return x


def _our_noises(x_T: torch.Tensor, steps: int, seed: int) -> list[torch.Tensor]:
    """The draws our sampler makes from a generator seeded ``seed``: one per step but the last (whose
    noise diffusers multiplies by σ = 0)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(x_T.shape, generator=g, dtype=x_T.dtype) for _ in range(steps - 1)] + [torch.zeros_like(x_T)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("steps", [5, 10, 20, 50])
@pytest.mark.parametrize("sampler", list(SOLVERS))
@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("schedule_name", ["linear", "polynomial"])
def test_matches_diffusers_float64(schedule_name, prediction, sampler, steps):
    order, sde = SOLVERS[sampler]
    schedule = NoiseSchedule.from_name(schedule_name, T, prediction_type=prediction)
    ts = schedule.set_timesteps(steps).tolist()
    # the trailing grid is diffusers' own for these counts
    plain = DPMSolverMultistepScheduler(num_train_timesteps=T, timestep_spacing="trailing")
    plain.set_timesteps(steps)
    assert plain.timesteps.tolist() == ts
    x_T = _x_T()
    expected = _run_reference(_reference(schedule, ts, order, sde), x_T, _our_noises(x_T, steps, 11) if sde else None)
    got = _solve(x_T.clone(), schedule, steps, sampler, generator=torch.Generator().manual_seed(11))
    if sampler in DPM:  # the named sampler is the same run
        named = sample(toy, x_T.clone(), schedule, num_steps=steps, sampler=sampler, generator=torch.Generator().manual_seed(11))
        assert torch.equal(named, got)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
    assert (got - x_T).abs().max() > 0.1  # the loop moved the sample


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("steps", [5, 12, 25])
@pytest.mark.parametrize("sampler", ["dpm++2m", "dpm++2m-sde", "dpm++3m"])
def test_logsnr_spacing_matches_diffusers_on_the_same_timesteps(sampler, steps):
    order, sde = DPM[sampler]
    schedule = NoiseSchedule.from_name("polynomial", T, prediction_type="epsilon")
    ts = schedule.set_timesteps(steps, spacing="logsnr").tolist()
    x_T = _x_T(seed=2)
    expected = _run_reference(_reference(schedule, ts, order, sde), x_T, _our_noises(x_T, steps, 5) if sde else None)
    got = sample(toy, x_T.clone(), schedule, num_steps=steps, sampler=sampler, spacing="logsnr",
                 generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("sampler", ["dpm++2m", "dpm++2m-sde"])
def test_matches_unmodified_diffusers_in_float32(sampler):
    """The stock scheduler (float32 tables and arithmetic) agrees to float32 accuracy."""
    order, sde = DPM[sampler]
    schedule = NoiseSchedule.linear(T)
    ts = schedule.set_timesteps(20).tolist()
    x_T = _x_T(dtype=torch.float32)
    expected = _run_reference(_reference(schedule, ts, order, sde, f64=False), x_T,
                              _our_noises(x_T, 20, 3) if sde else None)
    got = sample(toy, x_T.clone(), schedule, num_steps=20, sampler=sampler, generator=torch.Generator().manual_seed(3))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_two_steps_is_ddim():
    """Step 1 is first order (DDIM η = 0) and the last returns x̂0, which is also what DDIM's does."""
    schedule = NoiseSchedule.linear(T)
    x_T = _x_T()
    a = sample(toy, x_T, schedule, num_steps=2, sampler="dpm++2m")
    b = sample(toy, x_T, schedule, num_steps=2, sampler="ddim")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # float64 ᾱ vs float32-stored ᾱ


# ------------------------------------------------------------------------------ oracle: Gaussian data
MU, S = 1.5, 0.5  # data x0 ~ N(MU, S²) in every coordinate


def _gaussian_model(schedule: NoiseSchedule):
    """The exact denoiser of Gaussian data: E[x0 | x_t] = μ + α s² (x_t − α μ) / (α² s² + σ²)."""
    ac = schedule.alphas_cumprod64

    def model(x, t):
        a2 = ac[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        a, s = a2.sqrt(), (1 - a2).sqrt()
        x0 = MU + a * S**2 * (x - a * MU) / (a2 * S**2 + s**2)
        return x0 if schedule.prediction_type == "sample" else (x - a * x0) / s

    return model


def _ode_answer(schedule: NoiseSchedule, x_T: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """The exact probability-flow ODE from level ``first`` to ``last`` keeps (x − αμ)/√v fixed (v = α²s² + σ²,
    Gaussian marginals, an affine flow); the samplers return E[x0 | x_last] = μ + α s² z / √v there."""
    ac = schedule.alphas_cumprod64.double()
    v = lambda t: ac[t] * S**2 + 1 - ac[t]  # noqa: E731
    z = (x_T - ac[first].sqrt() * MU) / v(first).sqrt()
    return MU + ac[last].sqrt() * S**2 * z / v(last).sqrt()


@pytest.mark.parametrize("spacing", ["trailing", "logsnr"])
@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("schedule_name", ["linear", "cosine", "polynomial"])
def test_exact_score_ode_oracle_10_steps(schedule_name, prediction, spacing):
    schedule = NoiseSchedule.from_name(schedule_name, T, prediction_type=prediction)
    model = _gaussian_model(schedule)
    ts = schedule.set_timesteps(10, spacing=spacing).tolist()
    x_T = _x_T((256, 3), seed=1)
    answer = _ode_answer(schedule, x_T, ts[0], ts[-1])
    rms = {}
    for name in ("ddim", "dpm++2m", "dpm++3m"):
        got = sample(model, x_T, schedule, num_steps=10, sampler=name, spacing=spacing)
        rms[name] = float((got - answer).pow(2).mean().sqrt())
    # 2M: within 5% of the data's spread, and well ahead of DDIM (measured: 0.2–4% vs 9–36%)
    assert rms["dpm++2m"] < 0.05 * S, rms
    assert rms["dpm++2m"] < 0.3 * rms["ddim"], rms
    # 3M: as good on the trailing grid; with uniform-λ steps (h ≈ 1 here) its extrapolation is poorer
    if spacing == "trailing":
        assert rms["dpm++3m"] < 0.05 * S and rms["dpm++3m"] < 0.3 * rms["ddim"], rms
    else:
        assert rms["dpm++3m"] < rms["ddim"], rms
    # and the answer is the limit of many steps (the closed form is right)
    many = sample(model, x_T, schedule, num_steps=T, sampler="dpm++3m", spacing=spacing)
    assert float((many - _ode_answer(schedule, x_T, T - 1, 0)).abs().max()) < 1e-3 * S


@pytest.mark.parametrize("spacing", ["trailing", "logsnr"])
def test_exact_score_sde_reaches_the_distribution(spacing):
    """Stochastic 2M with the exact score, started from the exact marginal at T−1: the returned x̂0 at the
    last level ℓ should be distributed as N(μ, α_ℓ² s⁴ / v_ℓ). In 10 steps its spread is within 5%
    (measured +2.4% / +3.8%), far closer than DDIM η = 1 (the ancestral step; −39% / −18%)."""
    schedule = NoiseSchedule.from_name("polynomial", T)
    model = _gaussian_model(schedule)
    n, steps = 20000, 10
    ac = schedule.alphas_cumprod64
    z = _x_T((n, 1), seed=4)
    x_T = ac[T - 1].sqrt() * MU + (ac[T - 1] * S**2 + 1 - ac[T - 1]).sqrt() * z
    last = schedule.set_timesteps(steps, spacing=spacing).tolist()[-1]
    a2 = float(ac[last])
    std = math.sqrt(a2) * S**2 / math.sqrt(a2 * S**2 + 1 - a2)
    run = lambda name, seed=9, **kw: sample(model, x_T, schedule, num_steps=steps, sampler=name, spacing=spacing,  # noqa: E731
                                            generator=torch.Generator().manual_seed(seed), **kw)
    got, ddim = run("dpm++2m-sde"), run("ddim", eta=1.0)
    assert abs(float(got.mean()) - MU) < 5 * std / math.sqrt(n)
    err, ddim_err = abs(float(got.std()) / std - 1), abs(float(ddim.std()) / std - 1)
    assert err < 0.05 and err < 0.3 * ddim_err, (err, ddim_err)
    assert (run("dpm++2m-sde", seed=10) - got).abs().max() > 0.01  # noise was injected


# ------------------------------------------------------------------------------ calls, hooks, API
@pytest.mark.parametrize("steps", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("sampler", ["ddim", *DPM])
def test_one_model_call_per_step(sampler, steps):
    calls = []

    def model(x, t, **kw):
        calls.append(int(t[0]))
        return toy(x, t)

    schedule = NoiseSchedule.linear(T)
    sample(model, _x_T(), schedule, num_steps=steps, sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert calls == schedule.set_timesteps(steps).tolist()


def test_ddpm_runs_all_steps():
    schedule = NoiseSchedule.linear(20)
    calls = []
    model = lambda x, t: calls.append(int(t[0])) or toy(x, t)  # noqa: E731
    sample(model, _x_T(), schedule, sampler="ddpm", generator=torch.Generator().manual_seed(0))
    assert calls == list(range(19, -1, -1))


def test_default_sampler_is_unchanged_bit_for_bit():
    schedule = NoiseSchedule.from_name("cosine", 50)
    x_T = _x_T(dtype=torch.float32)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    for steps in (7, 20):
        old = ddim_sample(toy, x_T, schedule, steps, eta=1.0, generator=g(), noise_scale=0.8)
        assert torch.equal(sample(toy, x_T, schedule, num_steps=steps, eta=1.0, generator=g(), noise_scale=0.8), old)
        assert torch.equal(sample(toy, x_T, schedule, steps, 1.0, g(), noise_scale=0.8, sampler="ddim"), old)
    old = ddpm_sample(toy, x_T, schedule, generator=g(), noise_scale=0.8)
    for kw in ({}, {"sampler": "ddpm"}, {"sampler": "ddpm", "num_steps": 50}):
        assert torch.equal(sample(toy, x_T, schedule, generator=g(), noise_scale=0.8, **kw), old)


def test_ddim_at_all_steps_is_ddim_and_honours_eta():
    """DDIM asked for all T steps runs DDIM with the η given (it used to become ancestral DDPM silently)."""
    schedule = NoiseSchedule.from_name("cosine", 50)
    x_T = _x_T(dtype=torch.float32)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    for eta in (0.0, 1.0):
        want = ddim_sample(toy, x_T, schedule, 50, eta=eta, generator=g())
        assert torch.equal(sample(toy, x_T, schedule, num_steps=50, eta=eta, generator=g(), sampler="ddim"), want)
    assert not torch.equal(sample(toy, x_T, schedule, num_steps=50, eta=0.0, generator=g()),
                           sample(toy, x_T, schedule, num_steps=50, eta=1.0, generator=g()))


def test_hooks_and_model_kwargs():
    schedule = NoiseSchedule.linear(T)
    ts = schedule.set_timesteps(6).tolist()
    seen, replaced = [], []

    def replace(i, t_prev, x):
        replaced.append((i, t_prev))
        return x * 0.0 + 7.0 if t_prev < 0 else x

    out = dpm_solver_sample(toy, _x_T(), schedule, 6, callback=lambda i, t, x: seen.append((i, t)), replace=replace)
    assert seen == list(enumerate(ts))
    assert replaced == list(enumerate(ts[1:] + [-1]))
    assert torch.all(out == 7.0)  # the hook's state is the result
    a = sample(toy, _x_T(), schedule, num_steps=6, sampler="dpm++2m", model_kwargs={"scale": 0.5})
    b = sample(lambda x, t: toy(x, t, scale=0.5), _x_T(), schedule, num_steps=6, sampler="dpm++2m")
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("sampler", ["dpm++2m-sde", "3m-sde"])
def test_noise_scale_multiplies_exactly_the_injected_noise(sampler):
    """x̂0 ≡ 0: the solver is linear in (x_T, noise), so noise scale s moves the state from the noise-free
    one by s times the full-noise displacement (seen one step before the end, which returns x̂0 = 0)."""
    schedule = NoiseSchedule.from_name("cosine", 100, prediction_type="sample")
    x_T = _x_T((5, 3))
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    order, _ = SOLVERS[sampler]

    def run(s, seed=1, stochastic=True):
        states = []
        out = dpm_solver_sample(zero, x_T, schedule, 10, order=order, stochastic=stochastic, noise_scale=s,
                                generator=torch.Generator().manual_seed(seed), callback=lambda i, t, x: states.append(x))
        assert torch.all(out == 0)
        return states[-2]

    full, half, none = run(1.0), run(0.5), run(0.0)
    torch.testing.assert_close(half - none, 0.5 * (full - none), atol=1e-12, rtol=1e-10)
    assert (full - none).abs().max() > 1e-3
    torch.testing.assert_close(run(0.0, seed=2), none, rtol=0, atol=0)
    # the deterministic solver draws nothing
    torch.testing.assert_close(run(1.0, 1, False), run(1.0, 2, False), rtol=0, atol=0)
    with pytest.raises(ValueError, match="noise_scale"):
        run(-1.0)


def test_bad_arguments():
    schedule = NoiseSchedule.linear(50)
    x = _x_T()
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(toy, x, schedule, num_steps=5, sampler="euler")
    with pytest.raises(ValueError, match="needs a step count"):
        sample(toy, x, schedule, sampler="dpm++2m")
    with pytest.raises(ValueError, match="resample"):
        sample(toy, x, schedule, num_steps=5, sampler="dpm++2m", resample=2)
    with pytest.raises(ValueError, match="all 50 steps"):
        sample(toy, x, schedule, num_steps=5, sampler="ddpm")
    with pytest.raises(ValueError, match="order"):
        dpm_solver_sample(toy, x, schedule, 5, order=1)
    with pytest.raises(ValueError, match="spacing"):
        sample(toy, x, schedule, num_steps=5, sampler="dpm++2m", spacing="karras")
    assert set(DPM) | {"ddim", "ddpm"} == set(SAMPLERS)


# ------------------------------------------------------------------------------ a generic state
class TwoParts:
    """A state of two tensors that offers only what the core may use: + − × ÷ with scalars (Python
    numbers or 0-d tensors) and with another state, ``noise_like``, ``num_graphs`` and ``device``."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.a, self.b = a, b

    def _zip(self, o, op):
        if isinstance(o, TwoParts):
            return TwoParts(op(self.a, o.a), op(self.b, o.b))
        assert isinstance(o, (int, float)) or (isinstance(o, torch.Tensor) and o.ndim == 0), type(o)
        return TwoParts(op(self.a, o), op(self.b, o))

    def __add__(self, o): return self._zip(o, lambda a, b: a + b)  # noqa: E704
    def __radd__(self, o): return self._zip(o, lambda a, b: b + a)  # noqa: E704
    def __sub__(self, o): return self._zip(o, lambda a, b: a - b)  # noqa: E704
    def __rsub__(self, o): return self._zip(o, lambda a, b: b - a)  # noqa: E704
    def __mul__(self, o): return self._zip(o, lambda a, b: a * b)  # noqa: E704
    def __rmul__(self, o): return self._zip(o, lambda a, b: b * a)  # noqa: E704
    def __truediv__(self, o): return self._zip(o, lambda a, b: a / b)  # noqa: E704

    @property
    def num_graphs(self) -> int:
        return self.a.shape[0]

    @property
    def device(self) -> torch.device:
        return self.a.device

    def noise_like(self, generator=None) -> "TwoParts":
        z = torch.randn(self.a.shape[0], 5, generator=generator, dtype=self.a.dtype)
        return TwoParts(z[:, :3], z[:, 3:])

    def cat(self) -> torch.Tensor:
        return torch.cat([self.a, self.b], dim=1)


@pytest.mark.parametrize("sampler", list(SOLVERS))
@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
def test_state_objects_work_unchanged(sampler, prediction):
    schedule = NoiseSchedule.from_name("polynomial", T, prediction_type=prediction)
    x_T = _x_T((4, 5))

    def state_model(x, t):
        out = toy(x.cat(), t)
        return TwoParts(out[:, :3], out[:, 3:])

    order, stochastic = SOLVERS[sampler]
    got = dpm_solver_sample(state_model, TwoParts(x_T[:, :3], x_T[:, 3:]), schedule, 8, order=order,
                            stochastic=stochastic, generator=torch.Generator().manual_seed(6))
    expected = _solve(x_T, schedule, 8, sampler, generator=torch.Generator().manual_seed(6))
    assert isinstance(got, TwoParts)
    torch.testing.assert_close(got.cat(), expected, rtol=1e-12, atol=1e-12)
