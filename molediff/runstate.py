"""Run state: what a training run is made of on disk and how a run starts, resumes or starts from a model.

A run folder holds ``checkpoint.pt`` (everything to continue exactly), ``ema_model.pt`` (the EMA weights
as a model file), ``config.json`` and ``log.jsonl``. :func:`open_run` decides, in one place, what a new,
resumed (``--resume``) or warm-started (``--init-from``) run trains with; :data:`MAY_CHANGE` (with
:func:`model_shape`, the fields a warm start keeps unless asked, its network block's named by its
architecture) is the one rule for which settings a continued run may change, and anything else asked for
is refused by name.
"""

from __future__ import annotations

import dataclasses

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from molediff.checkpoint import config_of, load_model_file, safe_torch_load
from molediff.config import TrainConfig
from molediff.errors import UserError

CHECKPOINT = "checkpoint.pt"
EMA_MODEL = "ema_model.pt"
LOG = "log.jsonl"
#: the config a new run started with, written before anything else (see :func:`mark_started`)
STARTED = "started.json"


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    """Where a run keeps the EMA weights of its evaluation at ``step`` (its learning curve, re-scorable)."""
    return Path(run_dir) / "snapshots" / f"ema_step{step:07d}.pt"


#: what a continued run may change. Everything else is fixed by the run (``--resume``) or by the model
#: it starts from (``--init-from``), and asking to change it is refused with the field's name.
#: ``--init-from`` may also add parts (charges, bonds), self-conditioning, conditions or fragments: the new parts and inputs start
#: fresh (inputs at zero), the rest is copied.
MAY_CHANGE = {
    # batch_size is per rank: a run continued on another number of ranks trains on batch_size × ranks
    # molecules a step from then on (pass --batch-size to keep the global batch it had)
    "resume": ("max_steps", "max_minutes", "clock", "threads", "compile", "checkpoint_minutes", "eval_every_steps",
               "eval_samples", "eval_sample_steps", "lr", "batch_size", "batch_pairs", "diffusion.atom_weight", "diffusion.charge_weight",
               "diffusion.bond_weight", "diffusion.condition_dropout", "distill_gan", "distill_regression", "distill_pairs",
               "distill_regression_first", "distill_keep", "distill_keep_level",
               "distill_fake_updates"),
}
#: what the model started from has and a warm start keeps unless asked otherwise (its parts, inputs and
#: conditions): `--init-from qm9_joint_ema.pt` continues a joint, self-conditioned model as such; with the
#: fields of its network block named by its architecture (:func:`model_shape`)
STATE_SHAPE = ("diffusion.charges", "diffusion.bonds", "diffusion.charge_scale", "diffusion.bond_scale",
               "diffusion.self_condition", "diffusion.conditions", "diffusion.condition_dropout", "diffusion.fragments",
               "diffusion.max_hydrogens", "diffusion.hydrogen_scale", "diffusion.bond_orders", "diffusion.valence_feedback",
               "diffusion.ring_feedback")
#: a warm start takes its vocabulary from its own data (new elements' columns start at zero, elements
#: the data lacks are dropped), unless given
VOCABULARY = ("diffusion.elements", "diffusion.formal_charges", "diffusion.hydrogen_weight")
MAY_CHANGE["init_from"] = MAY_CHANGE["resume"] + (
    "data", "weight_decay", "ema_decay", "grad_clip", "seed", "valid_molecules", "init_from", "distill_from",
    "distill_steps", "distill_method", "distill_spacing", "diffusion.atom_loss") + STATE_SHAPE + VOCABULARY


def model_shape(config: TrainConfig) -> tuple[str, ...]:
    """What a warm start from a model of ``config`` keeps unless asked otherwise, and may change:
    :data:`STATE_SHAPE` and the fields its network block names as its shape (``SHAPE`` of the
    architecture's parameter block, e.g. the EGNN's pair-state width)."""
    return STATE_SHAPE + tuple(f"model.{name}" for name in type(config.model).SHAPE)


def _flat(config: TrainConfig) -> dict[str, Any]:
    d = config.to_dict()
    out = {k: v for k, v in d.items() if k not in ("model", "diffusion")}
    out.update({f"model.{k}": v for k, v in d["model"].items()})
    out.update({f"diffusion.{k}": v for k, v in d["diffusion"].items()})
    return out


def _unflat(flat: dict[str, Any]) -> TrainConfig:
    d: dict[str, Any] = {"model": {}, "diffusion": {}}
    for k, v in flat.items():
        head, _, tail = k.partition(".")
        if tail:
            d[head][tail] = v
        else:
            d[k] = v
    return TrainConfig.from_dict(d)


