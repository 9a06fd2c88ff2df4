"""Checks for people writing a new denoiser network (or any function of 3D coordinates).

:func:`assert_equivariant` is the project's equivariance test, in the spirit of e3nn's
``assert_equivariant``: it applies random rotations, rotoreflections and translations in float64 and
checks that vector outputs turn with the input and invariant outputs stay put. A new network for
:mod:`molediff.models` should pass it before it is trained::

    from molediff.testing import assert_equivariant

    assert_equivariant(lambda pos: (net_positions(pos) - pos, net_features(pos)), pos)
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["assert_equivariant", "random_isometry"]

PosFeatFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def random_isometry(reflect: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Q [3, 3], shift [3])`` in float64: a uniformly random rotation (Haar measure, from the QR
    decomposition of a Gaussian matrix), times −1 (inversion through the origin, det −1) when
    ``reflect``, and a random shift of a few Å."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=g))
    q = q * torch.sign(torch.diagonal(r))  # a unique, uniformly distributed orthogonal matrix
    if torch.det(q) < 0:
        q = -q  # a proper rotation
    if reflect:
        q = -q
    return q, torch.randn(3, dtype=torch.float64, generator=g) * 3.0


def assert_equivariant(fn: PosFeatFn, pos: torch.Tensor, atol: float = 1e-8, translation_invariant_vectors: bool = True,
                       trials: int = 3) -> None:
    """Check that ``fn(pos) -> (vectors [n, 3], invariants [n, k])`` is E(3)-equivariant.

    Under pos ↦ pos Qᵀ + s (Q a rotation or rotoreflection, ``trials`` of each): vectors ↦ vectors Qᵀ
    (they are differences, so the shift drops out; ``translation_invariant_vectors`` False applies no
    shift, for functions of absolute positions) and invariants stay the same, to ``atol``. Runs in
    float64 (``pos`` is converted). Raises ``AssertionError`` naming the mismatch.
    """
    pos = pos.double()
    vec, inv = fn(pos)
    for reflect in (False, True):
        for seed in range(trials):
            Q, shift = random_isometry(reflect, seed)
            vec2, inv2 = fn(pos @ Q.T + (shift if translation_invariant_vectors else 0))
            torch.testing.assert_close(vec2, vec @ Q.T, atol=atol, rtol=0,
                                       msg=lambda m: f"vectors do not turn with the input ({'reflected' if reflect else 'rotated'}): {m}")
            torch.testing.assert_close(inv2, inv, atol=atol, rtol=0,
                                       msg=lambda m: f"invariants change ({'reflected' if reflect else 'rotated'}): {m}")


#: the name the tests used before the helper moved into the package
assert_e3_equivariant = assert_equivariant
