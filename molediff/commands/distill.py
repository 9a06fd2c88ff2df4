"""``molediff distill``: a few-step student of a model by progressive distillation, or by distribution
matching with ``--method dmd`` (:mod:`molediff.distill`).

One command per stage: ``--from druglike`` (75 steps) gives a 38-step student; ``--from`` that
student's file gives a 19-step one, and so on. Under the hood it is a training run
(:func:`molediff.training.train` with ``distill_from``/``distill_steps``): resumable with ``--resume``,
checkpointed, torchrun-ready, and its ``ema_model.pt`` is a model file that ``molediff sample
--checkpoint`` runs in its own steps, deterministically (DDIM, η = 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

from molediff.config import BUNDLED_MODELS, DEFAULT_STEPS, DISTILL_METHODS, TrainConfig
from molediff.errors import UserError

#: the student's learning rate unless told otherwise (the druglike and QM9 stages of benchmarks/README.md)
DEFAULT_LR = 1e-4
#: what ``--method dmd`` trains with unless told otherwise: the recipe measured best (benchmarks/README.md,
#: issue 38; ``qm9-fast`` and the drug-like student): 10 steps on the "finish4" grid with the keep term at
#: its four finishing steps, DMD's regression of the first estimate on 2,000 teacher pairs, lr 2e-5. The
#: keep weight applies where the grid has finishing steps (a --distill-spacing without them drops it).
DMD_RECIPE = {"distill_steps": 10, "distill_spacing": "finish4", "distill_keep": 10.0, "distill_regression": 1.0,
              "distill_regression_first": True, "lr": 2e-5}
#: TrainConfig fields this command sets itself (from --from and --steps), or that a student does not use
#: (it samples its checks in its own steps), not offered as options
_OWN = ("distill_from", "distill_steps", "distill_method", "eval_sample_steps")
#: settings of the machine and session that trained the teacher, not of its recipe: a student takes them
#: from the command line or their defaults, never from the teacher
_MACHINE = ("threads", "clock", "compile", "checkpoint_minutes", "max_steps", "max_minutes")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from molediff.commands.train import _add_dataclass_options

    p.description = (
        "Distil a model into a few-step student (progressive distillation, Salimans & Ho 2022): the student starts "
        "as a copy of its teacher and learns to take in one deterministic step the teacher's two. Each stage halves "
        "the steps; a stage's student is the next stage's teacher (--from its ema_model.pt). Writes a training run "
        "to --out (checkpoint.pt, resumable; ema_model.pt, the student: 'molediff sample --checkpoint "
        "OUT/ema_model.pt' samples in its own steps). Other training options (--lr, --batch-size, --max-minutes, "
        "--threads, --compile, ...) are those of 'molediff train'.")
    p.add_argument("--from", dest="teacher", metavar="MODEL",
                   help=f"the teacher: a bundled model ({', '.join(BUNDLED_MODELS)}) or a model file (a student of an "
                        "earlier stage); not needed with --resume")
    p.add_argument("--steps", type=int, default=None,
                   help=f"the student's steps (default: half the teacher's, rounded up: {DEFAULT_STEPS} -> "
                        f"{math.ceil(DEFAULT_STEPS / 2)} -> {math.ceil(math.ceil(DEFAULT_STEPS / 2) / 2)} ...; the teacher "
                        f"is run at twice this; with --method dmd {DMD_RECIPE['distill_steps']})")
    p.add_argument("--method", choices=DISTILL_METHODS, default=None,
                   help="'progressive' (default): one deterministic step of the student for two of the teacher's; it "
                        "samples at eta 0, on the teacher's deterministic path, and each stage halves the steps. 'dmd': "
                        "distribution matching (Yin et al. 2024): the student's own stochastic chain in --steps steps "
                        "(any number) is pushed towards the teacher's distribution through a second denoiser trained on "
                        "the student's samples as it goes (about 4x the cost of a training step); it samples at eta 1. "
                        "The student samples whole molecules: of a teacher trained to grow fragments (druglike) it does "
                        "not grow them. Unless told otherwise it trains with the recipe measured best (benchmarks/README.md, "
                        "issue 38): " + _recipe_text() + ". Experimental: see benchmarks/README.md")
    p.add_argument("--out", required=True, help="run directory of the student")
    p.add_argument("--resume", action="store_true", help="continue the distillation run in --out where it stopped")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    _add_dataclass_options(p, TrainConfig, "", "training", exclude=_OWN)
    # the recipe's settings default to the teacher's, not to a fresh run's
    for action in p._actions:  # noqa: SLF001 - argparse keeps no public list of a parser's actions
        if action.dest == "lr":
            action.help = action.help.rsplit(" (default", 1)[0] + f" (default: {DEFAULT_LR:g}; with --method dmd " \
                                                                  f"{DMD_RECIPE['lr']:g})"
        elif action.dest == "init_from":
            action.metavar = "MODEL"
            action.help = ("start the student from this model file or bundled model instead of a copy of the teacher: a "
                           "student of the same teacher, continued with another recipe (e.g. --distill-spacing finish); "
                           "its step count and training clock carry on")
        elif action.dest in DMD_RECIPE:
            action.help = (action.help or "").rsplit(" (default", 1)[0] + \
                f" (default: with --method dmd {_option_value(DMD_RECIPE[action.dest])}; otherwise the teacher's)"
        elif action.dest in {f.name for f in dataclasses.fields(TrainConfig)} and action.dest not in _MACHINE:
            action.help = (action.help or "").rsplit(" (default", 1)[0] + " (default: the teacher's)"


def _option_value(value) -> str:
    """A recipe value as its option is written."""
    return ("on" if value else "off") if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)


def _recipe_text() -> str:
    """:data:`DMD_RECIPE` as the options that set it."""
    return ", ".join(f"--{name.replace('_', '-')}" + ("" if isinstance(v, bool) else f" {_option_value(v)}")
                     for name, v in DMD_RECIPE.items() if name != "distill_steps")


def _dmd_recipe(config: TrainConfig, steps: int, given: dict) -> dict:
    """The settings of :data:`DMD_RECIPE` a distribution-matching run of ``steps`` steps takes: those the
    command line leaves open, and only where they can work (a grid with finishing steps needs enough
    steps; the keep term needs finishing steps; the regression is not for a conditional teacher, and its
    first-estimate form needs it)."""
    from molediff.diffusion.sampler_table import FINISH_GRIDS
    from molediff.diffusion.schedule import NoiseSchedule

    recipe = {k: v for k, v in DMD_RECIPE.items() if k != "distill_steps" and k not in given}
    if "distill_spacing" in recipe:
        try:  # --steps too few for the recipe's grid: the teacher's evenly spaced steps instead
            NoiseSchedule.from_name(config.diffusion.schedule, config.diffusion.timesteps).set_timesteps(
                steps, recipe["distill_spacing"])
        except ValueError:
            del recipe["distill_spacing"]
    if given.get("distill_spacing", recipe.get("distill_spacing", config.distill_spacing)) not in FINISH_GRIDS:
        recipe.pop("distill_keep", None)  # the keep term acts at finishing steps only
    if config.diffusion.conditions:  # its pairs would be drawn without the conditions the student learns
        recipe.pop("distill_regression", None)
    if not given.get("distill_regression", recipe.get("distill_regression", config.distill_regression)):
        recipe.pop("distill_regression_first", None)
    return recipe


def teacher_path(name: str, option: str = "--from") -> Path:
    """``name`` as a model file (absolute, so that ``--resume`` finds it from anywhere): an existing
    path, else a bundled model's file; refused naming ``option`` where it is neither."""
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    if name in BUNDLED_MODELS:
        from molediff.sampling import bundled_model_path

        return bundled_model_path(name)
    raise UserError(f"{option} {name!r}: no such file, and not a bundled model ({', '.join(BUNDLED_MODELS)})")