def continue_config(base: TrainConfig, asked: TrainConfig, how: str, reference: TrainConfig | None = None) -> TrainConfig:
    """The config of a continued run.

    ``--resume`` ("resume"): the run's own config ``base`` with the changes ``asked`` makes to the fields
    a resumed run may change. ``--init-from`` ("init_from"): the ``asked`` config (a new run: its limits,
    data, batch, ...), except the fields fixed by the source model ``base`` (architecture, schedule,
    parametrisation, part scales), which come from ``base``. A field counts as asked for when it
    differs from ``reference`` (what the caller started from: the run's config for ``--resume``, the
    defaults for ``--init-from``); asking to change a fixed field raises :class:`UserError` naming it.
    """
    b, a = _flat(base), _flat(asked)
    r = _flat(reference if reference is not None else base)
    if how == "resume":  # an empty vocabulary field means "from the data": the run's own, not a change
        a.update({k: b[k] for k in VOCABULARY if a[k] == []})
    shape = model_shape(base) if how == "init_from" else ()
    allowed = MAY_CHANGE[how] + shape
    refused = sorted(k for k, v in a.items() if k not in allowed and v != r.get(k) and v != b.get(k))
    if refused:
        where = "this run" if how == "resume" else "the model it starts from"
        raise UserError(f"--{how.replace('_', '-')}: fixed by {where}: {', '.join(refused)}; drop those options "
                        "or start a fresh run")
    def pick(k: str) -> Any:
        if k not in allowed or (k in shape and a[k] == r[k]):
            return b[k]
        return a[k]

    return _unflat({k: pick(k) for k in b})


@dataclass
class RunStart:
    """How a run starts: its ``config`` (validated), the ``checkpoint`` it resumes (or None), the
    ``init`` source ``(weights, source config, metadata)`` it starts from (or None), and the learning
    rate it had before a resume (``lr_before``, for the log)."""

    config: TrainConfig
    checkpoint: dict[str, Any] | None = None
    init: tuple[dict, TrainConfig, dict] | None = None
    lr_before: float | None = None


def open_run(config: TrainConfig | None, run_dir: str | Path, resume: bool, check_log: bool = True) -> RunStart:
    """Read what a run in ``run_dir`` starts from and check the request against it.

    ``resume``: the folder's checkpoint, with the changes ``config`` may make (:data:`MAY_CHANGE`);
    ``config`` None means the run's own. Otherwise a new run: refused if the folder already holds a run
    (a checkpoint, or a log when ``check_log``), and if ``config.init_from`` names a model file, its
    architecture and recipe with the changes allowed. Raises :class:`UserError` with the reason.
    """
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    if resume and not ckpt_path.exists() and (run_dir / STARTED).exists():
        # the run was stopped before its first checkpoint (e.g. while a fresh machine built the data
        # cache): carry on from step 0 with the config it started with, and the changes a resume may make
        try:
            started = TrainConfig.from_dict(json.loads((run_dir / STARTED).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"--resume: {run_dir / STARTED} is unreadable ({exc}); start a fresh run") from None
        print(f"--resume: {run_dir} has no checkpoint yet (stopped before the first one); starting it from step 0")
        again = continue_config(started, config or started, "resume")
        return open_run(again, run_dir, resume=False, check_log=False)
    if resume:
        if not ckpt_path.exists():
            raise UserError(f"--resume: no checkpoint at {ckpt_path}")
        state = safe_torch_load(ckpt_path)
        if not isinstance(state, dict) or "model" not in state or "config" not in state:
            raise UserError(f"{ckpt_path} is not a molediff training checkpoint")
        saved = config_of(state["config"], ckpt_path)
        return RunStart(continue_config(saved, config or saved, "resume").validate(), checkpoint=state, lr_before=saved.lr)
    if config is None:
        raise UserError("a new run needs a config")
    if ckpt_path.exists():
        raise UserError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
    if check_log and (run_dir / LOG).exists():
        raise UserError(f"{run_dir} already holds a run's log ({LOG}) but no checkpoint: pass --resume if "
                        "it is the same run, or choose another --out (nothing there is overwritten)")
    if config.distill_from and not config.init_from:  # a student starts as a copy of its teacher
        config = dataclasses.replace(config, init_from=config.distill_from)
    if not config.init_from:
        return RunStart(config.validate())
    return _warm_start(config)


def _warm_start(config: TrainConfig) -> RunStart:
    weights, src, meta = load_model_file(config.init_from)
    config = continue_config(src, config, "init_from", reference=TrainConfig())
    # the network block's own rules for growing from the source (an EGNN's appended layers)
    config = dataclasses.replace(config, model=config.model.warm_start(src.model))
    return RunStart(config.validate(), init=(weights, src, meta))


def mark_started(config: TrainConfig, run_dir: str | Path) -> None:
    """Record the config a new run starts with (before its data is loaded, which on a fresh machine can
    take minutes), so ``--resume`` of a run stopped before its first checkpoint can carry on."""
    from molediff.atomic import atomic_write

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / STARTED, json.dumps(config.to_dict(), indent=2) + "\n")
