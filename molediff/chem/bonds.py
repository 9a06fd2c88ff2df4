"""Distance-based ("lookup") bond perception, numpy only (no RDKit).

This is exactly the rule of the equivariant-diffusion literature (EDM, ``get_bond_order``), so that
stability / validity numbers are comparable with published tables. With ``d`` the interatomic
distance in pm and the typical lengths of :mod:`molediff.elements`:

* no bond unless ``d < single + 10``;
* double if the pair has a double length and ``d < double + 5``;
* triple if the pair (also) has a triple length and ``d < triple + 3``.

Pairs without a single length (only possible outside the QM9 vocabulary) never bond. Distances are
computed in float64 from the given coordinates (EDM uses float32; the two agree except for pairs
within ~1e-5 pm of a threshold).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from molediff.elements import (
    BOND_DOUBLE_PM,
    BOND_MARGINS_PM,
    BOND_SINGLE_PM,
    BOND_TRIPLE_PM,
    ELEMENTS,
    LOOKUP_VALENCE,
    SYMBOL_TO_INDEX,
)

__all__ = [
    "OVERLAP_DISTANCE",
    "closest_pair",
    "BondList",
    "THRESHOLDS_PM",
    "LOOKUP_VALENCE_MASK",
    "valence_mask",
    "valence_allowed",
    "lookup_bond_orders",
    "lookup_bonds_stacked",
    "symbols_to_types",
    "valence_sums",
]


def _threshold_table() -> np.ndarray:
    """``[3, E, E]`` float64 thresholds in pm (length + margin) for single / double / triple bonds,
    indexed by :data:`ELEMENTS` index; ``-inf`` where the pair has no such bond."""
    n = len(ELEMENTS)
    table = np.full((3, n, n), -np.inf)
    for k, (lengths, margin) in enumerate(zip((BOND_SINGLE_PM, BOND_DOUBLE_PM, BOND_TRIPLE_PM), BOND_MARGINS_PM)):
        for (a, b), length in lengths.items():
            table[k, SYMBOL_TO_INDEX[a], SYMBOL_TO_INDEX[b]] = length + margin
    return table


#: ``[3, E, E]`` bond thresholds in pm (typical length + margin), ``-inf`` where no such bond exists.
THRESHOLDS_PM: np.ndarray = _threshold_table()
THRESHOLDS_PM.setflags(write=False)

def valence_mask(valences) -> int:
    """A set of allowed valences as a bit mask (bit v set: valence v allowed); 0 allows nothing."""
    return sum(1 << int(v) for v in valences)


def valence_allowed(mask: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """``[N]`` bool: each valence ``sums`` [N] (bond-order sums) is in its atom's allowed set ``mask`` [N]
    (bit masks from :func:`valence_mask`). The one test behind both stability rules."""
    sums = np.asarray(sums, dtype=np.int64)
    inside = (sums >= 0) & (sums < 62)
    return inside & (((np.asarray(mask, dtype=np.int64) >> np.clip(sums, 0, 61)) & 1) == 1)


#: ``[E]`` bit masks of the lookup rule's allowed valences per atom type (index into ELEMENTS).
LOOKUP_VALENCE_MASK: np.ndarray = np.array([valence_mask(LOOKUP_VALENCE[s]) for s in ELEMENTS], dtype=np.int64)
LOOKUP_VALENCE_MASK.setflags(write=False)


#: The one definition of the bond modes: how bonds are had for scoring. "lookup" (EDM's distance table:
#: the published convention) and "rdkit" (rdDetermineBonds) perceive them from the geometry; "model"
#: reads the bonds and formal charges written with the molecule (a model's own), scored by the honest
#: rule of :mod:`molediff.chem.model_bonds`.
BOND_MODES: tuple[str, ...] = ("lookup", "rdkit", "model")
PERCEIVED_BOND_MODES: tuple[str, ...] = ("lookup", "rdkit")


def check_bond_mode(bonds: str, allowed: tuple[str, ...] = PERCEIVED_BOND_MODES) -> None:
    """Raise ``ValueError`` unless ``bonds`` is one of ``allowed``."""
    if bonds not in allowed:
        raise ValueError(f"bonds must be one of {allowed}, got {bonds!r}")


class BondList(NamedTuple):
    """Bonds of stacked molecules: global atom indices ``src < dst`` ``[E]`` and ``order`` ``[E]`` (1-3),
    sorted by molecule then ``src`` then ``dst``."""

    src: np.ndarray
    dst: np.ndarray
    order: np.ndarray


def symbols_to_types(symbols: Sequence[str] | np.ndarray) -> np.ndarray:
    """Element symbols ``[n]`` -> atom-type indices ``[n]`` (int64) into :data:`ELEMENTS`.

    Raises ``ValueError`` naming any symbol outside the vocabulary."""
    try:
        return np.fromiter((SYMBOL_TO_INDEX[str(s)] for s in symbols), dtype=np.int64, count=len(symbols))
    except KeyError:
        unknown = sorted({str(s) for s in symbols} - set(SYMBOL_TO_INDEX))
        raise ValueError(f"elements {unknown} are outside the vocabulary {list(ELEMENTS)}") from None


def _orders(dist_pm: np.ndarray, ti: np.ndarray, tj: np.ndarray) -> np.ndarray:
    """Bond orders (int8, 0-3) for distances ``dist_pm`` between atoms of types ``ti``/``tj`` (broadcast)."""
    single = dist_pm < THRESHOLDS_PM[0][ti, tj]
    double = single & (dist_pm < THRESHOLDS_PM[1][ti, tj])
    triple = double & (dist_pm < THRESHOLDS_PM[2][ti, tj])
    return single.astype(np.int8) + double + triple


def lookup_bond_orders(symbols: Sequence[str] | np.ndarray, pos_angstrom: np.ndarray) -> np.ndarray:
    """Lookup bond-order matrix of one molecule.

    Args:
        symbols: ``[n]`` element symbols (from :data:`ELEMENTS`).
        pos_angstrom: ``[n, 3]`` coordinates in Å.

    Returns:
        ``[n, n]`` int64 symmetric matrix of bond orders (0 none, 1 single, 2 double, 3 triple),
        zero diagonal.
    """
    types = symbols_to_types(symbols)
    pos = np.asarray(pos_angstrom, dtype=np.float64).reshape(len(types), 3)
    dist_pm = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)) * 100.0
    orders = _orders(dist_pm, types[:, None], types[None, :]).astype(np.int64)
    np.fill_diagonal(orders, 0)
    return orders


def lookup_bonds_stacked(
    atom_type: np.ndarray, pos_angstrom: np.ndarray, ptr: np.ndarray, max_pairs_per_chunk: int = 1_000_000
) -> BondList:
    """Lookup bonds of many stacked molecules at once (vectorised: molecules of similar size are padded
    into chunks of at most ``max_pairs_per_chunk`` atom pairs).

    Args:
        atom_type: ``[N]`` int indices into :data:`ELEMENTS`.
        pos_angstrom: ``[N, 3]`` coordinates in Å.
        ptr: ``[M + 1]`` atom offsets of the M molecules.

    Returns:
        :class:`BondList` with global atom indices.
    """
    atom_type = np.asarray(atom_type, dtype=np.int64)
    pos = np.asarray(pos_angstrom, dtype=np.float64)
    ptr = np.asarray(ptr, dtype=np.int64)
    counts = np.diff(ptr)
    order_by_size = np.argsort(counts, kind="stable")
    src_parts, dst_parts, ord_parts = [], [], []
    start = 0
    m = len(counts)
    while start < m:
        # grow the chunk (sizes ascend) while the padded pair count stays within budget
        stop = start + 1
        while stop < m:
            cand = min(m, start + 2 * (stop - start))
            if (cand - start) * int(counts[order_by_size[cand - 1]]) ** 2 > max_pairs_per_chunk:
                break
            stop = cand
        nmax = int(counts[order_by_size[stop - 1]])
        mols = order_by_size[start:stop]
        start = stop
        if nmax < 2:
            continue
        slot = np.arange(nmax)
        valid = slot[None, :] < counts[mols][:, None]  # [B, nmax]
        idx = np.where(valid, ptr[mols][:, None] + slot[None, :], 0)  # [B, nmax] global atom index
        p = pos[idx]  # [B, nmax, 3]
        t = atom_type[idx]  # [B, nmax]
        diff = p[:, :, None, :] - p[:, None, :, :]
        dist_pm = np.sqrt((diff * diff).sum(-1)) * 100.0  # [B, nmax, nmax]
        orders = _orders(dist_pm, t[:, :, None], t[:, None, :])
        upper = np.triu(np.ones((nmax, nmax), dtype=bool), k=1)
        orders *= (valid[:, :, None] & valid[:, None, :] & upper[None]).astype(np.int8)
        b, i, j = np.nonzero(orders)
        src_parts.append(idx[b, i])
        dst_parts.append(idx[b, j])
        ord_parts.append(orders[b, i, j].astype(np.int64))
    if not src_parts:
        empty = np.zeros(0, dtype=np.int64)
        return BondList(empty, empty.copy(), empty.copy())
    src = np.concatenate(src_parts)
    dst = np.concatenate(dst_parts)
    order = np.concatenate(ord_parts)
    sort = np.lexsort((dst, src))  # global indices grow with molecule index
    return BondList(src[sort], dst[sort], order[sort])


def valence_sums(num_atoms: int, bonds: BondList) -> np.ndarray:
    """``[N]`` int64 sum of bond orders per atom."""
    return np.bincount(bonds.src, bonds.order, minlength=num_atoms).astype(np.int64) + np.bincount(
        bonds.dst, bonds.order, minlength=num_atoms
    ).astype(np.int64)


#: Two atoms closer than this (Å) overlap: no chemical bond is shorter than H2's 0.74 Å, so such a
#: geometry is broken (duplicated coordinates, a clash), not a molecule.
OVERLAP_DISTANCE = 0.5


def closest_pair(pos: np.ndarray, within: float = OVERLAP_DISTANCE) -> tuple[int, int, float] | None:
    """The closest pair ``(i, j, distance Å)`` (``i < j``) of atoms of ``pos`` [n, 3] (finite) nearer
    than ``within``, or ``None`` when no two atoms are that close. A sweep along x: only atoms within
    ``within`` of each other in x are compared, so a molecule costs about n · (atoms in a slab) distances."""
    pos = np.asarray(pos, dtype=np.float64).reshape(-1, 3)
    n = len(pos)
    if n < 2:
        return None
    order = np.argsort(pos[:, 0], kind="stable")
    p = pos[order]
    ends = np.searchsorted(p[:, 0], p[:, 0] + within, side="right")  # atoms order[i+1 : ends[i]] are near in x
    best: tuple[int, int, float] | None = None
    idx = np.arange(n)
    for k in range(1, int((ends - idx).max())):
        a = idx[: n - k][idx[: n - k] + k < ends[: n - k]]
        if not len(a):
            break
        d = np.linalg.norm(p[a + k] - p[a], axis=1)
        m = int(np.argmin(d))
        if d[m] < within and (best is None or d[m] < best[2]):
            i, j = sorted((int(order[a[m]]), int(order[a[m] + k])))
            best = (i, j, float(d[m]))
    return best
