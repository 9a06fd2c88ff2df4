"""Exponential moving average of a network's weights: the weights that are sampled (one helper for the
molecule trainer and the image demo)."""

from __future__ import annotations

import copy

import torch


class EMA:
    """``ema.model`` is an averaged copy of a network. The effective decay ramps up as
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the random initialisation does not
    dominate early weights; ``num_updates`` is part of a run's state (set it when resuming)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, num_updates: int = 0) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = num_updates

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
