"""Drug-likeness properties of molecules and their distributions against a reference:
:func:`druglike_properties` (QED, SA score, Crippen logP, MolWt, rings, ring systems, heavy atoms) and
:func:`property_distributions` (means and Wasserstein-1 distances). QED, logP and MolWt are the
chemistry layer's (:func:`molediff.chem.analysis.descriptor_values`)."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from rdkit import Chem

from molediff.chem.analysis import DESCRIPTORS, descriptor_values
from molediff.chem.distances import wasserstein1
from molediff.metrics.sascore import sa_score

__all__ = ["DRUGLIKE_PROPERTY_NAMES", "PROPERTY_LABELS", "druglike_properties", "property_distributions", "ring_systems"]


def ring_systems(mol: Chem.Mol) -> int:
    """Ring systems: SSSR rings that share a bond (two or more atoms: fused or bridged) are one system;
    spiro rings (one shared atom) count apart."""
    systems: list[set[int]] = []
    for ring in mol.GetRingInfo().AtomRings():
        merged = set(ring)
        rest = []
        for system in systems:
            if len(system & merged) >= 2:
                merged |= system
            else:
                rest.append(system)
        systems = rest + [merged]
    return len(systems)


#: The drug-likeness properties of :func:`druglike_properties`, in table order, by name.
_PROPERTY_FUNCTIONS: dict[str, Callable[[Chem.Mol], float]] = {
    "qed": DESCRIPTORS["qed"],
    "sa": sa_score,
    "logp": DESCRIPTORS["logp"],
    "mol_wt": DESCRIPTORS["mol_wt"],
    "num_rings": lambda m: m.GetRingInfo().NumRings(),
    "num_ring_systems": ring_systems,
    "num_heavy_atoms": lambda m: m.GetNumHeavyAtoms(),
}
#: Drug-likeness properties of :func:`druglike_properties`, in table order.
DRUGLIKE_PROPERTY_NAMES: tuple[str, ...] = tuple(_PROPERTY_FUNCTIONS)
PROPERTY_LABELS: dict[str, str] = {
    "qed": "QED",
    "sa": "SA score",
    "logp": "logP (Crippen)",
    "mol_wt": "MolWt (g/mol)",
    "num_rings": "rings",
    "num_ring_systems": "ring systems",
    "num_heavy_atoms": "heavy atoms",
}


def druglike_properties(mols: Sequence[Chem.Mol]) -> dict[str, np.ndarray]:
    """:data:`DRUGLIKE_PROPERTY_NAMES` of sanitized molecules (hydrogens removed first), ``[n]`` float64
    each; ``nan`` where RDKit fails. QED, SA score (:func:`molediff.metrics.sascore.sa_score`), Crippen
    logP and MolWt as MOSES; rings = SSSR size; ring systems as :func:`ring_systems`."""
    out = np.full((len(DRUGLIKE_PROPERTY_NAMES), len(mols)), np.nan)
    for i, mol in enumerate(mols):
        values = descriptor_values(mol, _PROPERTY_FUNCTIONS)
        out[:, i] = [values[name] for name in DRUGLIKE_PROPERTY_NAMES]
    return {name: out[row] for row, name in enumerate(DRUGLIKE_PROPERTY_NAMES)}


def property_distributions(gen: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per property present in both: generated and reference mean / std and the Wasserstein-1 distance
    between the two empirical distributions (``nan`` values dropped; units of the property)."""
    out = {}
    for name in DRUGLIKE_PROPERTY_NAMES:
        if name not in gen or name not in reference:
            continue
        a = np.asarray(gen[name], dtype=np.float64)
        b = np.asarray(reference[name], dtype=np.float64)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        out[name] = {
            "mean": float(a.mean()) if a.size else float("nan"),
            "std": float(a.std()) if a.size else float("nan"),
            "reference_mean": float(b.mean()) if b.size else float("nan"),
            "reference_std": float(b.std()) if b.size else float("nan"),
            "w1": wasserstein1(a, b),
            "count": int(a.size),
        }
    return out