def _given(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line (not None)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if f.name not in ("model", "diffusion", *_OWN) and getattr(args, f.name, None) is not None}


def student_config(args: argparse.Namespace) -> TrainConfig:
    """The config of a new distillation run: the teacher's recipe, its steps halved, with the options
    given; refused with the reason where the teacher cannot be distilled."""
    from molediff.checkpoint import load_model_file

    path = teacher_path(args.teacher)
    _, teacher, meta = load_model_file(path)
    # a model file says its steps; a training checkpoint of a student says them in its config
    from molediff.distill import model_steps

    teacher_steps = model_steps(teacher, meta)
    if args.steps is not None:
        steps = args.steps
    else:  # a progressive stage halves the steps; distribution matching jumps at once
        steps = DMD_RECIPE["distill_steps"] if args.method == "dmd" else math.ceil(teacher_steps / 2)
    if steps < 1:
        raise UserError(f"--steps must be ≥ 1, got {steps}")
    if steps >= teacher_steps:
        raise UserError(f"--steps {steps}: a student takes fewer steps than its teacher ({teacher_steps})")
    # the teacher's warm start and its machine's settings are its history, not the student's recipe
    fresh = TrainConfig()
    config = dataclasses.replace(teacher, distill_from=str(path), distill_steps=steps, init_from="", lr=DEFAULT_LR,
                                 distill_method=args.method or "progressive",
                                 **{name: getattr(fresh, name) for name in _MACHINE})
    given = _given(args)
    if config.distill_method == "dmd":  # the measured recipe, where the command line does not say otherwise
        config = dataclasses.replace(config, **_dmd_recipe(config, steps, given))
    config = dataclasses.replace(config, **given)
    if config.init_from:
        config = dataclasses.replace(config, init_from=str(teacher_path(config.init_from, "--init-from")))
    data = config.data
    if data.split(":")[0] != "qm9" and not Path(data).exists():
        said = "--data" if args.data is not None else "the teacher was trained on"
        raise UserError(f"{said} {data}: not on this machine; pass --data with the teacher's training molecules "
                        "(an SDF folder; 'molediff data' builds one)")
    if 2 * steps != teacher_steps and config.distill_method == "progressive":
        print(f"note: the teacher samples in {teacher_steps} steps by default; its student learns its path at "
              f"{2 * steps}")
    return config


