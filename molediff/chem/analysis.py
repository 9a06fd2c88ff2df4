"""Per-molecule RDKit analysis used by :mod:`molediff.metrics`: validity, SMILES, fragments, ring sizes,
and descriptor properties (QED, Crippen logP, molecular weight: :func:`descriptor_values`, the one
place they are computed), plus 2D depiction grids."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from molediff.atomic import atomic_write_binary
from rdkit import Chem, rdBase
from rdkit.Chem import QED, Crippen, Descriptors, Lipinski, rdMolDescriptors

from molediff.chem.rdkit_mol import build_molecule, check_validity, largest_fragment, mol_from_bonds

__all__ = ["CONDITION_DESCRIPTORS", "DESCRIPTORS", "DESCRIPTOR_NAMES", "MoleculeAnalysis", "analyse_molecule",
           "condition_values", "descriptor_values", "draw_grid", "molecule_properties", "outside_ranges",
           "smiles_condition_values"]

#: RDKit descriptors by name: QED, Crippen logP, molecular weight (g/mol).
DESCRIPTORS: dict[str, Callable[[Chem.Mol], float]] = {"qed": QED.qed, "logp": Crippen.MolLogP, "mol_wt": Descriptors.MolWt}
#: Descriptors computed by :func:`molecule_properties` (keys of its result).
DESCRIPTOR_NAMES: tuple[str, ...] = tuple(DESCRIPTORS)
#: The drug-like conditioning properties (:data:`molediff.conditioning.DRUGLIKE_PROPERTIES`, by their
#: ``column``): the RDKit function behind each.
CONDITION_DESCRIPTORS: dict[str, Callable[[Chem.Mol], float]] = {
    "qed": QED.qed, "logp": Crippen.MolLogP, "mw": Descriptors.MolWt, "tpsa": rdMolDescriptors.CalcTPSA,
    "hbd": Lipinski.NumHDonors, "hba": Lipinski.NumHAcceptors, "rotb": rdMolDescriptors.CalcNumRotatableBonds,
    "arom": rdMolDescriptors.CalcNumAromaticRings,
}


@dataclass
class MoleculeAnalysis:
    """RDKit view of one molecule. ``valid``/``strict_valid``/``smiles``/``num_fragments`` as in
    :class:`molediff.chem.rdkit_mol.ValidityResult`; ``ring_sizes``: sizes of the SSSR rings of the
    sanitized molecule (valid only); ``properties``: :data:`DESCRIPTOR_NAMES` of the largest fragment
    (valid only, when requested and computable)."""

    valid: bool
    strict_valid: bool
    smiles: str | None
    num_fragments: int
    ring_sizes: tuple[int, ...] = ()
    properties: dict[str, float] | None = field(default=None)


def descriptor_values(mol: Chem.Mol, functions: Mapping[str, Callable[[Chem.Mol], float]] = DESCRIPTORS) -> dict[str, float]:
    """``{name: function(molecule without its hydrogens)}`` for a sanitized molecule, NaN for each
    function RDKit fails on (all NaN when the hydrogens cannot be removed)."""
    values = dict.fromkeys(functions, float("nan"))
    with rdBase.BlockLogs():
        try:
            heavy = Chem.RemoveHs(mol) if any(a.GetAtomicNum() == 1 for a in mol.GetAtoms()) else mol
        except Exception:  # noqa: BLE001
            return values
        for name, fn in functions.items():
            try:
                values[name] = float(fn(heavy))
            except Exception:  # noqa: BLE001 - descriptor code raises assorted errors on odd molecules
                pass
    return values


def condition_values(symbols: Sequence[str], src: np.ndarray, dst: np.ndarray, order: np.ndarray, charges: np.ndarray,
                     hydrogens: np.ndarray | None = None, columns: Sequence[str] = tuple(CONDITION_DESCRIPTORS)) -> np.ndarray:
    """``[len(columns)]`` float64: the drug-like conditioning properties (:data:`CONDITION_DESCRIPTORS`
    keys ``columns``) of one molecule given as arrays (its own Kekulé bonds and charges; ``hydrogens``
    [n]: attached hydrogen counts of a heavy-atom molecule, else its hydrogens are atoms); NaN
    everywhere when it does not sanitize, NaN for a descriptor RDKit fails on."""
    from molediff.chem.model_bonds import written_molecule
    from molediff.chem.rdkit_mol import sanitize

    mol = sanitize(written_molecule(list(symbols), src, dst, order, charges, None, hydrogens))
    if mol is None:
        return np.full(len(columns), np.nan)
    values = descriptor_values(mol, {c: CONDITION_DESCRIPTORS[c] for c in columns})
    return np.array([values[c] for c in columns], dtype=np.float64)


def smiles_condition_values(smiles: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """``[len(smiles), len(columns)]`` float64: the drug-like conditioning properties
    (:data:`CONDITION_DESCRIPTORS` keys ``columns``) of molecules given as SMILES; a row of NaN where the
    SMILES does not parse, NaN where a descriptor fails."""
    functions = {c: CONDITION_DESCRIPTORS[c] for c in columns}
    out = np.full((len(smiles), len(columns)), np.nan)
    with rdBase.BlockLogs():
        for i, text in enumerate(smiles):
            mol = Chem.MolFromSmiles(text)
            if mol is not None:
                values = descriptor_values(mol, functions)
                out[i] = [values[c] for c in columns]
    return out


def outside_ranges(atom_type: np.ndarray, charge: np.ndarray, ptr: np.ndarray, src: np.ndarray, dst: np.ndarray,
                   order: np.ndarray, hydrogens: np.ndarray | None = None, *, ranges: Mapping[str, tuple[float, float]],
                   molecules: np.ndarray | None = None) -> np.ndarray:
    """``[B]`` bool: the molecules of a stacked batch as written (arguments as
    :func:`molediff.chem.model_bonds.model_bond_stability`) with a property outside its range, ``ranges``
    {:data:`CONDITION_DESCRIPTORS` key: (lo, hi)}, bounds included; only those marked in ``molecules``
    [B] bool (default: all). A molecule that does not sanitize, or one a descriptor fails on, is not marked
    (its validity is another rule's)."""
    from molediff.chem.model_bonds import written_molecules
    from molediff.chem.rdkit_mol import sanitize

    out = np.zeros(len(ptr) - 1, dtype=bool)
    functions = {c: CONDITION_DESCRIPTORS[c] for c in ranges}
    which = None if molecules is None else np.flatnonzero(molecules).tolist()
    for m, mol in written_molecules(atom_type, charge, ptr, src, dst, order, None, hydrogens, which):
        mol = sanitize(mol)
        if mol is None:
            continue
        values = descriptor_values(mol, functions)
        out[m] = any(not lo <= values[c] <= hi for c, (lo, hi) in ranges.items() if not math.isnan(values[c]))
    return out


def molecule_properties(mol: Chem.Mol) -> dict[str, float] | None:
    """QED, Crippen logP and molecular weight (g/mol) of a sanitized molecule (:func:`descriptor_values`),
    or ``None`` when RDKit cannot compute them all."""
    values = descriptor_values(mol)
    return None if any(math.isnan(v) for v in values.values()) else values


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
