"""The domain-agnostic DDPM core shared by the molecule and image backends.

Names are imported on first use (PEP 562), so that the torch-free sampler table
(:mod:`molediff.diffusion.sampler_table`, the CLI's choices) can be read without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "epsilon_loss": "molediff.diffusion.losses",
    "NoiseSchedule": "molediff.diffusion.schedule",
    "ddpm_sample": "molediff.diffusion.samplers",
    "ddim_sample": "molediff.diffusion.samplers",
    "dpm_solver_sample": "molediff.diffusion.samplers",
    "sample": "molediff.diffusion.samplers",
    "check_sampler": "molediff.diffusion.samplers",
    "SAMPLERS": "molediff.diffusion.sampler_table",
    "SAMPLER_TABLE": "molediff.diffusion.sampler_table",
    "SPACINGS": "molediff.diffusion.sampler_table",
    "Sampler": "molediff.diffusion.sampler_table",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'molediff.diffusion' has no attribute {name!r}")
