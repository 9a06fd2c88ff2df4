"""Few-step students by progressive distillation (Salimans & Ho 2022).

A student starts as a copy of its teacher and learns to take, in one deterministic DDIM step, the
teacher's two: from x_t at a timestep of the student's grid (``steps`` trailing timesteps, the grid
:meth:`~molediff.diffusion.schedule.NoiseSchedule.set_timesteps` gives the sampler), the teacher steps
to the midpoint t' and then to the student's next timestep t''; the student's target x̃ is the x̂_0
for which one DDIM step t → t'' lands where the teacher's two did (:func:`distillation_target`). Every
part of the state (positions, atom types, charges, hydrogen counts, bonds) is Gaussian in x̂_0 space
here, so all parts distil the same way. Self-conditioning is carried through: half of the batches give
the student its own no-gradient estimate at t, as in training, and the teacher's first step reads the
same estimate, its second step its own first one, as the sampler feeds them. Each stage halves the
steps: a stage's student is the next stage's teacher (``molediff train --distill-from``).

The student samples with DDIM at η = 0, so it inherits the deterministic path of its teacher, which for
a self-conditioned x̂_0 model is weaker than its stochastic one (benchmarks/README.md): that cost is the
teacher's row at the same settings, to be shown beside the student's.
"""

from __future__ import annotations

from typing import Any

import torch

from molediff.state import MolState

__all__ = ["INHERITED_META", "MAX_WEIGHT", "distillation_loss", "distillation_target", "load_teacher", "teacher_midpoint"]

#: the x̂_0-space loss is weighted by the signal-to-noise ratio truncated below at 1 (Salimans & Ho's
#: "truncated SNR"), and above at this value: near t = 0 the ratio of this schedule reaches 1e6 and
#: would hand the whole loss to the last step
MAX_WEIGHT = 100.0


#: what a student's file takes over from its teacher's beside the weights: how it samples besides its
#: steps (local restarts, with or without odd rings) and the training molecules' hashes (novelty)
INHERITED_META = ("default_restarts", "restart_rings", "training_smiles_hashes")


def load_teacher(path: str, model_config: Any, diffusion: Any, device: Any = "cpu",
                 compile: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The frozen teacher of a distillation run, read once from its model file: its weights in the
    student's network, which they must fit (a student keeps its teacher's architecture, parts and
    vocabulary), and the entries of :data:`INHERITED_META` its file has."""
    from molediff.checkpoint import load_model_file
    from molediff.errors import UserError
    from molediff.models import build_network

    weights, _, meta = load_model_file(path)
    teacher = build_network(model_config, diffusion)
    try:
        teacher.load_state_dict(weights)
    except RuntimeError:
        raise UserError(f"--distill-from {path}: its network is not this run's (a student keeps its teacher's "
                        "architecture, parts and vocabulary)") from None
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if compile:
        teacher.compile(dynamic=True)
    return teacher, {k: meta[k] for k in INHERITED_META if k in meta}


def teacher_midpoint(t: int, t_next: int) -> int:
    """The teacher's intermediate timestep between a student step ``t`` → ``t_next`` (−1: the clean end)."""
    return (t + max(t_next, 0)) // 2 if t_next >= 0 else t // 2


def distillation_target(schedule: Any, z_t: MolState, t: int, z_next: MolState, t_next: int) -> MolState:
    """x̃: the x̂_0 for which one DDIM step (η = 0) from ``z_t`` at ``t`` lands on ``z_next`` at ``t_next``
    (``t_next`` < 0: the clean end, where the step returns x̂_0 itself). From z'' = α'' x̃ + σ'' (z − α x̃)/σ."""
    if t_next < 0:
        return z_next
    a, s = schedule.alpha_sigma(t)
    a2, s2 = schedule.alpha_sigma(t_next)
    ratio = s2 / s
    return (z_next - z_t * ratio) / (a2 - ratio * a)


def distillation_loss(diffusion: Any, student: torch.nn.Module, teacher: torch.nn.Module, x0: MolState, steps: int,
                      generator: torch.Generator | None = None, cond: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The student's loss on a batch of clean states ``x0``: one timestep of the student's ``steps``-step
    grid for the whole batch (drawn from ``generator``, like the noise and the self-conditioning coin),
    the teacher's two DDIM steps (η = 0, no gradient) and the weighted x̂_0-space squared error of the
    student's one, per atom and per pair, averaged per molecule. Returns ``{"total", "mse", "t"}``."""
    schedule = diffusion.schedule
    grid = schedule.set_timesteps(steps).tolist()
    i = int(torch.randint(len(grid), (1,), generator=generator))
    t, t_next = grid[i], (grid[i + 1] if i + 1 < len(grid) else -1)
    t_mid = teacher_midpoint(t, t_next)
    g = x0.graph
    at = lambda s: torch.full((g.num_graphs,), s, dtype=torch.long, device=x0.device)  # noqa: E731
    z_t = diffusion.add_noise(x0, x0.noise_like(generator), at(t))
    estimate = None
    if diffusion.cfg.self_condition and torch.rand((), generator=generator) < 0.5:
        with torch.no_grad():
            estimate = diffusion.predict(student, z_t, at(t), cond=cond)[0]
    with torch.no_grad():
        first = diffusion.predict(teacher, z_t, at(t), self_cond=estimate, cond=cond)[0]
        z_mid = schedule.ddim_step(first, t, t_mid, z_t, eta=0.0)
        second = diffusion.predict(teacher, z_mid, at(t_mid), self_cond=first if diffusion.cfg.self_condition else None,
                                   cond=cond)[0]
        z_next = schedule.ddim_step(second, t_mid, t_next, z_mid, eta=0.0)
        target = distillation_target(schedule, z_t, t, z_next, t_next)
    out = diffusion.predict(student, z_t, at(t), self_cond=estimate, cond=cond)[0]
    a, s = schedule.alpha_sigma(t)
    weight = min(max(a * a / (s * s), 1.0), MAX_WEIGHT)
    err = out - target
    node = torch.zeros(g.num_graphs, dtype=err.node.dtype, device=err.node.device)
    node.index_add_(0, g.batch, (err.node ** 2).mean(1))
    per_mol = node / torch.bincount(g.batch, minlength=g.num_graphs).clamp_min(1)
    if err.pair.shape[1]:
        pair = torch.zeros_like(per_mol).index_add_(0, g.pair_batch, (err.pair ** 2).mean(1))
        per_mol = per_mol + pair / torch.bincount(g.pair_batch, minlength=g.num_graphs).clamp_min(1)
    mse = per_mol.mean()
    return {"total": weight * mse, "mse": mse.detach(), "t": torch.tensor(float(t))}
