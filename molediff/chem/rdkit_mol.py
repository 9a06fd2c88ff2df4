"""RDKit molecules from (symbols, 3D positions) and the validity conventions built on them.

* :func:`build_molecule` — an RDKit ``Mol`` with a 3D conformer and bonds from the lookup rule
  (:mod:`molediff.chem.bonds`) or from RDKit's ``rdDetermineBonds`` (connectivity + bond orders,
  charge-aware). RDKit failures never propagate: see :func:`bond_perception_status`.
* :func:`check_validity` — the published validity (``SanitizeMol`` passes; the canonical SMILES of the
  largest fragment is kept, as EDM's ``compute_validity``) and a strict validity (no implicit
  hydrogens or radicals added by sanitization, a single fragment).
* :func:`largest_fragment` — the one rule for "the largest fragment" (most atoms, the first of equals:
  EDM's), used by validity, the analysis, the drug-like metrics and the data builder.
* :func:`canonical_smiles` — the one canonical SMILES of a molecule or SMILES string (written, read
  back, written: hydrogens implicit, no stereo by default), as the MOSES metrics compare them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdDetermineBonds

from molediff.chem.bonds import check_bond_mode, closest_pair, lookup_bond_orders
from molediff.elements import AROMATIC, ATTACHMENT_POINT, Z_TO_SYMBOL

__all__ = [
    "ValidityResult",
    "aromatic_bond_codes",
    "bond_perception_status",
    "build_molecule",
    "canonical_smiles",
    "check_validity",
    "fragment_size",
    "kekule_bonds",
    "largest_fragment",
    "mol_from_bonds",
    "mol_from_smiles",
    "mol_to_smiles_largest_fragment",
    "sanitize",
]

#: Accepted values of the ``bonds`` argument.

_BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
#: Private (not written to SDF) property holding how bonds were perceived.
_STATUS_PROP = "_molediff_bonds"
_PERIODIC_TABLE = Chem.GetPeriodicTable()


def _atomic_number(symbol: str) -> int:
    try:
        return _PERIODIC_TABLE.GetAtomicNumber(str(symbol))
    except Exception:  # RDKit raises RuntimeError for unknown symbols
        raise ValueError(f"unknown element symbol {symbol!r}") from None


@contextlib.contextmanager
def _silenced_stderr_fd() -> Iterator[None]:
    """Silence file descriptor 2 (YAeHMOP, behind Hueckel connectivity, prints warnings from C)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _set_conformer(mol: Chem.RWMol, pos: np.ndarray) -> None:
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, xyz in enumerate(pos.tolist()):
        conf.SetAtomPosition(i, xyz)
    conf.Set3D(True)
    mol.AddConformer(conf, assignId=True)


def mol_from_bonds(
    symbols: Sequence[str] | np.ndarray,
    src: np.ndarray | Sequence[int],
    dst: np.ndarray | Sequence[int],
    order: np.ndarray | Sequence[int],
    pos_angstrom: np.ndarray | None = None,
) -> Chem.Mol:
    """Unsanitized RDKit molecule with atoms ``symbols`` ``[n]`` and bonds ``(src[k], dst[k])`` of
    ``order[k]`` in 1..3 (local atom indices, ``[E]`` each); a 3D conformer when ``pos_angstrom``
    ``[n, 3]`` (Å) is given."""
    mol = Chem.RWMol()
    for s in symbols:
        mol.AddAtom(Chem.Atom(_atomic_number(s)))
    for i, j, o in zip(np.asarray(src).tolist(), np.asarray(dst).tolist(), np.asarray(order).tolist()):
        mol.AddBond(int(i), int(j), _BOND_TYPES[int(o)])
    if pos_angstrom is not None:
        _set_conformer(mol, np.asarray(pos_angstrom, dtype=np.float64).reshape(-1, 3))
    out = mol.GetMol()
    out.SetProp(_STATUS_PROP, "lookup")
    return out


