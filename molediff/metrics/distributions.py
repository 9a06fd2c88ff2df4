"""Distributions of generated molecules beside a reference: their bond lengths per bond type and bond
angles per angle type (lookup bonds, vectorised), Wasserstein-1 per type, and the comparison of a
sample's atom types, sizes, ring sizes and QED / logP / MolWt with reference statistics
(:func:`molediff.metrics.distribution_statistics` builds those; :func:`molediff.metrics.evaluate_molecules`
reports the comparison). numpy only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from molediff.chem.bonds import BondList
from molediff.chem.distances import total_variation, wasserstein1
from molediff.elements import BOND_ORDERS, ELEMENTS

if TYPE_CHECKING:
    from molediff.metrics import EvaluationDetails

__all__ = ["MIN_COUNT_FOR_W1", "bond_angle_samples", "bond_length_samples", "bond_type_counts", "bond_type_tv",
           "distribution_metrics", "fraction"]

#: Bond/angle types with fewer samples than this (in generated or reference) get no W1 entry.
MIN_COUNT_FOR_W1 = 5

_BOND_SYMBOL = {1: "-", 2: "=", 3: "#"}
_ORDERS = len(BOND_ORDERS)  # bond types key the bond-type names (the bonds scored here are Kekulé: 1..3)
# element order inside type names: C, N, O, F, then H ("C-H", "N-H", "C=O", "H-C-H")
_PRIORITY = np.array([ELEMENTS.index(e) if e != "H" else len(ELEMENTS) for e in ELEMENTS])


def _pair_name(t1: np.ndarray, t2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order two type arrays by element priority (C, N, O, F, H)."""
    swap = _PRIORITY[t1] > _PRIORITY[t2]
    return np.where(swap, t2, t1), np.where(swap, t1, t2)


def _bond_type_keys(atom_type: np.ndarray, bonds: BondList) -> tuple[np.ndarray, dict[int, str]]:
    """``[E]`` an integer key of every bond's type and each key's name (``"C-H"``, ``"C=O"``, ``"C#N"``, ...)."""
    a, b = _pair_name(atom_type[bonds.src], atom_type[bonds.dst])
    key = (a * len(ELEMENTS) + b) * _ORDERS + np.asarray(bonds.order, dtype=np.int64)
    names = {}
    for k in np.unique(key).tolist():
        ta, tb, o = k // _ORDERS // len(ELEMENTS), k // _ORDERS % len(ELEMENTS), k % _ORDERS
        # an aromatic bond (order 4, which Kekulé-decoded molecules do not hold) as SMARTS writes it
        names[k] = f"{ELEMENTS[ta]}{_BOND_SYMBOL.get(int(o), ':')}{ELEMENTS[tb]}"
    return key, names


def bond_length_samples(atom_type: np.ndarray, pos: np.ndarray, bonds: BondList) -> dict[str, np.ndarray]:
    """Bond lengths (Å, float64) grouped by bond type name (``"C-H"``, ``"C=O"``, ``"C#N"``, ...)."""
    if len(bonds.src) == 0:
        return {}
    lengths = np.linalg.norm(pos[bonds.src] - pos[bonds.dst], axis=1)
    key, names = _bond_type_keys(atom_type, bonds)
    return {name: lengths[key == k] for k, name in names.items()}


def bond_type_counts(atom_type: np.ndarray, bonds: BondList) -> dict[str, int]:
    """How many bonds of each type name (``"C-H"``, ``"C=O"``, ...) ``bonds`` hold (Kekulé orders 1–3)."""
    if len(bonds.src) == 0:
        return {}
    key, names = _bond_type_keys(atom_type, bonds)
    counts = np.bincount(np.searchsorted(sorted(names), key), minlength=len(names))
    return {names[k]: int(c) for k, c in zip(sorted(names), counts.tolist())}


def bond_type_tv(counts: dict[str, int], reference: dict[str, int]) -> float:
    """Total variation between two bond-type distributions (:func:`bond_type_counts`, each normalised
    over its bonds); NaN if either has none."""
    names = sorted(set(counts) | set(reference))
    return total_variation([counts.get(n, 0) for n in names], [reference.get(n, 0) for n in names])


