"""``molediff train``: the command-line layer over :mod:`molediff.training` (options from the typed
config, one line of help each; torch is imported only to run)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from molediff.config import HELP, DiffusionConfig, ModelConfig, TrainConfig
from molediff.errors import UserError


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in _str_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_dataclass_options(parser: argparse.ArgumentParser, cls, prefix: str, title: str, exclude: tuple[str, ...] = ()) -> None:
    group = parser.add_argument_group(title)
    for f in fields(cls):
        if f.name in ("model", "diffusion", *exclude):
            continue
        name = f"--{prefix}{f.name.replace('_', '-')}"
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        key = f"{prefix.rstrip('-')}.{f.name}" if prefix else f.name
        default = f.default if f.default != "" else "none"
        if kind.startswith("dict"):  # filled by training (condition statistics), not an option
            continue
        if kind.startswith("list"):
            group.add_argument(name, dest=f"{prefix.replace('-', '_')}{f.name}", default=None,
                               type=_int_list if kind == "list[int]" else _str_list,
                               help=f"{HELP.get(key, '')} (default: {','.join(map(str, f.default_factory())) or 'none'})".strip())
            continue
        if kind == "bool":
            group.add_argument(name, dest=f"{prefix.replace('-', '_')}{f.name}", action=argparse.BooleanOptionalAction,
                               default=None, help=f"{HELP.get(key, '')} (default: {'on' if default else 'off'})".strip())
            continue
        typ = {"int": int, "float": float, "str": str}[kind]
        group.add_argument(name, dest=f"{prefix.replace('-', '_')}{f.name}", type=typ, default=None,
                           help=f"{HELP.get(key, '')} (default: {default})".strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Train the E(3)-equivariant diffusion model. Writes checkpoint.pt (resumable), ema_model.pt "
                     "(EMA weights, usable by 'molediff sample --checkpoint'), config.json and log.jsonl to --out.")
    p.add_argument("--out", default="runs/qm9", help="run directory (default: runs/qm9)")
    p.add_argument("--config", help="a config.json to start from (command-line options override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    _add_dataclass_options(p, TrainConfig, "", "training")
    _add_dataclass_options(p, ModelConfig, "model-", "model")
    _add_dataclass_options(p, DiffusionConfig, "diffusion-", "diffusion")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    base = args.config
    if base is None and args.resume and (Path(args.out) / "config.json").exists():
        # options not given keep the run's own values (its learning rate, say), not the defaults
        base = Path(args.out) / "config.json"
    config = TrainConfig.load_json(base) if base else TrainConfig()
    for target, cls, prefix in ((config, TrainConfig, ""), (config.model, ModelConfig, "model_"), (config.diffusion, DiffusionConfig, "diffusion_")):
        for f in fields(cls):
            value = getattr(args, prefix + f.name, None)
            if value is not None and f.name not in ("model", "diffusion"):
                setattr(target, f.name, value)
    return config


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if not (args.resume or config.init_from or config.distill_from):
        # a fresh run is checked at once; a continued or warm-started one once it is merged with the run or
        # model it continues (the parts it inherits decide, e.g. --diffusion-valence-feedback needs the
        # source's self-conditioning), which happens before any data is loaded too
        config.validate()
    import torch

    from molediff.training import train

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available")
    last = train(config, args.out, resume=args.resume, device=args.device, progress=not args.no_progress)
    return 130 if last.get("interrupted") else 0