def build_molecule(
    symbols: Sequence[str] | np.ndarray, pos_angstrom: np.ndarray, bonds: str = "lookup", charge: int = 0
) -> Chem.Mol:
    """RDKit molecule (unsanitized, explicit hydrogens as atoms) with a 3D conformer.

    Args:
        symbols: ``[n]`` element symbols.
        pos_angstrom: ``[n, 3]`` coordinates in Å.
        bonds: ``"lookup"`` (EDM distance rule; symbols must be in :data:`molediff.elements.ELEMENTS`)
            or ``"rdkit"`` (``rdDetermineBonds``: covalent-radius connectivity, falling back to
            extended-Hueckel connectivity when bond orders cannot be assigned, then bond orders and
            formal charges for total charge ``charge``; no stereo perception).
        charge: total charge assumed by ``"rdkit"`` bond-order assignment.

    Returns:
        The molecule. Never raises for chemistry failures: with ``"rdkit"``, if bond orders cannot be
        assigned the molecule keeps single-bond connectivity, and if connectivity fails it has no
        bonds; :func:`bond_perception_status` tells which (``"rdkit"``, ``"rdkit-connectivity"``,
        ``"failed"``).
    """
    pos = np.asarray(pos_angstrom, dtype=np.float64).reshape(-1, 3)
    if len(symbols) != len(pos):
        raise ValueError(f"{len(symbols)} symbols but {len(pos)} positions")
    if bonds == "lookup":
        orders = lookup_bond_orders(symbols, pos)
        i, j = np.nonzero(np.triu(orders, 1))
        return mol_from_bonds(symbols, i, j, orders[i, j], pos)
    if bonds != "rdkit":
        check_bond_mode(bonds)
    base = mol_from_bonds(symbols, [], [], [], pos)
    if closest_pair(pos) is not None:
        # atoms on top of each other are no molecule, and rdDetermineBonds' Hueckel step dies on them (SIGSEGV)
        base.SetProp(_STATUS_PROP, "failed")
        return base
    conn_only: Chem.Mol | None = None
    with rdBase.BlockLogs():
        # Covalent-radius connectivity first; it over-connects some strained rings (e.g. adds the
        # cross-ring bond of bicyclo[1.1.1]pentanes), so on failure retry with Hueckel connectivity.
        for use_hueckel in (False, True):
            conn = Chem.Mol(base)
            try:
                with _silenced_stderr_fd() if use_hueckel else contextlib.nullcontext():
                    rdDetermineBonds.DetermineConnectivity(conn, useHueckel=use_hueckel, charge=int(charge))
            except Exception:  # noqa: BLE001 - RDKit raises assorted types; never crash on a bad geometry
                continue
            conn_only = conn_only or conn
            full = Chem.Mol(conn)
            try:
                # embedChiral=False: no stereo from 3D, so SMILES compare like the lookup mode's
                rdDetermineBonds.DetermineBondOrders(full, charge=int(charge), allowChargedFragments=True, embedChiral=False)
            except Exception:  # noqa: BLE001
                continue
            full.SetProp(_STATUS_PROP, "rdkit")
            return full
    if conn_only is None:
        base.SetProp(_STATUS_PROP, "failed")
        return base
    conn_only.SetProp(_STATUS_PROP, "rdkit-connectivity")
    return conn_only


def bond_perception_status(mol: Chem.Mol) -> str:
    """How :func:`build_molecule` perceived the bonds: ``"lookup"``, ``"rdkit"`` (connectivity and
    orders), ``"rdkit-connectivity"`` (orders failed: single bonds only), ``"failed"`` (no bonds) or
    ``"unknown"`` for molecules made elsewhere."""
    return mol.GetProp(_STATUS_PROP) if mol.HasProp(_STATUS_PROP) else "unknown"


