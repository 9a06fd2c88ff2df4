"""The arithmetic a network samples in: float32, or bfloat16 matrix products where the processor has them.

Sampling only: training always runs in float32. Under ``bfloat16`` the network runs inside
``torch.autocast``, which computes its matrix products (linear layers) in bfloat16 and leaves the rest
(sums, normalisations, the position update's differences) in the precision of their inputs; its outputs
are handed back in float32, so the diffusion's own arithmetic (the schedule, the DDIM step, local
restarts) is unchanged. On a CPU with native bfloat16 matrix units (Intel AMX, AVX512-BF16) a drug-like
sampling step is about 2× cheaper at the same molecule quality (benchmarks/README.md, "sampling on
two threads, and bfloat16 sampling"); on one without, bfloat16 is emulated and slower than float32, so
``auto`` keeps float32 there.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from molediff.config import PRECISIONS


def native_bfloat16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively: a CPU with AMX tiles or AVX512-BF16.
    CUDA devices answer False (bfloat16 sampling is measured on CPUs only; ask for it by name)."""
    if torch.device(device).type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    checks = (getattr(cpu, "_is_amx_tile_supported", None), getattr(cpu, "_is_avx512_bf16_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def resolve_precision(name: str, device: torch.device | str = "cpu") -> str:
    """``name`` (one of :data:`PRECISIONS`) → "float32" or "bfloat16"; "auto" is bfloat16 exactly where
    :func:`native_bfloat16` says so."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return name


class Autocast(nn.Module):
    """``net`` (a :class:`~molediff.models.denoiser.Denoiser`) run under ``torch.autocast`` with ``dtype``;
    its outputs come back in float32. Holds the network only to call it (same parameters, same
    compiled state): wrap it per sampling run, never save it."""

    def __init__(self, net: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype
        self.device_type = next(net.parameters()).device.type  # a wrapper lives for one batch: the net stays put

    def forward(self, *args: Any, **kwargs: Any) -> tuple:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.net(*args, **kwargs)
        return tuple(o.float() if isinstance(o, torch.Tensor) else o for o in out)


__all__ = ["PRECISIONS", "Autocast", "native_bfloat16", "resolve_precision"]
