"""Training losses of the DDPM core."""

from __future__ import annotations

import torch


def epsilon_loss(
    eps_pred: torch.Tensor,
    eps: torch.Tensor,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error between predicted and true noise (Ho et al.'s L_simple).

    Args:
        eps_pred, eps: ``[B, ...]`` predictions and targets.
        mask: broadcastable to ``eps`` (1 = real entry); padded entries do not count.
        weight: ``[B]`` per-sample weights (e.g. a weighting over noise levels).

    Returns the scalar mean over samples of the per-sample mean squared error.
    """
    sq = (eps_pred - eps) ** 2
    if mask is not None:
        mask = mask.expand_as(sq).to(sq.dtype)
        per_sample = (sq * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)
    else:
        per_sample = sq.flatten(1).mean(1)
    if weight is not None:
        per_sample = per_sample * weight
    return per_sample.mean()
