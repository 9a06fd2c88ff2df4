"""RDKit molecules from (symbols, 3D positions) and the validity conventions built on them.

* :func:`build_molecule` — an RDKit ``Mol`` with a 3D conformer and bonds from the lookup rule
  (:mod:`molediff.chem.bonds`) or from RDKit's ``rdDetermineBonds`` (connectivity + bond orders,
  charge-aware). RDKit failures never propagate: see :func:`bond_perception_status`.
* :func:`check_validity` — the published validity (``SanitizeMol`` passes; the canonical SMILES of the
  largest fragment is kept, as EDM's ``compute_validity``) and a strict validity (no implicit
  hydrogens or radicals added by sanitization, a single fragment).
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
from molediff.elements import Z_TO_SYMBOL

__all__ = [
    "ValidityResult",
    "bond_perception_status",
    "build_molecule",
    "check_validity",
    "mol_from_bonds",
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


def mol_to_smiles_largest_fragment(mol: Chem.Mol, sanitized: bool = False) -> str | None:
    """Canonical SMILES of the largest fragment of ``mol`` (EDM convention: sanitize the whole
    molecule, take the fragment with most atoms, sanitize it, ``MolToSmiles``); ``None`` if a
    sanitization fails. Pass ``sanitized=True`` when ``mol`` already is (skips one copy)."""
    if not sanitized:
        mol = sanitize(mol)
        if mol is None:
            return None
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    if len(frags) <= 1:
        return Chem.MolToSmiles(mol)
    largest = max(frags, key=lambda m: m.GetNumAtoms())
    largest = sanitize(largest)
    return None if largest is None else Chem.MolToSmiles(largest)


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
    """Element symbols ``[n]`` of ``mol``'s atoms."""
    return [Z_TO_SYMBOL.get(a.GetAtomicNum(), a.GetSymbol()) for a in mol.GetAtoms()]
