"""Distances between distributions (numpy only): shared by the QM9 metrics and the drug-like ones."""

from __future__ import annotations

import numpy as np


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 (earth mover's) distance between the empirical distributions of samples ``a`` and
    ``b`` (1D), ``∫ |F_a(x) − F_b(x)| dx`` evaluated exactly on the merged sorted samples (as
    ``scipy.stats.wasserstein_distance``). Units are those of the samples; ``nan`` if either is empty."""
    a = np.sort(np.asarray(a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(b, dtype=np.float64).ravel())
    if a.size == 0 or b.size == 0:
        return float("nan")
    grid = np.sort(np.concatenate([a, b]))
    widths = np.diff(grid)
    cdf_a = np.searchsorted(a, grid[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, grid[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * widths))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance ``½ Σ |p − q|`` between two histograms (normalised here; the shorter
    is zero-padded)."""
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    n = max(p.size, q.size)
    p = np.pad(p, (0, n - p.size))
    q = np.pad(q, (0, n - q.size))
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


__all__ = ["total_variation", "wasserstein1"]
