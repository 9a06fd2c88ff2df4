"""Samplers: short, visible loops over the reverse process.

A sampler takes ``model(x_t, t) -> ε̂`` (``t`` a LongTensor ``[x.shape[0]]``, the same step for every
row), a starting x_T and the :class:`~molediff.diffusion.schedule.NoiseSchedule`. ``project`` keeps
every noise draw in the data's subspace (e.g. zero centre of mass per molecule); ``callback(i, t, x)``
is called after each step (progress bars, trajectories). ``noise_scale`` multiplies the fresh noise
of every stochastic step (1: the model's distribution; below 1: lower temperature, samples nearer the
modes; as "noise scale" / "temperature" in protein and molecule diffusion samplers).
"""

from __future__ import annotations

from typing import Callable

import torch

from molediff.diffusion.schedule import NoiseSchedule, Projection

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor], None]


def _t_vector(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


def _scaled(project: Projection | None, noise_scale: float) -> Projection | None:
    """``project`` followed by × ``noise_scale``: the steps pass every fresh noise draw through it, so
    the scale reaches exactly the injected noise and the random stream is unchanged."""
    if noise_scale < 0 or noise_scale != noise_scale:
        raise ValueError(f"noise_scale must be ≥ 0, got {noise_scale}")
    if noise_scale == 1.0:
        return project
    return lambda z: (project(z) if project is not None else z) * noise_scale


@torch.no_grad()
def ddpm_sample(
    model: EpsModel,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
    project: Projection | None = None,
    variance: str = "fixed_small",
    callback: Callback | None = None,
    noise_scale: float = 1.0,
) -> torch.Tensor:
    """Ancestral sampling over all T steps (Ho et al. 2020, Algorithm 2)."""
    x = x_T
    project = _scaled(project, noise_scale)
    T = schedule.num_train_timesteps
    for i, t in enumerate(range(T - 1, -1, -1)):
        eps = model(x, _t_vector(t, x))
        x = schedule.step(eps, t, x, variance=variance, generator=generator, project=project)
        if callback is not None:
            callback(i, t, x)
    return x


@torch.no_grad()
def ddim_sample(
    model: EpsModel,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    num_steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    project: Projection | None = None,
    spacing: str = "trailing",
    callback: Callback | None = None,
    noise_scale: float = 1.0,
) -> torch.Tensor:
    """DDIM sampling over ``num_steps`` strided steps; η = 0 deterministic, η > 0 stochastic."""
    x = x_T
    project = _scaled(project, noise_scale)
    timesteps = schedule.set_timesteps(num_steps, spacing=spacing).tolist()
    for i, t in enumerate(timesteps):
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        eps = model(x, _t_vector(t, x))
        x = schedule.ddim_step(eps, t, prev_t, x, eta=eta, generator=generator, project=project)
        if callback is not None:
            callback(i, t, x)
    return x


def sample(
    model: EpsModel,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    num_steps: int | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    project: Projection | None = None,
    callback: Callback | None = None,
    noise_scale: float = 1.0,
) -> torch.Tensor:
    """Ancestral DDPM when ``num_steps`` is None or T, else DDIM with ``num_steps`` steps."""
    if num_steps is None or num_steps == schedule.num_train_timesteps:
        return ddpm_sample(model, x_T, schedule, generator=generator, project=project, callback=callback, noise_scale=noise_scale)
    return ddim_sample(model, x_T, schedule, num_steps, eta=eta, generator=generator, project=project, callback=callback,
                       noise_scale=noise_scale)