def sanitize(mol: Chem.Mol) -> Chem.Mol | None:
    """A sanitized copy of ``mol``, or ``None`` when ``SanitizeMol`` fails (silently)."""
    out = Chem.Mol(mol)
    with rdBase.BlockLogs():
        try:
            Chem.SanitizeMol(out)
        except Exception:  # noqa: BLE001 - MolSanitizeException and friends
            return None
    return out


def ring_kinds(mol: Chem.Mol) -> list[tuple[tuple[int, ...], str]]:
    """Each ring (SSSR) of a sanitized molecule as ``(bond indices, kind)``: ``"aromatic"`` (every bond
    aromatic), ``"odd"`` (not aromatic, with a non-aromatic double bond inside it: cyclohexene-,
    cyclohexadiene-, cyclobutene-like, rare in drug-like data; an exocyclic C=O does not count) or
    ``"other"``. The one home of the odd-ring rule (:mod:`molediff.metrics.rings`, :mod:`molediff.restarts`)."""
    out = []
    for ring in mol.GetRingInfo().BondRings():
        bonds = [mol.GetBondWithIdx(b) for b in ring]
        if all(b.GetIsAromatic() for b in bonds):
            kind = "aromatic"
        elif any(b.GetBondType() == Chem.BondType.DOUBLE and not b.GetIsAromatic() for b in bonds):
            kind = "odd"
        else:
            kind = "other"
        out.append((tuple(ring), kind))
    return out


