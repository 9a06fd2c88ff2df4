"""Checkpoints: atomic writes, integrity checks, and the small EMA-only bundle that ships with the package.

A training checkpoint is one file holding model, EMA, optimiser, step and RNG state (a run can
continue exactly). A *model file* holds only EMA weights plus the config and a SHA-256 of the weights,
which :func:`load_model_file` verifies before use.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch

from molediff._version import __version__
from molediff.atomic import atomic_write_binary
from molediff.config import TrainConfig
from molediff.errors import UserError

#: 2: network weights without the "net." prefix of format 1 (whose diffusion object was a module)
MODEL_FORMAT = 2
READABLE_FORMATS = (1, 2)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (see :mod:`molediff.atomic`)."""
    atomic_write_binary(path, lambda f: torch.save(obj, f))


def safe_torch_load(path: str | Path) -> Any:
    """Load a checkpoint or say clearly why it cannot be loaded (missing, truncated, corrupted, unsafe).

    ``weights_only=True``: PyTorch's restricted unpickler, which builds only tensors and plain
    containers and refuses any other object, so a model file shared by someone else cannot run code.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"checkpoint {path} holds objects other than tensors and plain data; refused, not loaded "
                        f"(a molediff file never does: {str(exc).splitlines()[0][:200]})") from None
    except Exception as exc:
        raise UserError(f"checkpoint {path} is corrupted or not a molediff checkpoint ({type(exc).__name__}: {exc})") from None


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_model_file(path: str | Path, ema_state: dict[str, torch.Tensor], config: TrainConfig, meta: dict[str, Any]) -> None:
    """Write EMA weights (float32) with config, metadata and a checksum; the shippable format."""
    state = {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.cpu().clone() for k, v in ema_state.items()}
    blob = {
        "format": MODEL_FORMAT,
        "molediff_version": __version__,
        "config": config.to_dict(),
        "meta": meta,
        "state_dict": state,
        "sha256": state_dict_digest(state),
    }
    atomic_torch_save(blob, path)


def load_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], TrainConfig, dict[str, Any]]:
    """Read a model file written by :func:`save_model_file` (or the EMA of a training checkpoint), verified."""
    blob = safe_torch_load(path)
    if not isinstance(blob, dict):
        raise UserError(f"{path} is not a molediff model file")
    if "ema" in blob and "config" in blob:  # a full training checkpoint: use its EMA weights
        return blob["ema"], config_of(blob["config"], path), {"step": blob.get("step"), "size_histogram": blob.get("histogram")}
    if blob.get("format") not in READABLE_FORMATS or "state_dict" not in blob:
        raise UserError(f"{path} has model format {blob.get('format')!r}; this molediff reads formats {READABLE_FORMATS}")
    if state_dict_digest(blob["state_dict"]) != blob.get("sha256"):
        raise UserError(f"{path} failed its integrity check (weights do not match their SHA-256); re-download or retrain")
    state = blob["state_dict"]
    if blob["format"] == 1:
        state = {k.removeprefix("net."): v for k, v in state.items()}
    return state, config_of(blob["config"], path), blob.get("meta", {})


def config_of(saved: dict[str, Any], path: str | Path) -> TrainConfig:
    """The config saved in the file at ``path``, refused by name where this molediff cannot use it
    (fields it does not know, a vocabulary outside its tables)."""
    try:
        config = TrainConfig.from_dict(saved)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    try:
        config.diffusion.vocabulary  # noqa: B018 - checks elements, charges and bond orders against the tables
    except ValueError as exc:
        raise UserError(f"{path}: the model's vocabulary is not one this molediff supports: {exc}") from None
    return config
