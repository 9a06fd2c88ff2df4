"""Strain of 3D molecules: how far a force field moves them, and the same for RDKit's own conformers.

* :func:`relaxation_metrics` — the force-field relaxation test of "GEOM-Drugs Revisited" (Nikitin et
  al., 2025) with MMFF94 in place of GFN2-xTB: each molecule as written is minimised and compared with
  its input (energy drop, heavy-atom RMSD, changes of bond lengths, angles and torsions).
* :func:`strain_against_etkdg` — the classical baseline beside it: the MMFF94 energy drop of each
  molecule as written and of an ETKDGv3 conformer of the same bond graph, paired molecule by molecule,
  with the drop split by force-field term (bond stretch, angle bend, stretch-bend, out-of-plane,
  torsion, van der Waals, electrostatics), so a user sees whether a model's 3D beats RDKit's and where
  its strain sits.

Molecules are RDKit ``Mol`` objects with a 3D conformer and explicit hydrogens; molecules that do not
sanitize, leave hydrogens implicit, lack MMFF parameters or do not converge are counted apart.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from rdkit import Chem, rdBase

from molediff.chem.rdkit_mol import sanitize

__all__ = ["MMFF_TERMS", "relaxation_metrics", "strain_against_etkdg"]

#: MMFF94's energy terms, in the order of RDKit's ``MMFFMolProperties.SetMMFF<Term>Term`` switches
MMFF_TERMS: tuple[str, ...] = ("Bond", "Angle", "StretchBend", "Oop", "Torsion", "VdW", "Ele")


def _conformer_ok(mol: Chem.Mol) -> bool:
    return mol.GetNumConformers() > 0 and mol.GetConformer().Is3D()


def _prepared(mol: Chem.Mol | None, variant: str) -> tuple[Chem.Mol | None, Any, str | None]:
    """``(sanitized copy, MMFF properties, None)`` of a molecule the force field can take, else
    ``(None, None, reason)`` with the reason's counter name."""
    from rdkit.Chem import rdForceFieldHelpers as ffh

    if mol is None or mol.GetNumAtoms() == 0 or not _conformer_ok(mol):
        return None, None, "num_invalid"
    m = sanitize(mol)
    if m is None:
        return None, None, "num_invalid"
    if any(a.GetNumImplicitHs() > 0 for a in m.GetAtoms()):
        return None, None, "num_missing_hydrogens"
    props = ffh.MMFFGetMoleculeProperties(m, mmffVariant=variant)
    if props is None:
        return None, None, "num_unparametrised"
    return m, props, None


def _minimise(m: Chem.Mol, props: Any, max_iters: int, conf_id: int = -1) -> tuple[float, np.ndarray, np.ndarray] | None:
    """``(energy drop kcal/mol, input positions, relaxed positions)`` [n, 3] Å, or None when MMFF has no
    force field for the molecule or does not converge within ``max_iters``."""
    from rdkit.Chem import rdForceFieldHelpers as ffh

    ff = ffh.MMFFGetMoleculeForceField(m, props, confId=conf_id)
    if ff is None:
        return None
    x0 = np.array(m.GetConformer(conf_id).GetPositions(), dtype=np.float64)
    e0 = ff.CalcEnergy()
    if ff.Minimize(maxIts=max_iters) != 0:
        return None
    x1 = np.asarray(ff.Positions(), dtype=np.float64).reshape(-1, 3)
    return e0 - ff.CalcEnergy(), x0, x1


