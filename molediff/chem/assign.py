"""Bond orders and formal charges for a 3D geometry, taken from a SMILES that names the same molecule.

QM9 gives, for every molecule, a B3LYP geometry and the SMILES of that relaxed geometry. The
SMILES fixes bond orders and formal charges (Kekulé form here: single/double/triple, no aromatic
type, so valence sums are exact); the geometry fixes which atom is which. They are joined by a graph
match: the SMILES graph (explicit hydrogens) must map onto the geometry's covalent-radius contacts,
element to element, bond to contact. Strained rings (bicyclo[1.1.1]pentanes, oxetanes bridged
across) have non-bonded contacts short enough to count as covalent, so the geometry's graph may
hold *more* contacts than the SMILES has bonds: the match allows extra contacts and, when several
matches exist, keeps the one whose bonds are shortest relative to covalent radii.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdDetermineBonds

from molediff.chem.rdkit_mol import mol_from_bonds

_ORDER = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}
_PT = Chem.GetPeriodicTable()


class AssignedBonds(NamedTuple):
    """Bonds ``(src[k], dst[k], order[k])`` with src < dst (local atom indices, [E] each), formal charges
    ``[n]`` and ``extra_contacts``: close non-bonded contacts the geometry has beyond the SMILES bonds."""

    src: np.ndarray
    dst: np.ndarray
    order: np.ndarray
    charge: np.ndarray
    extra_contacts: int


def _graph_only(mol: Chem.Mol) -> Chem.Mol:
    """A copy with every bond single and every atom neutral: only elements and connectivity remain."""
    m = Chem.RWMol(mol)
    for b in m.GetBonds():
        b.SetBondType(Chem.BondType.SINGLE)
        b.SetIsAromatic(False)
    for a in m.GetAtoms():
        a.SetFormalCharge(0)
        a.SetIsAromatic(False)
        a.SetNoImplicit(True)
        a.SetNumExplicitHs(0)
    return m


def assign_from_smiles(symbols: Sequence[str], pos: np.ndarray, smiles: str) -> AssignedBonds:
    """Bonds and charges of the geometry (``symbols`` [n], ``pos`` [n, 3] Å) from ``smiles``.

    Raises ``ValueError`` (with the reason) when the SMILES cannot be parsed or kekulized, names
    other atoms, or its graph does not fit the geometry's contacts.
    """
    with rdBase.BlockLogs():
        ref = Chem.MolFromSmiles(smiles)
        if ref is None:
            raise ValueError("SMILES does not parse")
        ref = Chem.AddHs(ref)
        try:
            Chem.Kekulize(ref, clearAromaticFlags=True)
        except Exception as exc:  # noqa: BLE001 - RDKit's KekulizeException
            raise ValueError(f"SMILES cannot be kekulized ({exc})") from None
        if sorted(a.GetSymbol() for a in ref.GetAtoms()) != sorted(symbols):
            raise ValueError("SMILES and geometry have different atoms")
        geo = Chem.RWMol(mol_from_bonds(symbols, [], [], [], pos))
        try:
            rdDetermineBonds.DetermineConnectivity(geo)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"no connectivity from the geometry ({exc})") from None
        if geo.GetNumBonds() < ref.GetNumBonds():
            raise ValueError(f"geometry has {geo.GetNumBonds()} covalent contacts, SMILES {ref.GetNumBonds()} bonds")
        query, target = _graph_only(ref), _graph_only(geo)
        if geo.GetNumBonds() == ref.GetNumBonds():
            matches = target.GetSubstructMatches(query, uniquify=True, maxMatches=1)
        else:
            matches = target.GetSubstructMatches(query, uniquify=False, maxMatches=2000)
        if not matches:
            raise ValueError("the SMILES graph does not fit the geometry's contacts")
    pos = np.asarray(pos, dtype=np.float64)
    radius = np.array([_PT.GetRcovalent(s) for s in symbols])

    def strain(match: tuple[int, ...]) -> float:
        i = np.array([match[b.GetBeginAtomIdx()] for b in ref.GetBonds()])
        j = np.array([match[b.GetEndAtomIdx()] for b in ref.GetBonds()])
        return float((np.linalg.norm(pos[i] - pos[j], axis=1) / (radius[i] + radius[j])).sum())

    match = min(matches, key=strain) if len(matches) > 1 else matches[0]
    src, dst, order = [], [], []
    for b in ref.GetBonds():
        i, j = sorted((match[b.GetBeginAtomIdx()], match[b.GetEndAtomIdx()]))
        src.append(i)
        dst.append(j)
        order.append(_ORDER[b.GetBondType()])
    charge = np.zeros(len(symbols), dtype=np.int64)
    for a in ref.GetAtoms():
        charge[match[a.GetIdx()]] = a.GetFormalCharge()
    return AssignedBonds(np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), np.array(order, dtype=np.int64),
                         charge, geo.GetNumBonds() - ref.GetNumBonds())
