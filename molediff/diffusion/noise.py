"""Device-safe random draws: the one place the DDPM core makes Gaussian noise.

A ``torch.Generator`` lives on one device; ``torch.randn(..., generator=g, device=other)`` fails when
they differ (a CPU generator, the usual way to get reproducible samples, with CUDA tensors). Here the
draw happens on the generator's own device and the result moves, so the same seed gives the same
numbers whichever device the model runs on.
"""

from __future__ import annotations

from typing import Any

import torch


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None, device: Any = None,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal noise of ``shape`` drawn on ``generator``'s device, returned on ``device``."""
    source = generator.device if generator is not None else (device or "cpu")
    return torch.randn(tuple(shape), generator=generator, device=source, dtype=dtype).to(device or source)


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None = None, device: Any = None) -> torch.Tensor:
    """Uniform integers in [0, high) drawn on ``generator``'s device, returned on ``device``."""
    source = generator.device if generator is not None else (device or "cpu")
    return torch.randint(0, high, tuple(shape), generator=generator, device=source).to(device or source)


def noise_like(x: Any, generator: torch.Generator | None = None) -> Any:
    """Fresh noise shaped like ``x``: a tensor, or a state object with its own ``noise_like`` (which
    knows its parts' subspaces, e.g. zero centre of mass for molecular positions)."""
    if isinstance(x, torch.Tensor):
        return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x.noise_like(generator)
