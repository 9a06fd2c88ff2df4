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
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from molediff.diffusion.noise import noise_like
from molediff.diffusion.schedule import NoiseSchedule

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
                variance: str = "fixed_small", callback: Callback | None = None, noise_scale: float = 1.0,
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
            x = schedule.step(out, t, x, noise=noise, variance=variance)
            if replace is not None:
                x = replace(i, t - 1, x)
        if callback is not None:
            callback(i, t, x)
    return x


@torch.no_grad()
def ddim_sample(model: Model, x_T: Any, schedule: NoiseSchedule, num_steps: int = 50, eta: float = 0.0,
                generator: torch.Generator | None = None, spacing: str = "trailing", callback: Callback | None = None,
                noise_scale: float = 1.0, model_kwargs: dict | None = None, replace: Replace | None = None,
                resample: int = 1) -> Any:
    """DDIM sampling over ``num_steps`` strided steps; η = 0 deterministic, η > 0 stochastic."""
    _check(noise_scale)
    x = x_T
    timesteps = schedule.set_timesteps(num_steps, spacing=spacing).tolist()
    for i, t in enumerate(timesteps):
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


def sample(model: Model, x_T: Any, schedule: NoiseSchedule, num_steps: int | None = None, eta: float = 0.0,
           generator: torch.Generator | None = None, callback: Callback | None = None, noise_scale: float = 1.0,
           model_kwargs: dict | None = None, replace: Replace | None = None, resample: int = 1) -> Any:
    """Ancestral DDPM when ``num_steps`` is None or T, else DDIM with ``num_steps`` steps."""
    if resample < 1:
        raise ValueError(f"resample must be ≥ 1, got {resample}")
    if num_steps is None or num_steps == schedule.num_train_timesteps:
        return ddpm_sample(model, x_T, schedule, generator=generator, callback=callback, noise_scale=noise_scale,
                           model_kwargs=model_kwargs, replace=replace, resample=resample)
    return ddim_sample(model, x_T, schedule, num_steps, eta=eta, generator=generator, callback=callback,
                       noise_scale=noise_scale, model_kwargs=model_kwargs, replace=replace, resample=resample)