def _term_drops(m: Chem.Mol, variant: str, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """``[len(MMFF_TERMS)]`` each term's energy at ``x0`` minus at ``x1`` (kcal/mol; they add up to the
    total drop)."""
    from rdkit.Chem import rdForceFieldHelpers as ffh

    out = np.zeros(len(MMFF_TERMS))
    for k, term in enumerate(MMFF_TERMS):
        props = ffh.MMFFGetMoleculeProperties(m, mmffVariant=variant)
        for other in MMFF_TERMS:
            getattr(props, f"SetMMFF{other}Term")(other == term)
        ff = ffh.MMFFGetMoleculeForceField(m, props)
        out[k] = ff.CalcEnergy(x0.ravel().tolist()) - ff.CalcEnergy(x1.ravel().tolist())
    return out


def _each_relaxed(mols: Sequence[Chem.Mol | None], variant: str, max_iters: int, counts: dict[str, int],
                  conf_id: int = -1) -> Iterator[tuple[int, Chem.Mol, Any, tuple[float, np.ndarray, np.ndarray]]]:
    """``(index, prepared molecule, force-field properties, (drop, x0, x1))`` of each molecule that is
    minimised (on a copy: the prepared molecule keeps its input geometry); the others are counted in
    ``counts`` by why (``num_invalid``, ``num_missing_hydrogens``, ``num_unparametrised``,
    ``num_not_converged``)."""
    for k, mol in enumerate(mols):
        m, props, why = _prepared(mol, variant)
        if m is None:
            counts[why] += 1
            continue
        relaxed = _minimise(Chem.Mol(m), props, max_iters, conf_id)
        if relaxed is None:
            counts["num_not_converged"] += 1
            continue
        yield k, m, props, relaxed


def _kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD between point sets ``a`` and ``b`` [n, 3] after optimal superposition (same atom order)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    s[-1] *= d
    msd = max(0.0, (np.sum(a * a) + np.sum(b * b) - 2.0 * s.sum()) / len(a))
    return float(math.sqrt(msd))


def _angle_indices(mol: Chem.Mol) -> np.ndarray:
    rows = []
    for atom in mol.GetAtoms():
        nbrs = [n.GetIdx() for n in atom.GetNeighbors()]
        c = atom.GetIdx()
        rows += [(nbrs[i], c, nbrs[j]) for i in range(len(nbrs)) for j in range(i + 1, len(nbrs))]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


_TORSION_BOND = None


def _torsion_indices(mol: Chem.Mol) -> np.ndarray:
    """Torsions i-j-k-l around every bond j-k whose atoms are neither terminal nor in a triple bond (the
    GEOM-Drugs Revisited selection, ``[!$(*#*)&!D1]~[!$(*#*)&!D1]``), all outer neighbour pairs, i ≠ l."""
    global _TORSION_BOND
    if _TORSION_BOND is None:
        _TORSION_BOND = Chem.MolFromSmarts("[!$(*#*)&!D1]~[!$(*#*)&!D1]")
    rows = []
    for j, k in mol.GetSubstructMatches(_TORSION_BOND, maxMatches=1_000_000):
        left = [n.GetIdx() for n in mol.GetAtomWithIdx(j).GetNeighbors() if n.GetIdx() != k]
        right = [n.GetIdx() for n in mol.GetAtomWithIdx(k).GetNeighbors() if n.GetIdx() != j]
        rows += [(i, j, k, m) for i in left for m in right if i != m]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _angles_deg(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    u = x[idx[:, 0]] - x[idx[:, 1]]
    v = x[idx[:, 2]] - x[idx[:, 1]]
    cos = np.sum(u * v, 1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _dihedrals_deg(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    b0 = x[idx[:, 0]] - x[idx[:, 1]]
    b1 = x[idx[:, 2]] - x[idx[:, 1]]
    b2 = x[idx[:, 3]] - x[idx[:, 2]]
    b1n = b1 / np.linalg.norm(b1, axis=1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, 1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, 1, keepdims=True) * b1n
    return np.degrees(np.arctan2(np.sum(np.cross(b1n, v) * w, 1), np.sum(v * w, 1)))


def _stat(values: list, fn: Callable[[np.ndarray], Any]) -> float | None:
    if not values:
        return None
    arr = np.concatenate(values) if isinstance(values[0], np.ndarray) else np.asarray(values, dtype=np.float64)
    return float(fn(arr)) if arr.size else None


def relaxation_metrics(
    mols: Sequence[Chem.Mol | None], max_iters: int = 2000, variant: str = "MMFF94", conf_id: int = -1
) -> dict[str, Any]:
    """Force-field relaxation test of "GEOM-Drugs Revisited" (Nikitin et al., 2025) with MMFF94: each
    molecule (3D conformer, explicit hydrogens) is minimised and compared with its input.

    Returns the energy drop ``E(input) − E(relaxed)`` in kcal/mol (median, mean), heavy-atom RMSD
    after superposition (Å; median, mean) and the mean absolute change of every bond length (Å), bond
    angle (°) and torsion (°, periodic) pooled over the relaxed molecules (hydrogens included, as the
    paper); per molecule, in input order, ``energy_drops_kcal_mol`` (``None`` where not relaxed). Counted
    apart, not in the statistics: ``num_invalid`` (``None``, fails sanitization or no 3D
    conformer), ``num_missing_hydrogens`` (implicit H: the force field would see a different molecule),
    ``num_unparametrised`` (MMFF has no parameters) and ``num_not_converged`` (no convergence within
    ``max_iters``; the paper drops these too)."""
    drops, rmsds, dbond, dangle, dtors = [], [], [], [], []
    per_molecule: list[float | None] = [None] * len(mols)
    counts = {"num_invalid": 0, "num_missing_hydrogens": 0, "num_unparametrised": 0, "num_not_converged": 0}
    with rdBase.BlockLogs():
        for k, m, props, relaxed in _each_relaxed(mols, variant, max_iters, counts, conf_id):
            drop, x0, x1 = relaxed
            drops.append(drop)
            per_molecule[k] = float(drop)
            heavy = np.array([a.GetAtomicNum() > 1 for a in m.GetAtoms()])
            rmsds.append(_kabsch_rmsd(x1[heavy], x0[heavy]) if heavy.sum() > 0 else 0.0)
            bonds = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in m.GetBonds()], dtype=np.int64).reshape(-1, 2)
            if len(bonds):
                d0 = np.linalg.norm(x0[bonds[:, 0]] - x0[bonds[:, 1]], axis=1)
                d1 = np.linalg.norm(x1[bonds[:, 0]] - x1[bonds[:, 1]], axis=1)
                dbond.append(np.abs(d1 - d0))
            angles = _angle_indices(m)
            if len(angles):
                dangle.append(np.abs(_angles_deg(x1, angles) - _angles_deg(x0, angles)))
            torsions = _torsion_indices(m)
            if len(torsions):
                diff = np.abs(_dihedrals_deg(x1, torsions) - _dihedrals_deg(x0, torsions))
                dtors.append(np.minimum(diff, 360.0 - diff))
    return {
        "num_molecules": len(mols),
        "num_relaxed": len(drops),
        **counts,
        "variant": variant,
        "max_iters": max_iters,
        "energy_drop_median_kcal_mol": _stat(drops, np.median),
        "energy_drop_mean_kcal_mol": _stat(drops, np.mean),
        "heavy_atom_rmsd_median_angstrom": _stat(rmsds, np.median),
        "heavy_atom_rmsd_mean_angstrom": _stat(rmsds, np.mean),
        "bond_length_change_angstrom": _stat(dbond, np.mean),
        "bond_angle_change_degree": _stat(dangle, np.mean),
        "torsion_change_degree": _stat(dtors, np.mean),
        "energy_drops_kcal_mol": per_molecule,
    }


def strain_against_etkdg(mols: Sequence[Chem.Mol | None], seed: int = 0, max_iters: int = 2000,
                         variant: str = "MMFF94", terms: bool = True) -> dict[str, Any]:
    """MMFF94 relaxation drop of each molecule as written beside that of an ETKDGv3 conformer of the same
    bond graph (RDKit's raw embedding, seed ``seed``, no force-field clean-up), on the molecules where both
    relax: the classical baseline a generator's 3D should beat.

    Returns medians and means (kcal/mol) of both (``model_*``, ``etkdg_*``), the share of molecules whose
    own geometry is less strained than ETKDG's (``share_below_etkdg``), with ``terms`` the median drop of
    each MMFF term (:data:`MMFF_TERMS`) for both, and counts: ``num_paired`` and, apart,
    ``num_invalid``, ``num_missing_hydrogens``, ``num_unparametrised``, ``num_not_converged``,
    ``num_not_embedded`` (ETKDG found no conformer). Per-molecule drops are in ``model_drops`` /
    ``etkdg_drops`` (paired, in input order of the paired molecules) and their input indices in ``index``.
    """
    from rdkit.Chem import rdDistGeom

    counts = {"num_invalid": 0, "num_missing_hydrogens": 0, "num_unparametrised": 0, "num_not_converged": 0,
              "num_not_embedded": 0}
    model, etkdg, index, model_terms, etkdg_terms = [], [], [], [], []
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = seed
    with rdBase.BlockLogs():
        for k, m, props, own in _each_relaxed(mols, variant, max_iters, counts):
            e = Chem.Mol(m)
            e.RemoveAllConformers()
            try:
                embedded = rdDistGeom.EmbedMolecule(e, params) >= 0
            except Exception:  # noqa: BLE001 - RDKit raises (e.g. KekulizeException) on some generated graphs
                embedded = False
            if not embedded:
                counts["num_not_embedded"] += 1
                continue
            base = _minimise(e, props, max_iters)
            if base is None:
                counts["num_not_converged"] += 1
                continue
            model.append(own[0])
            etkdg.append(base[0])
            index.append(k)
            if terms:
                model_terms.append(_term_drops(m, variant, own[1], own[2]))
                etkdg_terms.append(_term_drops(m, variant, base[1], base[2]))
    a, b = np.asarray(model), np.asarray(etkdg)
    out: dict[str, Any] = {
        "num_molecules": len(mols),
        "num_paired": len(a),
        **counts,
        "variant": variant,
        "seed": seed,
        "model_drop_median_kcal_mol": float(np.median(a)) if len(a) else None,
        "model_drop_mean_kcal_mol": float(a.mean()) if len(a) else None,
        "etkdg_drop_median_kcal_mol": float(np.median(b)) if len(b) else None,
        "etkdg_drop_mean_kcal_mol": float(b.mean()) if len(b) else None,
        "share_below_etkdg": float((a < b).mean()) if len(a) else None,
        "model_drops": a.tolist(),
        "etkdg_drops": b.tolist(),
        "index": index,
    }
    if terms and model_terms:
        mt, et = np.median(np.stack(model_terms), 0), np.median(np.stack(etkdg_terms), 0)
        out["model_term_drop_median_kcal_mol"] = {t: float(v) for t, v in zip(MMFF_TERMS, mt)}
        out["etkdg_term_drop_median_kcal_mol"] = {t: float(v) for t, v in zip(MMFF_TERMS, et)}
    return out
