"""Scoring molecules by the bonds and formal charges a model wrote (the honest model-bond view).

* Atom stability: the atom's Kekulé bond-order sum equals the valence allowed for its element AND
  formal charge (:data:`molediff.elements.ALLOWED_VALENCE`); no implicit hydrogens are added, so a
  missing hydrogen, a radical or a three-valent neutral carbon fails. Molecule stability: all atoms.
* Connected validity: RDKit sanitizes the molecule exactly as written (every atom marked "no implicit
  hydrogens"), no atom is left a radical, and its bond graph is one fragment; the canonical SMILES
  names it.

Stricter than the model-bond evaluators of peers, which count an aromatic bond as 1 when summing
valence and accept three-valent carbon. Stability is numpy only; validity needs RDKit.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from molediff.chem.bonds import valence_allowed, valence_mask
from molediff.elements import ALLOWED_VALENCE, ELEMENTS, SUPPORTED_CHARGES

_MIN_CHARGE = SUPPORTED_CHARGES[0]
#: ``[E, C]`` bit masks of the allowed valences by element (ELEMENTS index) and formal charge (offset)
_MASKS = np.zeros((len(ELEMENTS), len(SUPPORTED_CHARGES)), dtype=np.int64)
for (_symbol, _charge), _valences in ALLOWED_VALENCE.items():
    _MASKS[ELEMENTS.index(_symbol), _charge - _MIN_CHARGE] = valence_mask(_valences)
_MASKS.setflags(write=False)


class ModelBondScores(NamedTuple):
    atom_stable: np.ndarray  # [N] bool
    molecule_stable: np.ndarray  # [M] bool
    valid: np.ndarray  # [M] bool: sanitizes as written and is one fragment
    smiles: list  # [M] canonical SMILES of valid molecules, else None
    fragments: np.ndarray  # [M] number of fragments of the bond graph


def allowed_valences(atom_type: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Bit masks ``[N]`` of the valences allowed to atoms (types index ELEMENTS) with their formal charges
    (bit v: valence v; 0 where the element takes no such charge)."""
    offset = np.asarray(charge, dtype=np.int64) - _MIN_CHARGE
    inside = (offset >= 0) & (offset < _MASKS.shape[1])
    out = np.zeros(len(atom_type), dtype=np.int64)
    out[inside] = _MASKS[np.asarray(atom_type)[inside], offset[inside]]
    return out


