"""Complete molecules from a heavy-atom model: hydrogens placed from the heavy-atom geometry and the
model's own hydrogen counts.

A heavy-atom model generates, per heavy atom, its element, formal charge, position and number of
attached hydrogens, and the bonds between heavy atoms. :func:`place_hydrogens` adds exactly the
generated number of hydrogens to each atom (RDKit ``AddHs(addCoords=True)``, from the hybridisation the
written bonds imply), then optionally relaxes the hydrogens alone with MMFF94 (heavy atoms held
fixed), so each record is a complete molecule. Nothing is filled in: an atom whose valence the counts
leave open stays open, and the honest model-bond rule scores it as generated.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem

from molediff.chem.rdkit_mol import kekule_bonds
from molediff.chem.model_bonds import written_molecule
from molediff.chem.rdkit_mol import symbols_of

#: iterations of the hydrogen-only MMFF relaxation (heavy atoms fixed): a few dozen suffice, as only
#: the hydrogens' torsions and small angle corrections move
RELAX_ITERATIONS = 200


class CompleteMolecule(NamedTuple):
    """A molecule with its hydrogens: ``symbols`` [n + h], ``pos`` [n + h, 3] Å (heavy atoms first, in
    their order, then the hydrogens), ``bonds`` ``(src, dst, order)`` Kekulé, ``charges`` [n + h], and
    ``relaxed`` (whether the hydrogen-only MMFF relaxation ran)."""

    symbols: list[str]
    pos: np.ndarray
    bonds: tuple[np.ndarray, np.ndarray, np.ndarray]
    charges: np.ndarray
    relaxed: bool


def place_hydrogens(symbols: Sequence[str], pos: np.ndarray, src: np.ndarray, dst: np.ndarray, order: np.ndarray,
                    charges: np.ndarray, hydrogens: np.ndarray, relax: bool = True) -> CompleteMolecule:
    """Add ``hydrogens`` [n] hydrogens to the heavy atoms ``symbols`` [n] at ``pos`` [n, 3] Å with bonds
    ``(src, dst, order)`` (local indices, Kekulé orders) and formal ``charges`` [n]. ``relax``: MMFF94 on
    the hydrogens only, where the molecule sanitizes and MMFF has parameters (else AddHs' positions)."""
    mol = written_molecule(symbols, src, dst, order, charges, np.asarray(pos, dtype=np.float64), hydrogens)
    mol.UpdatePropertyCache(strict=False)
    with rdBase.BlockLogs():
        try:
            Chem.SetHybridization(mol)
            full = Chem.AddHs(mol, addCoords=True)
        except Exception:  # noqa: BLE001 - RDKit raises on some broken geometries: the molecule is still written
            full = _hydrogens_by_rule(mol)
    relaxed = relax and _relax_hydrogens(full)
    (s, d, o), q, _ = kekule_bonds(full)
    return CompleteMolecule(symbols_of(full), full.GetConformer().GetPositions(), (s, d, o), q, relaxed)


def _hydrogens_by_rule(mol: Chem.Mol) -> Chem.Mol:
    """``mol`` with its explicit hydrogen counts added as atoms at 1.0 Å from their atom, pointing away
    from its neighbours (spread on a cone when several): the fallback where RDKit cannot place them (a
    degenerate geometry makes ``AddHs(addCoords=True)`` raise), so a generated molecule is never lost."""
    full = Chem.AddHs(mol, addCoords=False)
    conf = full.GetConformer()
    x = np.array(conf.GetPositions(), dtype=np.float64)
    rng = np.random.default_rng(0)
    for atom in mol.GetAtoms():
        i = atom.GetIdx()
        hs = [n.GetIdx() for n in full.GetAtomWithIdx(i).GetNeighbors() if n.GetAtomicNum() == 1 and n.GetIdx() >= mol.GetNumAtoms()]
        heavy = [n.GetIdx() for n in atom.GetNeighbors()]
        away = x[i] - x[heavy].mean(0) if heavy else rng.normal(size=3)
        if np.linalg.norm(away) < 1e-3 and heavy:  # the atom sits between its neighbours (a straight chain)
            away = np.cross(x[heavy[0]] - x[i], rng.normal(size=3))
        away = away / (np.linalg.norm(away) or 1.0)
        side = np.cross(away, rng.normal(size=3))
        side = side / (np.linalg.norm(side) or 1.0)
        for k, h in enumerate(hs):
            turn = 2 * np.pi * k / max(len(hs), 1)
            other = np.cross(away, side)
            d = away * (1.0 if len(hs) == 1 else 0.5) + (np.cos(turn) * side + np.sin(turn) * other) * (0.0 if len(hs) == 1 else 0.85)
            conf.SetAtomPosition(h, (x[i] + d / np.linalg.norm(d)).tolist())
    return full


def _relax_hydrogens(mol: Chem.Mol) -> bool:
    """MMFF94 minimisation of the hydrogens of ``mol`` (in place), heavy atoms fixed; False where the
    molecule does not sanitize or MMFF lacks parameters (the positions are then left as they are)."""
    if not any(atom.GetAtomicNum() == 1 for atom in mol.GetAtoms()):
        return False  # nothing to relax (and MMFF refuses a system with every atom fixed)
    probe = Chem.Mol(mol)
    with rdBase.BlockLogs():
        try:
            Chem.SanitizeMol(probe)
        except Exception:  # noqa: BLE001 - RDKit's sanitization exceptions: an invalid molecule
            return False
        props = AllChem.MMFFGetMoleculeProperties(probe)
        if props is None:
            return False
        ff = AllChem.MMFFGetMoleculeForceField(probe, props)
        if ff is None:
            return False
        for atom in probe.GetAtoms():
            if atom.GetAtomicNum() > 1:
                ff.AddFixedPoint(atom.GetIdx())
        try:
            ff.Minimize(maxIts=RELAX_ITERATIONS)
        except RuntimeError:  # RDKit's invariant violations on degenerate geometries: keep AddHs' positions
            return False
    conf, new = mol.GetConformer(), probe.GetConformer()
    for i in range(mol.GetNumAtoms()):
        conf.SetAtomPosition(i, new.GetAtomPosition(i))
    return True


__all__ = ["CompleteMolecule", "RELAX_ITERATIONS", "place_hydrogens"]
