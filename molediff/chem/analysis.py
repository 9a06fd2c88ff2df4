"""Per-molecule RDKit analysis used by :mod:`molediff.metrics`: validity, SMILES, fragments, ring sizes,
and descriptor properties (QED, Crippen logP, molecular weight), plus 2D depiction grids."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from molediff.atomic import atomic_write_binary
from rdkit import Chem, rdBase
from rdkit.Chem import QED, Crippen, Descriptors

from molediff.chem.rdkit_mol import build_molecule, check_validity, mol_from_bonds

__all__ = ["PROPERTY_NAMES", "MoleculeAnalysis", "analyse_molecule", "draw_grid", "largest_fragment", "molecule_properties"]

#: Descriptors computed by :func:`molecule_properties` (keys of its result).
PROPERTY_NAMES: tuple[str, ...] = ("qed", "logp", "mol_wt")


@dataclass
class MoleculeAnalysis:
    """RDKit view of one molecule. ``valid``/``strict_valid``/``smiles``/``num_fragments`` as in
    :class:`molediff.chem.rdkit_mol.ValidityResult`; ``ring_sizes``: sizes of the SSSR rings of the
    sanitized molecule (valid only); ``properties``: :data:`PROPERTY_NAMES` of the largest fragment
    (valid only, when requested and computable)."""

    valid: bool
    strict_valid: bool
    smiles: str | None
    num_fragments: int
    ring_sizes: tuple[int, ...] = ()
    properties: dict[str, float] | None = field(default=None)


def largest_fragment(mol: Chem.Mol) -> Chem.Mol:
    """The fragment of ``mol`` with most atoms (the first such, as EDM); ``mol`` itself if connected."""
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    return mol if len(frags) <= 1 else max(frags, key=lambda m: m.GetNumAtoms())


def molecule_properties(mol: Chem.Mol) -> dict[str, float] | None:
    """QED, Crippen logP and molecular weight (g/mol) of a sanitized molecule (hydrogens removed first),
    or ``None`` when RDKit cannot compute them."""
    with rdBase.BlockLogs():
        try:
            heavy = Chem.RemoveHs(mol)
            return {"qed": float(QED.qed(heavy)), "logp": float(Crippen.MolLogP(heavy)), "mol_wt": float(Descriptors.MolWt(heavy))}
        except Exception:  # noqa: BLE001 - descriptor code raises assorted errors on odd molecules
            return None


def analyse_molecule(
    symbols: Sequence[str],
    pos_angstrom: np.ndarray,
    bonds: str = "lookup",
    edges: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    properties: bool = False,
) -> MoleculeAnalysis:
    """Analyse one molecule (``symbols`` ``[n]``, ``pos_angstrom`` ``[n, 3]`` Å).

    With ``bonds="lookup"``, precomputed lookup ``edges`` ``(src, dst, order)`` (local indices) skip
    the distance computation. ``properties`` also computes QED / logP / MolWt (~1 ms per molecule).
    """
    if bonds == "lookup" and edges is not None:
        mol = mol_from_bonds(symbols, *edges)
    else:
        mol = build_molecule(symbols, pos_angstrom, bonds=bonds)
    result = check_validity(mol)
    if not result.valid or result.mol is None:
        return MoleculeAnalysis(False, False, None, result.num_fragments)
    clean = result.mol
    rings = tuple(len(r) for r in clean.GetRingInfo().AtomRings())
    props = molecule_properties(largest_fragment(clean)) if properties else None
    return MoleculeAnalysis(True, result.strict_valid, result.smiles, result.num_fragments, rings, props)


def draw_grid(
    molecules: Sequence[tuple[Sequence[str], np.ndarray]],
    path: str | os.PathLike,
    bonds: str = "lookup",
    legends: Sequence[str] | None = None,
    per_row: int = 6,
    size: int = 250,
) -> Path:
    """Write a PNG grid of 2D depictions (largest fragment, hydrogens hidden) of ``molecules``
    (``(symbols, pos Å)`` each); molecules that fail sanitization are drawn as perceived, unsanitized."""
    from rdkit.Chem import Draw, rdDepictor

    mols = []
    for symbols, pos in molecules:
        mol = build_molecule(symbols, pos, bonds=bonds)
        result = check_validity(mol)
        with rdBase.BlockLogs():
            if result.valid and result.mol is not None:
                shown = largest_fragment(result.mol)
                try:
                    shown = Chem.RemoveHs(shown)
                except Exception:  # noqa: BLE001
                    pass
            else:
                shown = Chem.Mol(mol)
                shown.UpdatePropertyCache(strict=False)
            shown = Chem.Mol(shown)
            shown.RemoveAllConformers()
            rdDepictor.Compute2DCoords(shown)
        mols.append(shown)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Draw.MolsToGridImage(
        mols, molsPerRow=max(1, min(per_row, len(mols))), subImgSize=(size, size), legends=list(legends) if legends else None
    )
    atomic_write_binary(path, lambda f: image.save(f, format="PNG"))
    return path
