"""Chemistry layer: the only package of molediff that imports RDKit.

* :mod:`molediff.chem.bonds` — lookup (EDM) bond perception, numpy only; importing it (or this
  package) does not import RDKit.
* :mod:`molediff.chem.rdkit_mol` — RDKit molecules from 3D coordinates, validity, the one canonical
  SMILES and the one largest-fragment rule.
* :mod:`molediff.chem.io` — SDF / XYZ writing (streaming, atomic) and SDF reading.
* :mod:`molediff.chem.analysis` — per-molecule validity / rings / QED-logP-MolWt, depiction grids.

The RDKit-backed names below are imported lazily on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from molediff.chem.bonds import BOND_MODES, PERCEIVED_BOND_MODES, BondList, lookup_bond_orders, lookup_bonds_stacked, symbols_to_types, valence_sums

_LAZY = {
    "ValidityResult": "molediff.chem.rdkit_mol",
    "bond_perception_status": "molediff.chem.rdkit_mol",
    "build_molecule": "molediff.chem.rdkit_mol",
    "canonical_smiles": "molediff.chem.rdkit_mol",
    "check_validity": "molediff.chem.rdkit_mol",
    "largest_fragment": "molediff.chem.rdkit_mol",
    "mol_from_bonds": "molediff.chem.rdkit_mol",
    "mol_to_smiles_largest_fragment": "molediff.chem.rdkit_mol",
    "sanitize": "molediff.chem.rdkit_mol",
    "DESCRIPTOR_NAMES": "molediff.chem.analysis",
    "MoleculeAnalysis": "molediff.chem.analysis",
    "analyse_molecule": "molediff.chem.analysis",
    "descriptor_values": "molediff.chem.analysis",
    "draw_grid": "molediff.chem.analysis",
    "molecule_properties": "molediff.chem.analysis",
    "RecordError": "molediff.chem.io",
    "SDFContents": "molediff.chem.io",
    "SDFRecord": "molediff.chem.io",
    "SDFWriter": "molediff.chem.io",
    "XYZWriter": "molediff.chem.io",
    "read_sdf": "molediff.chem.io",
    "write_sdf": "molediff.chem.io",
    "write_xyz": "molediff.chem.io",
}

__all__ = ["BOND_MODES", "PERCEIVED_BOND_MODES", "BondList", "lookup_bond_orders", "lookup_bonds_stacked", "symbols_to_types", "valence_sums", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'molediff.chem' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