def odd_ring_atoms(mol: Chem.Mol) -> set[int] | None:
    """The atoms of the odd rings (:func:`ring_kinds`) of ``mol`` after sanitizing a copy; None when it
    does not sanitize."""
    m = sanitize(mol)
    if m is None:
        return None
    atoms: set[int] = set()
    for ring, kind in ring_kinds(m):
        if kind == "odd":
            for b in ring:
                bond = m.GetBondWithIdx(b)
                atoms.update((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
    return atoms


def mol_to_smiles_largest_fragment(mol: Chem.Mol, sanitized: bool = False) -> str | None:
    """Canonical SMILES of the largest fragment of ``mol`` (EDM's convention: sanitize the whole
    molecule, take the largest fragment (:func:`largest_fragment`), sanitize it, ``MolToSmiles``,
    hydrogens as the molecule has them); ``None`` if a sanitization fails. Pass ``sanitized=True``
    when ``mol`` already is (skips one copy)."""
    if not sanitized:
        mol = sanitize(mol)
        if mol is None:
            return None
    largest = largest_fragment(mol)
    if largest is mol:
        return Chem.MolToSmiles(mol)
    largest = sanitize(largest)
    return None if largest is None else Chem.MolToSmiles(largest)


def fragment_size(mol: Chem.Mol) -> int:
    """The size :func:`largest_fragment` ranks fragments by: the atoms of the graph, hydrogens counted
    when they are atoms (EDM's ``GetNumAtoms``). With hydrogens implicit (a molecule read from SMILES,
    as :func:`canonical_smiles` makes them) this is the number of heavy atoms (MOSES)."""
    return mol.GetNumAtoms()


def largest_fragment(mol: Chem.Mol, sanitize_fragments: bool = False) -> Chem.Mol:
    """The largest fragment of ``mol`` — the most atoms (:func:`fragment_size`), the first of equals in
    atom order (EDM's ``compute_validity``) — as a new molecule (sanitized when ``sanitize_fragments``);
    ``mol`` itself when it is one fragment (or has no atoms). The one rule of the package: validity
    (:func:`check_validity`), the analysis, the MOSES metrics' ``largest_fragment`` option and the data
    builder all keep this fragment."""
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=sanitize_fragments)
    if len(frags) <= 1:
        return mol
    return max(frags, key=fragment_size)


def mol_from_smiles(smiles: str | None) -> Chem.Mol | None:
    """The sanitized RDKit molecule of ``smiles``, ``None`` when empty or invalid (RDKit's messages
    silenced)."""
    if not smiles:
        return None
    with rdBase.BlockLogs():
        return Chem.MolFromSmiles(smiles)


def canonical_smiles(molecule: str | Chem.Mol | None, largest_fragment: bool = False, isomeric: bool = False) -> str | None:
    """Canonical SMILES (RDKit) of a SMILES string or RDKit molecule, ``None`` when invalid
    (unparsable, fails sanitization, no atoms). A molecule is written to SMILES and read back, so a 3D
    molecule with explicit hydrogens and the SMILES of the same graph give the same string.
    ``largest_fragment``: keep the largest fragment (:func:`largest_fragment` of the molecule read back,
    hydrogens implicit: the most heavy atoms; MOSES keeps the whole input). ``isomeric``: keep
    stereochemistry. Off by default: MOSES's sets carry none, while a molecule read from a 3D file
    carries the stereo its coordinates imply and a model's bond graph none, so with stereo the same
    molecule would count as novel or shift FCD depending on where it came from."""
    if molecule is None:
        return None
    with rdBase.BlockLogs():
        if isinstance(molecule, str):
            mol = mol_from_smiles(molecule)
        else:
            mol = Chem.Mol(molecule)
            try:
                Chem.SanitizeMol(mol)
                mol = Chem.MolFromSmiles(Chem.MolToSmiles(mol))
            except Exception:  # noqa: BLE001 - MolSanitizeException and friends
                return None
        if mol is None or mol.GetNumAtoms() == 0:
            return None
        if largest_fragment:
            mol = _largest_fragment(mol, sanitize_fragments=True)
        smiles = Chem.MolToSmiles(mol, isomericSmiles=isomeric)
    return smiles or None


_largest_fragment = largest_fragment  # canonical_smiles's flag of that name hides the function


@dataclass
class ValidityResult:
    """Validity of one molecule.

    ``valid``: published convention (sanitization passes; for ``"rdkit"`` bonds also bond orders were
    assigned). ``strict_valid``: valid, no atom got implicit H or radical electrons from
    sanitization, and a single fragment. ``smiles``: canonical SMILES of the largest fragment when
    valid. ``num_fragments``: connected components of the bond graph. ``mol``: the sanitized whole
    molecule when valid (for ring/property analysis), else ``None``. ``error``: why invalid.
    """

    valid: bool
    strict_valid: bool
    smiles: str | None
    num_fragments: int
    mol: Chem.Mol | None = None
    error: str | None = None


def check_validity(mol: Chem.Mol) -> ValidityResult:
    """Published and strict validity of an (unsanitized) molecule from :func:`build_molecule` or
    :func:`mol_from_bonds`; ``mol`` itself is not modified."""
    status = bond_perception_status(mol)
    num_fragments = len(Chem.GetMolFrags(mol)) if mol.GetNumAtoms() else 0
    if mol.GetNumAtoms() == 0:
        return ValidityResult(False, False, None, 0, error="no atoms")
    if status in ("rdkit-connectivity", "failed"):
        return ValidityResult(False, False, None, num_fragments, error=f"RDKit bond perception: {status}")
    clean = Chem.Mol(mol)
    with rdBase.BlockLogs():
        try:
            Chem.SanitizeMol(clean)
        except Exception as exc:  # noqa: BLE001
            return ValidityResult(False, False, None, num_fragments, error=str(exc).strip() or type(exc).__name__)
    smiles = mol_to_smiles_largest_fragment(clean, sanitized=True)
    if smiles is None:
        return ValidityResult(False, False, None, num_fragments, error="largest fragment fails sanitization")
    strict = num_fragments == 1 and all(
        a.GetNumImplicitHs() == 0 and a.GetNumRadicalElectrons() == 0 for a in clean.GetAtoms()
    )
    return ValidityResult(True, strict, smiles, num_fragments, mol=clean)


def symbols_of(mol: Chem.Mol) -> list[str]:
    """Element symbols ``[n]`` of ``mol``'s atoms (a dummy atom, atomic number 0, reads
    :data:`~molediff.elements.ATTACHMENT_POINT` however the file spelled it)."""
    return [Z_TO_SYMBOL.get(a.GetAtomicNum(), ATTACHMENT_POINT if a.GetAtomicNum() == 0 else a.GetSymbol())
            for a in mol.GetAtoms()]


def kekule_bonds(mol: Chem.Mol, aromatic: bool = False) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, bool]:
    """``((src, dst, order), charges, kekulized)`` of a molecule as written: aromatic bonds are
    kekulized (orders 1–3, src < dst); an aromatic system that cannot be kekulized keeps its aromatic
    bonds out of the list (``kekulized`` False), so its atoms fail the model-bond valence check, as
    they should. Dative and other unusual bond types count as single.

    ``aromatic``: bonds that RDKit's aromaticity model calls aromatic (perceived on the kekulized
    molecule as written, hydrogens as given) get the code :data:`~molediff.elements.AROMATIC` instead of
    their Kekulé order: the training data of a model with an aromatic bond type. A molecule that does not
    sanitize keeps its Kekulé orders."""
    work = Chem.RWMol(mol)
    for atom in work.GetAtoms():  # hydrogens are atoms here: kekulize what is written, nothing implied
        atom.SetNoImplicit(True)
    kekulized = True
    with rdBase.BlockLogs():
        work.UpdatePropertyCache(strict=False)
        try:
            Chem.Kekulize(work, clearAromaticFlags=True)
        except Exception:  # noqa: BLE001 - RDKit's KekulizeException
            kekulized = False
    flags = _aromatic_flags(work) if aromatic and kekulized else None
    src, dst, order = [], [], []
    for b in work.GetBonds():
        if b.GetBondType() == Chem.BondType.AROMATIC:
            continue
        i, j = sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
        src.append(i)
        dst.append(j)
        order.append(AROMATIC if flags is not None and flags[b.GetIdx()] else
                     {Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}.get(b.GetBondType(), 1))
    charges = np.array([a.GetFormalCharge() for a in work.GetAtoms()], dtype=np.int64)
    as_array = lambda x: np.array(x, dtype=np.int64)  # noqa: E731
    return (as_array(src), as_array(dst), as_array(order)), charges, kekulized


