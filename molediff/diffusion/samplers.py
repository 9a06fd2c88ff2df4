"""Samplers: short, visible loops over the reverse process.

A sampler takes ``model(x_t, t, **model_kwargs)`` returning the schedule's ``prediction_type`` (ε or
x_0), where ``t`` is a LongTensor with one timestep per row (per image, per molecule); a starting
x_T (a tensor, or a state object of several parts, see :mod:`molediff.diffusion.schedule`) and the
:class:`~molediff.diffusion.schedule.NoiseSchedule`. Fresh noise comes from ``noise_like`` (a state
keeps its parts' subspaces, e.g. zero centre of mass) times ``noise_scale`` (1: the model's
distribution; below 1: lower temperature, as "noise scale" in protein and molecule samplers).

Hooks: ``replace(i, t_prev, x) -> x`` runs after each step and may overwrite part of the state (the
known atoms of an inpainting task, noised to level ``t_prev``; −1 = clean); ``callback(i, t, x)``
observes (progress bars, trajectories). ``resample`` R > 1 repeats each step R times, going back up
to level t between repeats (RePaint, Lugmayr et al. 2022), so known and generated parts agree.

:func:`sample` picks one by name (:data:`SAMPLERS`): ancestral DDPM, DDIM, or the multistep
DPM-Solver++ (:func:`dpm_solver_sample`, deterministic or stochastic), which needs far fewer steps.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from molediff.diffusion.noise import noise_like
from molediff.diffusion.schedule import NoiseSchedule, finish_timesteps
from molediff.diffusion.sampler_table import FINISH_GRIDS, SAMPLER_TABLE, SAMPLERS, SPACINGS, Sampler  # noqa: F401 - re-exported

Model = Callable[..., Any]
Callback = Callable[[int, int, Any], None]
Replace = Callable[[int, int, Any], Any]


def _t_vector(t: int, x: Any) -> torch.Tensor:
    """One timestep per row: per image for tensors, per molecule for states (``num_graphs``)."""
    rows = x.shape[0] if isinstance(x, torch.Tensor) else x.num_graphs
    return torch.full((rows,), int(t), dtype=torch.long, device=x.device)


def _fresh_noise(x: Any, generator: torch.Generator | None, noise_scale: float) -> Any:
    z = noise_like(x, generator)
    return z if noise_scale == 1.0 else z * noise_scale


def _check(noise_scale: float) -> None:
    if noise_scale < 0 or noise_scale != noise_scale:
        raise ValueError(f"noise_scale must be ≥ 0, got {noise_scale}")


@torch.no_grad()
def ddpm_sample(model: Model, x_T: Any, schedule: NoiseSchedule, generator: torch.Generator | None = None,
                callback: Callback | None = None, noise_scale: float = 1.0,
                model_kwargs: dict | None = None, replace: Replace | None = None, resample: int = 1) -> Any:
    """Ancestral sampling over all T steps (Ho et al. 2020, Algorithm 2)."""
    _check(noise_scale)
    x = x_T
    for i, t in enumerate(range(schedule.num_train_timesteps - 1, -1, -1)):
        for r in range(resample if t > 0 else 1):
            if r:  # RePaint: back up from t − 1 to t, then step again
                x = schedule.renoise(x, t - 1, t, noise_like(x, generator))
            out = model(x, _t_vector(t, x), **(model_kwargs or {}))
            noise = _fresh_noise(x, generator, noise_scale) if t > 0 else None
            x = schedule.step(out, t, x, noise=noise)
            if replace is not None:
                x = replace(i, t - 1, x)
        if callback is not None:
            callback(i, t, x)
    return x


@torch.no_grad()
def ddim_sample(model: Model, x_T: Any, schedule: NoiseSchedule, num_steps: int = 50, eta: float = 0.0,
                generator: torch.Generator | None = None, spacing: str = "trailing", callback: Callback | None = None,
                noise_scale: float = 1.0, model_kwargs: dict | None = None, replace: Replace | None = None,
                resample: int = 1, start: int | None = None, end: int | None = None) -> Any:
    """DDIM sampling over ``num_steps`` strided steps; η = 0 deterministic, η > 0 stochastic. ``start``:
    begin at the grid's first level ≤ ``start`` instead of T−1 (``x_T`` is then a state at that level).
    ``end``: stop at the grid's first level ≤ ``end`` and return the state there instead of the clean one
    (a chain run in two parts: the second takes it with ``start`` at that level)."""
    _check(noise_scale)
    x = x_T
    timesteps = [t for t in schedule.set_timesteps(num_steps, spacing=spacing).tolist() if start is None or t <= start]
    stop = next((t for t in timesteps if end is not None and t <= end), None)
    for i, t in enumerate(timesteps):
        if t == stop:
            break
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        for r in range(resample if prev_t >= 0 else 1):
            if r:  # RePaint: back up from prev_t to t, then step again
                x = schedule.renoise(x, prev_t, t, noise_like(x, generator))
            out = model(x, _t_vector(t, x), **(model_kwargs or {}))
            noise = _fresh_noise(x, generator, noise_scale) if eta > 0 and prev_t >= 0 else None
            x = schedule.ddim_step(out, t, prev_t, x, eta=eta, noise=noise)
            if replace is not None:
                x = replace(i, prev_t, x)
        if callback is not None:
            callback(i, t, x)
    return x


@torch.no_grad()
def dpm_solver_sample(model: Model, x_T: Any, schedule: NoiseSchedule, num_steps: int = 20, order: int = 2,
                      stochastic: bool = False, generator: torch.Generator | None = None, spacing: str = "trailing",
                      callback: Callback | None = None, noise_scale: float = 1.0, model_kwargs: dict | None = None,
                      replace: Replace | None = None) -> Any:
    """DPM-Solver++ multistep (Lu et al. 2022) over ``num_steps`` timesteps: one model call per step.

    ``order`` 2 ("2M") or 3 ("3M"); ``stochastic`` selects SDE-DPM-Solver++ (diffusers'
    ``algorithm_type="sde-dpmsolver++"``: fresh noise at every step but the last, times ``noise_scale``)
    instead of the deterministic probability-flow solver. Order 3 with ``stochastic`` matches diffusers
    too but is not offered by :func:`sample`: differencing noisy x̂_0s widens the samples (with the exact
    score of Gaussian data, std +4% for 2M-SDE but up to +30% for 3M-SDE at 10–20 steps). Works for ε- and x_0-prediction alike: each
    output becomes x̂_0 (:meth:`~NoiseSchedule.data_prediction`), and the update combines the last
    ``order`` of them with float64 coefficients from the schedule (:meth:`~NoiseSchedule.dpm_solver_step`).

    Orders: the first step is first order (the same as DDIM η = 0), the second at most second order;
    with fewer than 15 steps the next-to-last step is at most second order (diffusers'
    ``lower_order_final``). Final decoding: the last step goes to σ = 0, where every variant returns
    the x̂_0 of the last model call (at the smallest timestep, ``t_{n−1}``) unchanged, with no noise
    (diffusers' ``final_sigmas_type="zero"``); as with DDIM there is no separate decoder step.

    ``spacing``: "trailing" (the schedule's grid, from T−1) or "logsnr" (uniform in log-SNR from T−1 to
    0, see :meth:`~NoiseSchedule.set_timesteps`). Hooks as in :func:`ddim_sample`: ``replace(i, t_prev, x)``
    after each step (``t_prev`` = −1 after the last), ``callback(i, t, x)``. RePaint resampling needs a
    Markov step and is not offered here.
    """
    _check(noise_scale)
    if order not in (2, 3):
        raise ValueError(f"order must be 2 or 3, got {order}")
    x = x_T
    timesteps = schedule.set_timesteps(num_steps, spacing=spacing).tolist()
    n = len(timesteps)
    x0_hist: list[Any] = []
    for i, t in enumerate(timesteps):
        prev_t = timesteps[i + 1] if i + 1 < n else -1
        out = model(x, _t_vector(t, x), **(model_kwargs or {}))
        x0_hist = (x0_hist + [schedule.data_prediction(out, x, t)])[-order:]
        k = min(len(x0_hist), 2 if (i == n - 2 and n < 15) else order)
        noise = _fresh_noise(x, generator, noise_scale) if stochastic and prev_t >= 0 else None
        x = schedule.dpm_solver_step(x0_hist[-k:], timesteps[i + 1 - k : i + 1], prev_t, x,
                                     stochastic=stochastic, noise=noise)
        if replace is not None:
            x = replace(i, prev_t, x)
        if callback is not None:
            callback(i, t, x)
    return x


def _run_ddpm(model, x_T, schedule, num_steps, eta, generator, spacing, callback, noise_scale, model_kwargs, replace, resample):  # noqa: ARG001
    return ddpm_sample(model, x_T, schedule, generator=generator, callback=callback, noise_scale=noise_scale,
                       model_kwargs=model_kwargs, replace=replace, resample=resample)


def _run_ddim(model, x_T, schedule, num_steps, eta, generator, spacing, callback, noise_scale, model_kwargs, replace, resample):
    return ddim_sample(model, x_T, schedule, num_steps, eta=eta, generator=generator, spacing=spacing, callback=callback,
                       noise_scale=noise_scale, model_kwargs=model_kwargs, replace=replace, resample=resample)


def _dpm(order: int, stochastic: bool) -> Callable[..., Any]:
    def run(model, x_T, schedule, num_steps, eta, generator, spacing, callback, noise_scale, model_kwargs, replace, resample):  # noqa: ARG001
        return dpm_solver_sample(model, x_T, schedule, num_steps, order=order, stochastic=stochastic, generator=generator,
                                 spacing=spacing, callback=callback, noise_scale=noise_scale, model_kwargs=model_kwargs,
                                 replace=replace)
    return run


#: each row of :data:`molediff.diffusion.sampler_table.SAMPLER_TABLE` names one of these loops (its ``run``)
RUNNERS: dict[str, Callable[..., Any]] = {"ddim": _run_ddim, "ddpm": _run_ddpm, "dpm++2m": _dpm(2, False),
                                         "dpm++2m-sde": _dpm(2, True), "dpm++3m": _dpm(3, False)}


def check_sampler(sampler: str, num_steps: int | None, T: int, eta: float = 0.0, resample: int = 1,
                  spacing: str = "trailing") -> Sampler:
    """The table row of ``sampler`` after checking that it can run this request; raises ``ValueError``
    saying what is wrong (callers with users turn it into their own message)."""
    spec = SAMPLER_TABLE.get(sampler)
    if spec is None:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    if resample < 1:
        raise ValueError(f"resample must be ≥ 1, got {resample}")
    if resample != 1 and not spec.resample:
        raise ValueError(f"resample (RePaint rounds) works with the {', '.join(n for n, s in SAMPLER_TABLE.items() if s.resample)} "
                         f"samplers, not {sampler}")
    if spec.all_steps and num_steps not in (None, T):
        raise ValueError(f"the {sampler} sampler runs all {T} steps; give no step count (or a strided sampler)")
    if not spec.all_steps and (num_steps is None or not 1 <= num_steps <= T):
        raise ValueError(f"the {sampler} sampler needs a step count between 1 and {T}, got {num_steps}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be between 0 and 1, got {eta:g}")
    if spacing in FINISH_GRIDS and not spec.all_steps:
        finish_timesteps(T, num_steps, spacing)  # raises where the grid does not exist for this step count
    return spec


def sample(model: Model, x_T: Any, schedule: NoiseSchedule, num_steps: int | None = None, eta: float = 0.0,
           generator: torch.Generator | None = None, callback: Callback | None = None, noise_scale: float = 1.0,
           model_kwargs: dict | None = None, replace: Replace | None = None, resample: int = 1,
           sampler: str = "ddim", spacing: str = "trailing") -> Any:
    """Run one of :data:`SAMPLERS` from ``x_T`` (see :data:`SAMPLER_TABLE`).

    "ddim" (default): DDIM with ``num_steps`` steps (up to T) and ``eta``; with ``num_steps`` None it
    runs ancestral DDPM over all T steps (as "ddpm"). "dpm++2m", "dpm++3m": deterministic DPM-Solver++;
    "dpm++2m-sde": its stochastic variant (:func:`dpm_solver_sample`). ``spacing`` (:data:`SPACINGS`)
    picks the strided timesteps. A request a sampler cannot run raises ``ValueError``.
    """
    if sampler == "ddim" and num_steps is None:
        sampler = "ddpm"
    spec = check_sampler(sampler, num_steps, schedule.num_train_timesteps, eta, resample, spacing)
    _check(noise_scale)
    return RUNNERS[spec.run](model, x_T, schedule, num_steps, eta, generator, spacing, callback, noise_scale, model_kwargs,
                             replace, resample)