def run(args: argparse.Namespace) -> int:
    from molediff.runstate import CHECKPOINT, STARTED

    out = Path(args.out)
    if args.resume:
        if args.teacher is not None or args.steps is not None or args.method is not None:
            raise UserError("--resume continues the run in --out with its own teacher, steps and method: leave out --from, "
                            "--steps and --method")
        saved = out / "config.json"
        if not saved.exists() and (out / STARTED).exists():
            saved = out / STARTED
        if not saved.exists():
            raise UserError(f"--resume: {out} holds no distillation run (no {CHECKPOINT})")
        config = TrainConfig.load_json(saved)
        if not config.distill_from:
            raise UserError(f"--resume: {out} is a training run, not a distillation: continue it with 'molediff train --resume'")
        config = dataclasses.replace(config, **_given(args))
    else:
        if args.teacher is None:
            raise UserError("--from MODEL names the teacher (a bundled model or a model file)")
        config = student_config(args)
    import torch

    from molediff.training import train

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available")
    last = train(config, out, resume=args.resume, device=args.device, progress=not args.no_progress)
    student = out / "ema_model.pt"
    if student.exists():
        print(f"the student ({config.distill_steps} steps): molediff sample --checkpoint {student}"
              + (f"; the next stage: molediff distill --from {student} --out DIR" if config.distill_method == "progressive" else ""))
    return 130 if last.get("interrupted") else 0
