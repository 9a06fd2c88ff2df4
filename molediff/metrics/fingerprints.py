"""Morgan fingerprints and the two MOSES metrics made of their Tanimoto similarities:
:func:`similarity_to_nearest_neighbour` (SNN) and :func:`internal_diversity` (IntDiv / IntDiv2).
Similarities are computed as float32 matrix blocks of 0/1 bit vectors (:func:`tanimoto_blocks`), so a
generated set is compared with the 176k-molecule MOSES test set without holding the full matrix."""

from __future__ import annotations

import functools
from typing import Any, Iterator, Sequence

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

__all__ = ["FP_BITS", "FP_RADIUS", "internal_diversity", "morgan_fingerprints", "morgan_generator",
           "similarity_to_nearest_neighbour", "tanimoto_blocks"]

#: Morgan fingerprint of SNN / IntDiv (MOSES): radius 2, 1,024 bits.
FP_RADIUS, FP_BITS = 2, 1024


@functools.lru_cache(maxsize=4)
def morgan_generator(radius: int, n_bits: int) -> Any:
    """RDKit's Morgan fingerprint generator of ``radius`` and ``n_bits`` (one per process)."""
    return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)


def morgan_fingerprints(mols: Sequence[Chem.Mol], radius: int = FP_RADIUS, n_bits: int = FP_BITS) -> np.ndarray:
    """``[n, n_bits]`` uint8 0/1 Morgan bit vectors (MOSES: radius 2, 1,024 bits)."""
    gen = morgan_generator(radius, n_bits)
    out = np.zeros((len(mols), n_bits), dtype=np.uint8)
    for i, mol in enumerate(mols):
        out[i] = gen.GetFingerprintAsNumPy(mol)
    return out


def tanimoto_blocks(x: np.ndarray, y: np.ndarray, block_x: int = 2048, block_y: int = 8192) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """Tanimoto similarities of 0/1 fingerprint rows ``x`` [n, b] and ``y`` [m, b] as float32 blocks
    ``(rows of x, rows of y, T)``; two empty fingerprints have similarity 1 (MOSES)."""
    sx = x.sum(1, dtype=np.float32)
    sy = y.sum(1, dtype=np.float32)
    for j in range(0, len(y), block_y):
        yb = y[j : j + block_y].astype(np.float32)
        syb = sy[j : j + block_y]
        for i in range(0, len(x), block_x):
            tp = x[i : i + block_x].astype(np.float32) @ yb.T
            den = sx[i : i + block_x, None] + syb[None, :]
            den -= tp
            empty = den == 0
            if empty.any():
                den[empty] = 1.0
                tp[empty] = 1.0
            tp /= den
            yield slice(i, i + len(tp)), slice(j, j + len(syb)), tp


def similarity_to_nearest_neighbour(gen_fps: np.ndarray, ref_fps: np.ndarray, weights: np.ndarray | None = None) -> float:
    """SNN: mean over generated fingerprints of the largest Tanimoto similarity to any reference
    fingerprint (0/1 arrays ``[n, b]`` and ``[m, b]``, computed in float32 blocks). ``weights``: the
    multiplicity of each generated row (the mean is then over the expanded set)."""
    gen_fps, ref_fps = np.asarray(gen_fps), np.asarray(ref_fps)
    if len(gen_fps) == 0 or len(ref_fps) == 0:
        return float("nan")
    best = np.zeros(len(gen_fps), dtype=np.float32)
    for rows, _, t in tanimoto_blocks(gen_fps, ref_fps):
        np.maximum(best[rows], t.max(1), out=best[rows])
    w = np.ones(len(best)) if weights is None else np.asarray(weights, dtype=np.float64)
    return float(np.sum(best * w) / np.sum(w))


def internal_diversity(fps: np.ndarray, p: int = 1, weights: np.ndarray | None = None) -> float:
    """IntDiv_p as the MOSES code computes it: ``1 − mean_i (mean_j T(i, j)^p)^(1/p)`` over all ordered
    pairs of the set, each molecule with itself included (for p = 1 this is the paper's
    ``1 − mean_ij T``; for p = 2 the code takes the root per molecule before averaging, the paper's
    formula after). ``weights``: multiplicity of each row (duplicates)."""
    fps = np.asarray(fps)
    if len(fps) == 0:
        return float("nan")
    w = np.ones(len(fps)) if weights is None else np.asarray(weights, dtype=np.float64)
    acc = np.zeros(len(fps), dtype=np.float64)
    for rows, cols, t in tanimoto_blocks(fps, fps):
        if p != 1:
            t = t**p
        acc[rows] += t.astype(np.float64) @ w[cols]
    per_molecule = (acc / w.sum()) ** (1.0 / p)
    return float(1.0 - np.sum(per_molecule * w) / w.sum())