def aromatic_bond_codes(symbols: Sequence[str], bonds: tuple[np.ndarray, np.ndarray, np.ndarray], charges: np.ndarray,
                        hydrogens: np.ndarray | None = None) -> np.ndarray:
    """``[NB]`` the Kekulé ``bonds`` ``(src, dst, order)`` of one molecule with those RDKit calls
    aromatic coded :data:`~molediff.elements.AROMATIC` (what a model with an aromatic bond type reads);
    ``hydrogens`` [n]: attached-hydrogen counts of heavy atoms (None: hydrogens are atoms, or none).
    Unchanged when the molecule does not sanitize."""
    src, dst, order = (np.asarray(x, dtype=np.int64) for x in bonds)
    mol = Chem.RWMol(mol_from_bonds(symbols, src, dst, order))
    for k, atom in enumerate(mol.GetAtoms()):
        atom.SetFormalCharge(int(charges[k]))
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(int(hydrogens[k]) if hydrogens is not None else 0)
    flags = _aromatic_flags(mol)
    if flags is None:
        return order.copy()
    index = {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))): b.GetIdx() for b in mol.GetBonds()}
    return np.array([AROMATIC if flags[index[tuple(sorted((i, j)))]] else o for i, j, o in zip(src.tolist(), dst.tolist(), order.tolist())],
                    dtype=np.int64)


def _aromatic_flags(kekulized: Chem.Mol) -> list[bool] | None:
    """Per bond (by index) whether RDKit's aromaticity model calls it aromatic; None when the molecule
    does not sanitize (its Kekulé form is kept)."""
    work = sanitize(kekulized)
    return None if work is None else [b.GetIsAromatic() for b in work.GetBonds()]
