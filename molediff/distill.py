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

**Distribution matching** (``distill_method`` "dmd"; Yin et al. 2024, DMD/DMD2, as FlashMol applies it to
3D molecules) trains a student that samples *stochastically* in its N steps (DDIM at η = 1, noise 1),
so it is not bound to the teacher's deterministic path. Each step runs the student's own chain from
noise, without gradient, to a random one of its N steps (backward simulation) and takes the student's
x̂_0 there, with gradient, as a sample of the data distribution (not a posterior mean). That sample is
noised to a random level t' and read by the frozen teacher (the data's denoiser) and by a *fake*
denoiser, a second copy of the teacher trained online on the student's samples with the ordinary
training loss; the difference of their x̂_0 estimates, normalised per molecule, is the direction in
which the student's samples leave the data distribution, and the student's loss moves its x̂_0 against
it (:func:`dmd_generator_loss`). Every part of the state is matched alike in x̂_0 space.

The matching direction is blind to what looks right at every noise level piece by piece: a student sample
in two pieces (a small molecule split off), noised and read by the teacher, keeps its pieces about as far
apart as the fake denoiser's reading does (benchmarks/README.md, issue 38), so nothing in the loss joins
them. DMD2's answer (Yin et al. 2024b) is an adversarial term, the one part of the loss that reads training
molecules: with ``distill_gan`` > 0 a :class:`Discriminator` head on the fake denoiser's features learns to
tell noised training molecules from noised student samples (at low and middle noise, where chemistry and
layout are plain), and the student's loss adds its non-saturating generator loss. It is also a lever on a
student's chemistry drifting from the data's: it brought back the drug-like student's lost aromatic rings, and
the QM9 student's bond types at noise 1 (benchmarks/README.md, issue 38).

