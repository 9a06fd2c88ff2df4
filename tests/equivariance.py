"""The equivariance check used by the tests: random rotation, reflection and translation in float64."""

from __future__ import annotations

from typing import Callable

import torch
from e3nn import o3

PosFeatFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def random_isometry(reflect: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q [3, 3], shift [3]) in float64: a random rotation, times −1 (parity) when ``reflect``."""
    torch.manual_seed(seed)
    Q = o3.rand_matrix(dtype=torch.float64)
    if reflect:
        Q = -Q  # e3nn's parity: inversion through the origin, det = −1
    return Q, torch.randn(3, dtype=torch.float64) * 3.0


def assert_e3_equivariant(fn: PosFeatFn, pos: torch.Tensor, atol: float = 1e-8, translation_invariant_vectors: bool = True) -> None:
    """Check that ``fn(pos) -> (vectors [n, 3], invariants [n, k])`` is E(3)-equivariant.

    Under pos ↦ pos Qᵀ + s (Q a rotation or rotoreflection): vectors ↦ vectors Qᵀ (they are
    differences, so the shift drops out) and invariants stay the same. Runs in float64.
    """
    pos = pos.double()
    vec, inv = fn(pos)
    for reflect in (False, True):
        for seed in range(3):
            Q, shift = random_isometry(reflect, seed)
            vec2, inv2 = fn(pos @ Q.T + (shift if translation_invariant_vectors else 0))
            torch.testing.assert_close(vec2, vec @ Q.T, atol=atol, rtol=0)
            torch.testing.assert_close(inv2, inv, atol=atol, rtol=0)
