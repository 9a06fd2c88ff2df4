"""Training losses of the DDPM core."""

from __future__ import annotations

import torch


def epsilon_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted and true noise (Ho et al.'s L_simple): the mean over samples
    of the per-sample mean squared error of ``[B, ...]`` predictions ``eps_pred`` and targets ``eps``."""
    return ((eps_pred - eps) ** 2).flatten(1).mean(1).mean()