DMD's own anchor is a **regression term** (Yin et al. 2024a): with ``distill_regression`` > 0 the run
first draws pairs from the teacher (:func:`teacher_pairs`: a noise z_T and the teacher's deterministic
endpoint for it, DDIM at η = 0 in its own steps; the teacher's path rarely splits a molecule), and each
student step adds the error of the student's deterministic chain from the same z_T against that endpoint
(:func:`regression_loss`). It ties the student's global layout, which the matching direction cannot see,
to the teacher's.

**The student's own finishing steps.** Sampled on evenly spaced steps, a distribution-matching student's
graphs are right and its bond lengths too coarse for the lookup rule; its teacher, given the last two levels
of its 75 steps, makes them exact (benchmarks/README.md, issue 38). With ``distill_spacing`` "finish" the
student's grid puts its own last two steps there
(:meth:`~molediff.diffusion.schedule.NoiseSchedule.set_timesteps`), and with ``distill_keep`` > 0 its
estimate at those steps of its chain is regressed on the teacher's estimate of the same state
(:func:`keep_loss`): matching reads its samples at noise levels where bond lengths are a blur, so on its
own it would not teach them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from molediff.config import KEEP_LEVEL  # noqa: F401 - re-exported: the keep term's home is the recipe's
from molediff.state import MolState

__all__ = ["DISC_LR", "DMD_LEVELS", "GAN_LEVELS", "INHERITED_META", "KEEP_LEVEL", "MAX_WEIGHT", "PAIR_CHUNK", "STUDENT_SAMPLING",
           "Discriminator", "discriminator_loss", "distillation_loss", "distillation_target", "dmd_generator_loss",
           "fake_features", "gan_generator_loss", "keep_loss", "load_teacher", "regression_loss", "student_chain", "teacher_midpoint", "teacher_pairs"]

#: the x̂_0-space loss is weighted by the signal-to-noise ratio truncated below at 1 (Salimans & Ho's
#: "truncated SNR"), and above at this value: near t = 0 the ratio of this schedule reaches 1e6 and
#: would hand the whole loss to the last step
MAX_WEIGHT = 100.0


#: how a student samples unless asked otherwise, by distillation method (its file's metadata; also how its
#: training checks sample): a progressive student on the teacher's deterministic path, a distribution-
#: matching one on its own stochastic chain, at the noise it was trained with
STUDENT_SAMPLING = {"progressive": {"default_eta": 0.0}, "dmd": {"default_eta": 1.0, "default_noise_scale": 1.0}}

#: what a student's file takes over from its teacher's beside the weights: how it samples besides its
#: steps (local restarts, with or without odd rings) and the training molecules' hashes (novelty)
INHERITED_META = ("default_restarts", "restart_rings", "training_smiles_hashes")


def load_teacher(path: str, model_config: Any, diffusion: Any, device: Any = "cpu",
                 compile: bool = False) -> tuple[torch.nn.Module, dict[str, Any], int]:
    """The frozen teacher of a distillation run, read once from its model file: its weights in the
    student's network, which they must fit (a student keeps its teacher's architecture, parts and
    vocabulary), the entries of :data:`INHERITED_META` its file has, and the steps it samples in
    (:func:`model_steps`)."""
    from molediff.checkpoint import load_model_file
    from molediff.errors import UserError
    from molediff.models import build_network

    weights, config, meta = load_model_file(path)
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
    return teacher, {k: meta[k] for k in INHERITED_META if k in meta}, model_steps(config, meta)


def model_steps(config: Any, meta: dict[str, Any]) -> int:
    """The steps a model file samples in: its ``default_steps``, else (a student's training checkpoint) its
    config's ``distill_steps``, else the sampler's default."""
    from molediff.config import DEFAULT_STEPS

    return int(meta.get("default_steps") or config.distill_steps or DEFAULT_STEPS)


def teacher_midpoint(t: int, t_next: int) -> int:
    """The teacher's intermediate timestep between a student step ``t`` → ``t_next`` (−1: the clean end)."""
    return (t + max(t_next, 0)) // 2 if t_next >= 0 else t // 2


def _at(graph: Any, t: int, device: Any) -> torch.Tensor:
    """One timestep ``t`` for every molecule of ``graph`` [B]."""
    return torch.full((graph.num_graphs,), t, dtype=torch.long, device=device)


def _row_means(values: torch.Tensor) -> torch.Tensor:
    """Mean of each row of ``values`` [R, C]; an empty [0] where there are no columns (atoms-only models' pairs)."""
    return values.mean(1) if values.shape[1] else values.new_zeros(0)


def _per_molecule(values_node: torch.Tensor, values_pair: torch.Tensor, graph: Any) -> torch.Tensor:
    """Per molecule [B]: the mean over its atoms of ``values_node`` [|V|] plus the mean over its pairs of
    ``values_pair`` [|P|] (nothing for an empty one): how the students' losses weigh atoms and pairs."""
    B = graph.num_graphs
    node = torch.zeros(B, dtype=values_node.dtype, device=values_node.device).index_add_(0, graph.batch, values_node)
    out = node / torch.bincount(graph.batch, minlength=B).clamp_min(1)
    if values_pair.numel():
        pair = torch.zeros_like(out).index_add_(0, graph.pair_batch, values_pair)
        out = out + pair / torch.bincount(graph.pair_batch, minlength=B).clamp_min(1)
    return out


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
    at = lambda s: _at(g, s, x0.device)  # noqa: E731
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
    mse = _per_molecule(_row_means(err.node ** 2), _row_means(err.pair ** 2), g).mean()
    return {"total": weight * mse, "mse": mse.detach(), "t": torch.tensor(float(t))}


#: the noise levels t' at which the teacher and the fake denoiser compare a student sample, as fractions
#: of T (DMD's range: at the very ends both estimates agree and the difference says nothing)
DMD_LEVELS = (0.02, 0.98)


@torch.no_grad()
def _chain(diffusion: Any, student: torch.nn.Module, x: MolState, grid: list[int], k: int, eta: float,
           generator: torch.Generator | None = None, cond: torch.Tensor | None = None) -> tuple[MolState, MolState | None]:
    """The student's first ``k`` trailing DDIM steps on ``grid`` from ``x`` at η = ``eta`` (noise 1;
    self-conditioning fed as the sampler feeds it), without gradient: the state at ``grid[k]`` and the
    previous step's estimate (None when ``k`` is 0)."""
    at = lambda s: _at(x.graph, s, x.device)  # noqa: E731
    estimate = None
    for i in range(k):
        out = diffusion.predict(student, x, at(grid[i]), self_cond=estimate, cond=cond)[0]
        noise = x.noise_like(generator) if eta > 0 else None
        x = diffusion.schedule.ddim_step(out, grid[i], grid[i + 1], x, eta=eta, noise=noise)
        estimate = out if diffusion.cfg.self_condition else None
    return x, estimate


def student_chain(diffusion: Any, student: torch.nn.Module, graph: Any, steps: int, generator: torch.Generator | None = None,
                  cond: torch.Tensor | None = None, spacing: str = "trailing") -> tuple[MolState, int, MolState | None]:
    """Backward simulation: the student's own sampling chain (``steps`` DDIM steps on the ``spacing`` grid at
    η = 1, noise 1, self-conditioning fed as the sampler feeds it) on ``graph``, from noise to a step k drawn
    uniformly from ``generator``, without gradient. Returns the state there, its timestep and the previous
    step's estimate (None at the first step), where the student's trained prediction is taken."""
    grid = diffusion.schedule.set_timesteps(steps, spacing).tolist()
    k = int(torch.randint(len(grid), (1,), generator=generator))
    x, estimate = _chain(diffusion, student, diffusion.prior(graph, generator), grid, k, 1.0, generator, cond)
    return x, grid[k], estimate


def dmd_generator_loss(diffusion: Any, student: torch.nn.Module, teacher: torch.nn.Module, fake: torch.nn.Module, graph: Any,
                       steps: int, generator: torch.Generator | None = None, cond: torch.Tensor | None = None,
                       disc: nn.Module | None = None, gan_weight: float = 0.0, spacing: str = "trailing",
                       keep_weight: float = 0.0, keep_level: float = KEEP_LEVEL) -> dict[str, Any]:
    """The student's distribution-matching loss on molecules of ``graph``'s sizes (module docstring): its
    x̂_0 at a random step of its own chain (:func:`student_chain`), noised to t' ∈ :data:`DMD_LEVELS` × T
    (per molecule), read by ``teacher`` and ``fake`` without gradient (no self-conditioning estimate: both
    were trained half the time without one). The gradient direction (fake − teacher), divided per molecule
    by the mean |sample − teacher's x̂_0| (DMD's normalisation, so that every molecule and level moves
    alike), is turned into a squared error whose gradient it is. With ``disc`` and ``gan_weight`` > 0 the
    total adds ``gan_weight`` × :func:`gan_generator_loss` of the same sample. With ``keep_weight`` > 0 and
    the drawn step at or below ``keep_level`` × T (default :data:`KEEP_LEVEL`: the finishing steps), the total
    adds ``keep_weight`` × :func:`keep_loss` there. ``spacing``: the student's grid. Returns ``{"total", "dmd", "gan", "keep", "sample", "t"}``
    (``keep`` NaN where the step had none): ``sample`` the student's x̂_0 (detached), on which the fake
    denoiser (and the discriminator) train next."""
    x_k, t_k, estimate = student_chain(diffusion, student, graph, steps, generator, cond, spacing)
    sample = diffusion.predict(student, x_k, _at(graph, t_k, x_k.device), self_cond=estimate, cond=cond)[0]
    T = diffusion.schedule.num_train_timesteps
    keep = keep_loss(diffusion, teacher, x_k, t_k, estimate, sample, cond) if keep_weight > 0 and t_k <= keep_level * T else None
    lo, hi = int(DMD_LEVELS[0] * T), int(DMD_LEVELS[1] * T)
    t = torch.randint(lo, hi, (graph.num_graphs,), generator=generator).to(x_k.device)
    with torch.no_grad():
        noisy = diffusion.add_noise(sample.detach(), sample.noise_like(generator), t)
        real = diffusion.predict(teacher, noisy, t, cond=cond)[0]
        fake_x0 = diffusion.predict(fake, noisy, t, cond=cond)[0]
        gap = (sample - real).detach()
        scale = _per_molecule(_row_means(gap.node.abs()), _row_means(gap.pair.abs()), graph).clamp_min(1e-6)
        direction = fake_x0 - real
        node_dir = direction.node / scale[graph.batch, None]
        pair_dir = direction.pair / scale[graph.pair_batch, None]
    # d/dx 0.5 ||x − sg(x − g)||² = g: the student's samples move against the direction
    node_err = _row_means((sample.node - (sample.node - node_dir).detach()) ** 2)
    pair_err = _row_means((sample.pair - (sample.pair - pair_dir).detach()) ** 2)
    dmd = 0.5 * _per_molecule(node_err, pair_err, graph).mean()
    gan = gan_generator_loss(diffusion, disc, fake, sample, generator) if disc is not None and gan_weight > 0 else dmd.new_zeros(())
    total = dmd + gan_weight * gan + (keep_weight * keep if keep is not None else 0.0)
    return {"total": total, "dmd": dmd.detach(), "gan": gan.detach(),
            "keep": keep.detach() if keep is not None else dmd.new_tensor(float("nan")), "sample": sample.detach(),
            "t": torch.tensor(float(t_k))}


def keep_loss(diffusion: Any, teacher: torch.nn.Module, x_k: MolState, t_k: int, estimate: MolState | None,
              sample: MolState, cond: torch.Tensor | None = None) -> torch.Tensor:
    """The keep term: at a low-noise step of the student's own chain (state ``x_k`` at ``t_k``, previous
    estimate ``estimate``), the student's x̂_0 ``sample`` (with gradient) against the teacher's x̂_0 of the
    same state (no gradient), the squared error per molecule, averaged. A scalar. The distribution-matching
    direction is read at noise levels where bond lengths are a blur, so it cannot make them exact; at its
    finishing steps the student should do as its teacher would there, which is what a teacher finishing a
    student's molecules was measured to give (benchmarks/README.md, issue 38)."""
    with torch.no_grad():
        target = diffusion.predict(teacher, x_k, _at(x_k.graph, t_k, x_k.device), self_cond=estimate, cond=cond)[0]
    node = _row_means((sample.node - target.node) ** 2)
    pair = _row_means((sample.pair - target.pair) ** 2)
    return _per_molecule(node, pair, x_k.graph).mean()


#: teacher pairs of the regression term are drawn and saved this many molecules at a time (a stopped run
#: loses at most one such chunk of the teacher's sampling)
PAIR_CHUNK = 100


@torch.no_grad()
def teacher_pairs(diffusion: Any, teacher: torch.nn.Module, graph: Any, steps: int,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Pairs for :func:`regression_loss` on molecules of ``graph``'s sizes: a noise z_T from the prior and
    the teacher's deterministic endpoint for it (DDIM at η = 0 in ``steps`` trailing steps, noise 1,
    self-conditioning fed as the sampler feeds it), on the CPU: ``{"ptr" [B + 1], "z_node", "z_pair",
    "x_node", "x_pair", "valid" [B] bool}``. ``valid``: the endpoint is stable and connected by the honest
    rule (:func:`molediff.restarts.honest_check`); only those are regressed on."""
    from molediff.diffusion.samplers import sample
    from molediff.guidance import sampling_denoiser
    from molediff.restarts import honest_check

    z = diffusion.prior(graph, generator)
    x = sample(sampling_denoiser(diffusion, teacher, None, 1.0, None), z, diffusion.schedule, num_steps=steps, eta=0.0,
               generator=generator, noise_scale=1.0)
    valid = honest_check(diffusion, x)[2]
    return {"ptr": graph.ptr.cpu(), "z_node": z.node.cpu(), "z_pair": z.pair.cpu(), "x_node": x.node.cpu(),
            "x_pair": x.pair.cpu(), "valid": torch.as_tensor(valid)}


def regression_loss(diffusion: Any, student: torch.nn.Module, z: MolState, target: MolState, steps: int,
                    generator: torch.Generator | None = None, first: bool = False, spacing: str = "trailing") -> torch.Tensor:
    """DMD's regression term on teacher pairs (:func:`teacher_pairs`): the student's deterministic chain
    (DDIM at η = 0 in its ``steps`` steps on its ``spacing`` grid, self-conditioning fed as the sampler feeds it) from the
    pairs' noise ``z`` to a step k drawn uniformly from ``generator``, without gradient, then its x̂_0 there,
    with gradient, against the teacher's endpoint ``target``: the squared error per molecule (atoms' and
    pairs' rows as the other losses weigh them), averaged. A scalar. ``first``: k is always 0, the
    student's first estimate from the pure noise, where a molecule's layout (one piece or two) is
    decided; the same at η 0 and η 1, so it does not pull the later, stochastic steps towards a mean."""
    grid = diffusion.schedule.set_timesteps(steps, spacing).tolist()
    k = 0 if first else int(torch.randint(len(grid), (1,), generator=generator))
    x, estimate = _chain(diffusion, student, z, grid, k, 0.0)
    pred = diffusion.predict(student, x, _at(z.graph, grid[k], z.device), self_cond=estimate)[0]
    node = _row_means((pred.node - target.node) ** 2)
    pair = _row_means((pred.pair - target.pair) ** 2)
    return _per_molecule(node, pair, z.graph).mean()


#: the noise levels at which the discriminator compares training molecules with student samples, as
#: fractions of T: where a molecule's chemistry and layout are still legible (above ~0.6 T both look like noise)
GAN_LEVELS = (0.0, 0.5)
#: the discriminator head's learning rate: it learns from scratch, on features of a fake denoiser that starts
#: trained and moves at the run's (much lower) rate
DISC_LR = 1e-4


def fake_features(diffusion: Any, fake: nn.Module, z: MolState, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fake denoiser's last-layer states for the noisy state ``z`` at timesteps ``t`` [B] (no
    self-conditioning estimate, no condition): atoms' ``[|V|, H]`` and pairs' ``[|P|, pair_hidden]`` or None
    (:meth:`molediff.models.egnn.EGNNDenoiser.features`)."""
    net = getattr(fake, "module", fake)  # DistributedDataParallel holds the network as .module
    if not hasattr(net, "features"):
        raise ValueError(f"the adversarial term reads a denoiser's features; {type(net).__name__} has none")
    inputs = diffusion.network_inputs(z, t, None, None)
    return net.features(inputs.h, inputs.pos, inputs.graph, inputs.pair, x_cond=inputs.x_cond)


class Discriminator(nn.Module):
    """Training molecule or student sample? The fake denoiser's features of a noisy state → one logit per
    molecule [B] (positive: real), DMD2's form (Yin et al. 2024b: a classifier on the fake diffusion model's
    features).

    The fake denoiser starts as the teacher and is fitted online to the student's samples, so its last-layer
    atom and pair states (:func:`fake_features`) already encode a molecule's chemistry at the noise level it is
    read at, and they follow the student as it moves; a discriminator learnt on raw states from scratch was
    too weak to help (benchmarks/README.md, the twelfth session). This head pools them per molecule (sum / 10
    and mean, :func:`~molediff.models.readout.pool_per_molecule`), appends t / T and maps them through two
    layers. Only the head learns from the adversarial loss: the fake's own weights keep to its denoising
    loss, on which the matching direction relies. Invariant to rotations, reflections, translations and atom
    order, as the features are.

    Args: ``hidden`` the fake's atom-state width H, ``pair_hidden`` its pair-state width (0: atoms only),
    ``T`` the schedule's timesteps, ``width`` the head's."""

    def __init__(self, hidden: int, pair_hidden: int, T: int, width: int = 64) -> None:
        super().__init__()
        self.T = T
        self.head = nn.Sequential(nn.Linear(2 * (hidden + pair_hidden) + 1, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, h: torch.Tensor, e: torch.Tensor | None, graph: Any, t: torch.Tensor) -> torch.Tensor:
        """``h`` [|V|, H] and ``e`` [|P|, pair_hidden] or None (:func:`fake_features`), ``graph`` their
        molecules, ``t`` [B] their timesteps → logits [B]."""
        from molediff.models.readout import pool_per_molecule

        pooled = [pool_per_molecule(h, graph.batch, graph.num_graphs)]
        if e is not None:
            pooled.append(pool_per_molecule(e, graph.pair_batch, graph.num_graphs))
        pooled.append((t.to(h.dtype) / self.T)[:, None])
        return self.head(torch.cat(pooled, dim=1)).squeeze(1)


def _gan_levels(diffusion: Any, n: int, generator: torch.Generator | None, device: Any) -> torch.Tensor:
    """Timesteps [n] drawn uniformly from :data:`GAN_LEVELS` × T."""
    T = diffusion.schedule.num_train_timesteps
    return torch.randint(int(GAN_LEVELS[0] * T), int(GAN_LEVELS[1] * T), (n,), generator=generator).to(device)


def gan_generator_loss(diffusion: Any, disc: nn.Module, fake: nn.Module, sample: MolState,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The student's adversarial loss: softplus(−D) averaged over molecules (non-saturating), for its samples
    ``sample`` (with gradient) noised to t' ∈ :data:`GAN_LEVELS` × T and read by ``fake``
    (:func:`fake_features`). The gradient reaches the student through the fake's inputs; the fake's weights
    get none (they keep to the denoising loss)."""
    t = _gan_levels(diffusion, sample.num_graphs, generator, sample.device)
    noisy = diffusion.add_noise(sample, sample.noise_like(generator), t)
    held = [p for p in fake.parameters() if p.requires_grad]
    for p in held:
        p.requires_grad_(False)
    try:
        h, e = fake_features(diffusion, fake, noisy, t)
    finally:
        for p in held:
            p.requires_grad_(True)
    return F.softplus(-disc(h, e, noisy.graph, t)).mean()


def discriminator_loss(diffusion: Any, disc: nn.Module, fake: nn.Module, real: MolState, sample: MolState,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The discriminator's logistic loss on training molecules ``real`` and student samples ``sample``
    (detached; the same molecule sizes), each noised to its own t' ∈ :data:`GAN_LEVELS` × T and read by
    ``fake`` without gradient (only the head learns). Returns ``{"total", "accuracy"}`` (the share of both
    told apart, detached)."""
    out = {}
    logits = []
    for x in (real, sample.detach()):
        t = _gan_levels(diffusion, x.num_graphs, generator, x.device)
        z = diffusion.add_noise(x, x.noise_like(generator), t)
        with torch.no_grad():
            h, e = fake_features(diffusion, fake, z, t)
        logits.append(disc(h, e, z.graph, t))
    out["total"] = F.softplus(-logits[0]).mean() + F.softplus(logits[1]).mean()
    out["accuracy"] = 0.5 * ((logits[0] > 0).float().mean() + (logits[1] < 0).float().mean()).detach()
    return out
