"""Small hand-built molecules whose lookup bonds, stability and validity are known, with bond lengths
taken from the tables in :mod:`molediff.elements` (never copied numbers)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from molediff.elements import BOND_DOUBLE_PM, BOND_SINGLE_PM, BOND_TRIPLE_PM


def single(a: str, b: str) -> float:
    """Typical single-bond length in Å."""
    return BOND_SINGLE_PM[(a, b)] / 100.0


def double(a: str, b: str) -> float:
    return BOND_DOUBLE_PM[(a, b)] / 100.0


def triple(a: str, b: str) -> float:
    return BOND_TRIPLE_PM[(a, b)] / 100.0


_TETRA = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float) / np.sqrt(3.0)


def methane() -> tuple[list[str], np.ndarray]:
    return ["C", "H", "H", "H", "H"], np.vstack([[0.0, 0.0, 0.0], _TETRA * single("C", "H")])


def methyl_radical() -> tuple[list[str], np.ndarray]:
    """CH3 with tetrahedral geometry: C has valence 3 (unstable), lenient-valid, not strictly valid."""
    s, p = methane()
    return s[:4], p[:4]


def water() -> tuple[list[str], np.ndarray]:
    d, ang = single("O", "H"), np.radians(104.5)
    return ["O", "H", "H"], np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0], [d * np.cos(ang), d * np.sin(ang), 0.0]]) + [0, 0, 0.3]


def hydronium_neutral() -> tuple[list[str], np.ndarray]:
    """O with three H at the O-H length: O has 3 bonds, unstable and RDKit-invalid (neutral O)."""
    d = single("O", "H")
    h = np.array([[1.0, 0.0, -0.35], [-0.5, 0.866, -0.35], [-0.5, -0.866, -0.35]])
    h = h / np.linalg.norm(h, axis=1, keepdims=True) * d
    return ["O", "H", "H", "H"], np.vstack([[0.0, 0.0, 0.0], h])


def ethene() -> tuple[list[str], np.ndarray]:
    cc, ch = double("C", "C"), single("C", "H")
    a = np.radians(60.0)  # H-C=C angle 120 degrees
    pos = [[0, 0, 0], [cc, 0, 0]]
    pos += [[-ch * np.cos(a), ch * np.sin(a), 0], [-ch * np.cos(a), -ch * np.sin(a), 0]]
    pos += [[cc + ch * np.cos(a), ch * np.sin(a), 0], [cc + ch * np.cos(a), -ch * np.sin(a), 0]]
    return ["C", "C", "H", "H", "H", "H"], np.array(pos, dtype=float) + [0, 0, 0.5]


def ethyne() -> tuple[list[str], np.ndarray]:
    cc, ch = triple("C", "C"), single("C", "H")
    return ["C", "C", "H", "H"], np.array([[0, 0, 0], [cc, 0, 0], [-ch, 0, 0], [cc + ch, 0, 0]], dtype=float) + [0, 0.1, 0.2]


def hydrogen_cyanide() -> tuple[list[str], np.ndarray]:
    ch, cn = single("C", "H"), triple("C", "N")
    return ["H", "C", "N"], np.array([[-ch, 0, 0], [0, 0, 0], [cn, 0, 0]], dtype=float) + [0, 0.2, 0.1]


def two_fragments() -> tuple[list[str], np.ndarray]:
    """Methane and water 10 Å apart: every atom stable, valid (largest fragment = methane), but not
    strictly valid and not connected."""
    s1, p1 = methane()
    s2, p2 = water()
    return s1 + s2, np.vstack([p1, p2 + [10.0, 0, 0]])


#: name -> (builder, stable, valid (lookup), strict_valid (lookup))
KNOWN: dict[str, tuple] = {
    "methane": (methane, True, True, True),
    "ethene": (ethene, True, True, True),
    "ethyne": (ethyne, True, True, True),
    "water": (water, True, True, True),
    "hcn": (hydrogen_cyanide, True, True, True),
    "methyl_radical": (methyl_radical, False, True, False),
    "two_fragments": (two_fragments, True, True, False),
    "o_three_bonds": (hydronium_neutral, False, False, False),
}

#: A set of the molecules above with a duplicate: 9 molecules, 42 atoms.
ORDER: list[str] = ["methane", "ethene", "ethyne", "water", "hcn", "methyl_radical", "two_fragments", "o_three_bonds", "methane"]


def fake_reference(molecules: list) -> dict:
    """Reference statistics computed from ``molecules`` themselves (distances must then be zero)."""
    from molediff.chem import lookup_bonds_stacked
    from molediff.chem.analysis import analyse_molecule
    from molediff.elements import ELEMENTS
    from molediff.metrics import bond_angle_samples, bond_length_samples, stack_molecules

    atom_type, pos, ptr = stack_molecules(molecules)
    bonds = lookup_bonds_stacked(atom_type, pos, ptr)
    rings, props, n_valid = Counter(), {"qed": [], "logp": [], "mol_wt": []}, 0
    for symbols, p in molecules:
        a = analyse_molecule(symbols, p, properties=True)
        if a.valid:
            n_valid += 1
            rings.update(a.ring_sizes)
            for k in props:
                props[k].append(a.properties[k])
    return {
        "description": "fake",
        "num_molecules": len(molecules),
        "atom_type_counts": np.bincount(atom_type, minlength=len(ELEMENTS)),
        "num_atoms_hist": np.bincount(np.diff(ptr)),
        "bond_lengths": bond_length_samples(atom_type, pos, bonds),
        "bond_angles": bond_angle_samples(atom_type, pos, bonds),
        "ring_sizes": {s: c / n_valid for s, c in rings.items()},
        "properties": {k: np.array(v) for k, v in props.items()},
    }