def bond_angle_samples(atom_type: np.ndarray, pos: np.ndarray, bonds: BondList) -> dict[str, np.ndarray]:
    """Bond angles (degrees, float64) at every atom with two or more bonded neighbours, grouped by
    ``"X-Y-Z"`` (Y the central atom, X/Z ordered C, N, O, F, H); vectorised over all atoms."""
    n = len(atom_type)
    if len(bonds.src) == 0:
        return {}
    center = np.concatenate([bonds.src, bonds.dst])
    nbr = np.concatenate([bonds.dst, bonds.src])
    order = np.argsort(center, kind="stable")
    center, nbr = center[order], nbr[order]
    degree = np.bincount(center, minlength=n)
    start = np.cumsum(degree) - degree
    rank = np.arange(len(center)) - start[center]
    table = np.full((n, int(degree.max())), -1, dtype=np.int64)
    table[center, rank] = nbr
    centers, ends_a, ends_b = [], [], []
    for i in range(table.shape[1]):
        for j in range(i + 1, table.shape[1]):
            c = np.nonzero(table[:, j] >= 0)[0]
            centers.append(c)
            ends_a.append(table[c, i])
            ends_b.append(table[c, j])
    if not centers:
        return {}
    c = np.concatenate(centers)
    a = np.concatenate(ends_a)
    b = np.concatenate(ends_b)
    u = pos[a] - pos[c]
    v = pos[b] - pos[c]
    cos = (u * v).sum(1) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    ta, tb = _pair_name(atom_type[a], atom_type[b])
    e = len(ELEMENTS)
    key = (ta * e + atom_type[c]) * e + tb
    out: dict[str, np.ndarray] = {}
    for k in np.unique(key):
        out[f"{ELEMENTS[k // (e * e)]}-{ELEMENTS[k // e % e]}-{ELEMENTS[k % e]}"] = angles[key == k]
    return out


def _w1_by_type(samples: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-type W1 for types with >= MIN_COUNT_FOR_W1 values on both sides, their sample-count-weighted
    ``mean``, and the ``unmatched`` types (present in samples only) with counts."""
    out: dict[str, Any] = {}
    weights, values = [], []
    unmatched = {}
    for name in sorted(samples, key=lambda k: -len(samples[k])):
        x = samples[name]
        ref = reference.get(name)
        if ref is None or len(ref) < MIN_COUNT_FOR_W1:
            unmatched[name] = int(len(x))
            continue
        if len(x) < MIN_COUNT_FOR_W1:
            continue
        out[name] = wasserstein1(x, ref)
        weights.append(len(x))
        values.append(out[name])
    out["mean"] = float(np.average(values, weights=weights)) if values else float("nan")
    out["unmatched"] = unmatched
    return out


def fraction(num: float, den: float) -> float:
    """``num / den`` as a float, 0 where ``den`` is 0."""
    return float(num) / float(den) if den else 0.0


def _summary(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(x.mean()) if x.size else float("nan"), "std": float(x.std()) if x.size else float("nan"), "n": int(x.size)}


def distribution_metrics(
    atom_type: np.ndarray, ptr: np.ndarray, details: EvaluationDetails, ref: dict[str, Any], n_valid: int
) -> dict[str, Any]:
    """The sample (stacked ``atom_type`` [N], ``ptr`` [M + 1]; its geometry samples, ring sizes and
    properties in ``details``; ``n_valid`` valid molecules) against the reference statistics ``ref``:
    total variations, W1 per bond and angle type, ring sizes per valid molecule, property means."""
    counts = np.bincount(atom_type, minlength=len(ELEMENTS))
    ref_counts = ref["atom_type_counts"]
    sizes = np.bincount(np.diff(ptr))
    ring = {int(s): c / max(1, n_valid) for s, c in sorted(details.ring_sizes.items())}
    all_sizes = sorted(set(ring) | set(ref["ring_sizes"]))
    props = {}
    for name, values in details.properties.items():
        s, r = _summary(values), _summary(ref["properties"].get(name, np.zeros(0)))
        props[name] = {"mean": s["mean"], "std": s["std"], "n": s["n"], "reference_mean": r["mean"], "reference_std": r["std"]}
    return {
        "reference": ref["description"],
        "atom_type_tv": total_variation(counts, ref_counts),
        "atom_type_fraction": {e: fraction(c, counts.sum()) for e, c in zip(ELEMENTS, counts.tolist())},
        "atom_type_fraction_reference": {e: fraction(c, ref_counts.sum()) for e, c in zip(ELEMENTS, ref_counts.tolist())},
        "num_atoms_tv": total_variation(sizes, ref["num_atoms_hist"]),
        "bond_length_w1_angstrom": _w1_by_type(details.bond_lengths, ref["bond_lengths"]),
        "bond_angle_w1_degree": _w1_by_type(details.bond_angles, ref["bond_angles"]),
        "ring_sizes_per_valid_molecule": {str(s): ring.get(s, 0.0) for s in all_sizes},
        "ring_sizes_per_valid_molecule_reference": {str(s): ref["ring_sizes"].get(s, 0.0) for s in all_sizes},
        "ring_size_tv": total_variation([ring.get(s, 0.0) for s in all_sizes], [ref["ring_sizes"].get(s, 0.0) for s in all_sizes])
        if all_sizes
        else float("nan"),
        "properties": props,
    }