def model_bond_stability(atom_type: np.ndarray, charge: np.ndarray, ptr: np.ndarray, src: np.ndarray, dst: np.ndarray,
                         order: np.ndarray, hydrogens: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(atom_stable [N], molecule_stable [M])`` from stacked atoms (``ptr`` [M+1]) and bonds between
    global atom indices ``src``, ``dst`` with Kekulé ``order`` in 1..3 (order 0 entries are ignored);
    ``hydrogens`` [N]: attached hydrogens of a heavy-atom model's atoms (each adds 1 to the valence)."""
    n = len(atom_type)
    order = np.asarray(order, dtype=np.int64)
    sums = np.bincount(src, weights=order, minlength=n) + np.bincount(dst, weights=order, minlength=n)
    if hydrogens is not None:
        sums = sums + np.asarray(hydrogens)
    atom_stable = valence_allowed(allowed_valences(atom_type, charge), np.rint(sums).astype(np.int64))
    mol = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    unstable = np.bincount(mol, weights=~atom_stable, minlength=len(ptr) - 1)
    return atom_stable, (unstable == 0) & (np.diff(ptr) > 0)


def fragment_labels(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``[n]`` int: each atom's fragment, labelled by the smallest atom index in it, for the bonds ``src`` →
    ``dst`` (bonded pairs only), by propagation along bonds."""
    label = np.arange(n)
    while True:
        low = np.minimum(label[src], label[dst])
        new = label.copy()
        np.minimum.at(new, src, low)
        np.minimum.at(new, dst, low)
        new = new[new]  # pointer jumping: fewer rounds on long chains
        if np.array_equal(new, label):
            return label
        label = new


def split_molecules(ptr: np.ndarray, src: np.ndarray, dst: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``[B]`` bool: the molecules (atoms ``ptr[i]:ptr[i+1]``) that their bonds (``order`` > 0 between ``src``
    and ``dst``) leave in several fragments."""
    keep = np.asarray(order) > 0
    n = int(ptr[-1])
    label = fragment_labels(n, np.asarray(src)[keep], np.asarray(dst)[keep])
    mol = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    # a molecule is in pieces where one of its atoms is not in the fragment of its first atom
    first = label[np.asarray(ptr[:-1])[mol]] if n else label
    return np.bincount(mol, weights=label != first, minlength=len(ptr) - 1) > 0


def failing_atoms(atom_type: np.ndarray, charge: np.ndarray, ptr: np.ndarray, src: np.ndarray, dst: np.ndarray,
                  order: np.ndarray, hydrogens: np.ndarray | None = None) -> np.ndarray:
    """``[N]`` bool: the atoms that keep a molecule from being stable and connected by the honest rule
    (arguments as :func:`model_bond_stability`; aromatic systems already Kekulé, where a system with no
    Kekulé form has its leftover bonds single, so its atoms fail here): every unstable atom, and in a
    molecule of several fragments every atom outside its largest one. Numpy only (no RDKit)."""
    keep = np.asarray(order) > 0
    src, dst, order = np.asarray(src)[keep], np.asarray(dst)[keep], np.asarray(order)[keep]
    atom_stable, _ = model_bond_stability(atom_type, charge, ptr, src, dst, order, hydrogens)
    n = len(atom_type)
    label = fragment_labels(n, src, dst)
    mol = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    size = np.bincount(label, minlength=n)[label]
    # each molecule's largest fragment: the one of its atom with the largest (size, -label)
    key = size * (n + 1) - label
    top = np.full(len(ptr) - 1, -1, dtype=np.int64)
    np.maximum.at(top, mol, key)
    return ~atom_stable | (key != top[mol])


def written_molecules(atom_type: np.ndarray, charge: np.ndarray, ptr: np.ndarray, src: np.ndarray, dst: np.ndarray,
                      order: np.ndarray, pos: np.ndarray | None = None, hydrogens: np.ndarray | None = None,
                      molecules: Iterable[int] | None = None) -> Iterator[tuple[int, Any]]:
    """``(m, molecule)`` for the molecules of a stacked batch as written (:func:`written_molecule`; arguments
    as :func:`model_bond_stability`, bonds of order 0 ignored), molecule by molecule, or only those with
    the indices in ``molecules``: the one loop of the model-bond readers."""
    keep = np.asarray(order) > 0
    src, dst, order = np.asarray(src)[keep], np.asarray(dst)[keep], np.asarray(order)[keep]
    charge = np.asarray(charge)
    hydrogens = None if hydrogens is None else np.asarray(hydrogens)
    symbols = np.array(ELEMENTS)[np.asarray(atom_type)]
    mol_of_bond = np.searchsorted(ptr, src, side="right") - 1
    for m in range(len(ptr) - 1) if molecules is None else molecules:
        a, b = ptr[m], ptr[m + 1]
        sel = mol_of_bond == m
        yield m, written_molecule(symbols[a:b], src[sel] - a, dst[sel] - a, order[sel], charge[a:b],
                                  None if pos is None else pos[a:b], None if hydrogens is None else hydrogens[a:b])


def odd_ring_atom_mask(atom_type: np.ndarray, charge: np.ndarray, ptr: np.ndarray, src: np.ndarray, dst: np.ndarray,
                       order: np.ndarray, hydrogens: np.ndarray | None = None, molecules: np.ndarray | None = None) -> np.ndarray:
    """``[N]`` bool: the atoms of odd rings (non-aromatic rings with a double bond,
    :func:`molediff.chem.rdkit_mol.ring_kinds`) of the molecules as written (arguments as
    :func:`model_bond_stability`), read with RDKit's aromaticity after sanitizing; only the molecules
    marked in ``molecules`` [B] bool (default: all), and none of a molecule that does not sanitize."""
    from molediff.chem.rdkit_mol import odd_ring_atoms

    out = np.zeros(len(atom_type), dtype=bool)
    which = None if molecules is None else np.flatnonzero(molecules).tolist()
    for m, mol in written_molecules(atom_type, charge, ptr, src, dst, order, None, hydrogens, which):
        for i in odd_ring_atoms(mol) or ():
            out[ptr[m] + i] = True
    return out


def model_bond_scores(atom_type: np.ndarray, charge: np.ndarray, ptr: np.ndarray, src: np.ndarray, dst: np.ndarray,
                      order: np.ndarray, pos: np.ndarray | None = None, progress: bool = False,
                      desc: str = "model bonds", hydrogens: np.ndarray | None = None) -> ModelBondScores:
    """Stability and connected validity of stacked molecules with their own bonds (see module docstring);
    ``hydrogens`` [N]: a heavy-atom model's generated hydrogen counts (explicit hydrogens of each atom)."""
    from rdkit import Chem, rdBase
    from tqdm import tqdm

    atom_stable, mol_stable = model_bond_stability(atom_type, charge, ptr, src, dst, order, hydrogens)
    valid, smiles, fragments = [], [], []
    written = written_molecules(atom_type, charge, ptr, src, dst, order, pos, hydrogens)
    for _, mol in tqdm(written, total=len(ptr) - 1, desc=desc, disable=not progress, unit="mol", mininterval=1.0):
        frags = len(Chem.GetMolFrags(mol)) if mol.GetNumAtoms() else 0
        fragments.append(frags)
        ok, smi = False, None
        with rdBase.BlockLogs():
            try:
                Chem.SanitizeMol(mol)
                # RDKit reads a missing bond of a "no implicit H" atom as a radical: that fails too
                ok = frags == 1 and not any(atom.GetNumRadicalElectrons() for atom in mol.GetAtoms())
                smi = Chem.MolToSmiles(mol) if ok else None
            except Exception:  # noqa: BLE001 - RDKit's sanitization exceptions
                pass
        valid.append(ok)
        smiles.append(smi)
    return ModelBondScores(atom_stable, mol_stable, np.array(valid, dtype=bool), smiles, np.array(fragments))


def written_molecule(symbols: Sequence[str], src: np.ndarray, dst: np.ndarray, order: np.ndarray, charge: np.ndarray,
                     pos: np.ndarray | None = None, hydrogens: np.ndarray | None = None):
    """An unsanitized RDKit molecule exactly as written: these bonds and charges, no implicit hydrogens;
    ``hydrogens`` [n] (a heavy-atom model's generated counts) become each atom's explicit hydrogens."""
    from rdkit import Chem

    from molediff.chem.rdkit_mol import mol_from_bonds

    mol = Chem.RWMol(mol_from_bonds(symbols, src, dst, order, pos))
    for atom, c in zip(mol.GetAtoms(), np.asarray(charge).tolist()):
        atom.SetFormalCharge(int(c))
        atom.SetNoImplicit(True)
    if hydrogens is not None:
        for atom, h in zip(mol.GetAtoms(), np.asarray(hydrogens).tolist()):
            atom.SetNumExplicitHs(int(h))
    out = mol.GetMol()
    out.SetProp("_molediff_bonds", "model")
    return out
