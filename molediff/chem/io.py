"""SDF and XYZ files of 3D molecules.

Writing is atomic: records stream into a temporary file next to the target, which is renamed onto
the target only when the writer is closed without error (an interrupted run leaves no half-written
file). Each SDF record carries 3D coordinates (Å), the perceived bonds and SD properties:

* ``SMILES`` — canonical SMILES of the largest fragment, only when the molecule is valid;
* ``molediff_valid``, ``molediff_strict_valid``, ``molediff_stable`` — ``1``/``0`` flags
  (published validity, strict validity, molecule stability with lookup bonds);
* ``molediff_bonds`` — how bonds were perceived (``lookup``, ``rdkit``, ``rdkit-connectivity``, ``failed``);
* any metadata passed by the caller (seed, model, sampler, ...), as text (JSON for lists/dicts).

Reading returns plain data (symbols, positions, the file's own Kekulé bonds and formal charges):
:func:`read_sdf` for every record of a file, :func:`read_one_molecule` / :func:`molecule_from_mol` for
the one molecule a caller needs (an inpainting fragment is built from it by :mod:`molediff.inpainting`).
This module imports nothing of molediff above the chemistry layer.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
from rdkit import Chem, rdBase

from molediff.atomic import AtomicFile
from molediff.chem.bonds import LOOKUP_VALENCE_MASK, check_bond_mode, lookup_bonds_stacked, symbols_to_types, valence_allowed, valence_sums
from molediff.elements import ATTACHMENT_POINT
from molediff.errors import UserError
from molediff.chem.rdkit_mol import bond_perception_status, build_molecule, check_validity, kekule_bonds, symbols_of

__all__ = [
    "OneMolecule",
    "RecordError",
    "SDFContents",
    "SDFRecord",
    "SDFWriter",
    "XYZWriter",
    "molecule_from_mol",
    "read_one_molecule",
    "read_sdf",
    "kekule_bonds",
    "write_sdf",
    "write_xyz",
]

#: A molecule to write: ``(symbols [n], pos [n, 3] Å)`` or ``(symbols, pos, metadata)``.
Record = tuple[Sequence[str], np.ndarray] | tuple[Sequence[str], np.ndarray, Mapping[str, Any]]


def _prop_text(value: Any) -> str:
    """One-line text for an SD property / XYZ comment value."""
    if isinstance(value, bool):
        text = "1" if value else "0"
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, default=str, separators=(",", ":"))
    elif isinstance(value, (np.generic,)):
        text = str(value.item())
    else:
        text = str(value)
    return " ".join(text.splitlines()) or " "


def _check_key(key: str) -> str:
    key = str(key)
    if not key or any(c in key for c in "<>\n\r") or key != key.strip():
        raise ValueError(f"invalid SD property name {key!r} (no <, >, newlines or surrounding spaces)")
    return key


def _unpack(record: Record) -> tuple[Sequence[str], np.ndarray, Mapping[str, Any]]:
    if len(record) == 2:
        symbols, pos = record  # type: ignore[misc]
        meta: Mapping[str, Any] = {}
    elif len(record) == 3:
        symbols, pos, meta = record  # type: ignore[misc]
    else:
        raise ValueError("a record is (symbols, pos) or (symbols, pos, metadata)")
    pos = np.asarray(pos, dtype=np.float64).reshape(-1, 3)
    if len(symbols) != len(pos):
        raise ValueError(f"record has {len(symbols)} symbols but {len(pos)} positions")
    return symbols, pos, meta or {}


class SDFWriter:
    """Streaming multi-record SDF writer; use as a context manager.

    >>> with SDFWriter("samples.sdf", metadata={"model": "qm9"}) as w:   # doctest: +SKIP
    ...     w.write(symbols, pos, {"seed": 0})

    Records are written as they come (nothing is held in memory). Call :meth:`close` (or leave the
    ``with`` block normally) to publish the file; an exception inside the block, :meth:`abort`, or a
    writer garbage-collected unclosed discards the temporary file and leaves ``path`` untouched.

    Args:
        path: target file; it appears (atomically) only when the writer closes without error.
        bonds: bond perception for the written bonds and flags, ``"lookup"`` or ``"rdkit"``.
        metadata: properties added to every record (per-record metadata overrides them).
        annotate: add the SMILES / validity / stability properties (costs one sanitization per record).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        bonds: str = "lookup",
        metadata: Mapping[str, Any] | None = None,
        annotate: bool = True,
    ) -> None:
        check_bond_mode(bonds)
        self.bonds = bonds
        self.annotate = annotate
        self.metadata = dict(metadata or {})
        for k in self.metadata:
            _check_key(k)
        self.count = 0
        self._file = AtomicFile(path)

    @property
    def path(self) -> Path:
        return self._file.path

    def write(
        self, symbols: Sequence[str], pos_angstrom: np.ndarray, metadata: Mapping[str, Any] | None = None, name: str | None = None,
        bonds: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, charges: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Append one molecule (``symbols`` ``[n]``, ``pos_angstrom`` ``[n, 3]`` Å). Returns the SD
        properties written for it (flags as bools).

        ``bonds`` ``(src [k], dst [k], order [k])`` (local indices, Kekulé orders 1–3) and ``charges``
        ``[n]``: the caller's own (a model's), written as given, with no implicit hydrogens; the record
        then carries both views: ``molediff_model_stable`` / ``molediff_model_valid`` (honest
        model-bond rule, :mod:`molediff.chem.model_bonds`) beside the lookup flags of the geometry.
        """
        pos = np.asarray(pos_angstrom, dtype=np.float64).reshape(-1, 3)
        if len(symbols) != len(pos):
            raise ValueError(f"{len(symbols)} symbols but {len(pos)} positions")
        props: dict[str, Any] = {}
        if bonds is not None:
            from molediff.chem.model_bonds import model_bond_scores, written_molecule

            src, dst, order = (np.asarray(b, dtype=np.int64) for b in bonds)
            charge = np.zeros(len(symbols), dtype=np.int64) if charges is None else np.asarray(charges, dtype=np.int64)
            mol = written_molecule(symbols, src, dst, order, charge, pos)
            if self.annotate:
                types = symbols_to_types(symbols)
                scores = model_bond_scores(types, charge, np.array([0, len(symbols)]), src, dst, order)
                if scores.smiles[0] is not None:
                    props["SMILES"] = scores.smiles[0]
                props["molediff_model_valid"] = bool(scores.valid[0])
                props["molediff_model_stable"] = bool(scores.molecule_stable[0])
                lookup = check_validity(build_molecule(symbols, pos, bonds="lookup"))
                props["molediff_valid"] = lookup.valid
                props["molediff_stable"] = _molecule_stable(symbols, pos)
                props["molediff_bonds"] = "model"
        else:
            mol = build_molecule(symbols, pos, bonds=self.bonds)
        if self.annotate and bonds is None:
            result = check_validity(mol)
            if result.smiles is not None:
                props["SMILES"] = result.smiles
            props["molediff_valid"] = result.valid
            props["molediff_strict_valid"] = result.strict_valid
            props["molediff_stable"] = _molecule_stable(symbols, pos)
            props["molediff_bonds"] = bond_perception_status(mol)
        props.update(self.metadata)
        props.update(metadata or {})
        title = name if name is not None else f"molecule_{self.count}"
        self._file.write(_record_block(mol, title, props))
        self.count += 1
        return props

    def write_all(self, records: Iterable[Record]) -> int:
        """Write every record; returns how many."""
        for record in records:
            symbols, pos, meta = _unpack(record)
            self.write(symbols, pos, meta)
        return self.count

    def close(self) -> None:
        """Finish: the file appears at :attr:`path`."""
        self._file.commit()

    def abort(self) -> None:
        """Discard everything written so far."""
        self._file.abort()

    def __enter__(self) -> "SDFWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _molecule_stable(symbols: Sequence[str], pos: np.ndarray) -> bool:
    """Lookup-bond molecule stability of one molecule: every atom's lookup bond-order sum is a valence
    the lookup rule allows (the test of :func:`molediff.metrics.stability`, through the same
    :func:`~molediff.chem.bonds.valence_allowed`); False outside the vocabulary or with no atoms."""
    try:
        types = symbols_to_types(symbols)
    except ValueError:
        return False
    if len(types) == 0:
        return False
    ptr = np.array([0, len(types)])
    lookup = lookup_bonds_stacked(types, np.asarray(pos, dtype=np.float64), ptr)
    return bool(valence_allowed(LOOKUP_VALENCE_MASK[types], valence_sums(len(types), lookup)).all())


def _record_block(mol: Chem.Mol, title: str, props: Mapping[str, Any]) -> str:
    mol = Chem.Mol(mol)
    mol.SetProp("_Name", " ".join(str(title).splitlines()))
    with rdBase.BlockLogs():
        mol.UpdatePropertyCache(strict=False)  # allow writing over-valent (invalid) molecules
        block = Chem.MolToMolBlock(mol, kekulize=False, includeStereo=False)
    # MolToMolBlock ends with "M  END"; SD data items follow, then the record separator
    parts = [block if block.endswith("\n") else block + "\n"]
    for key, value in props.items():
        parts.append(f">  <{_check_key(key)}>\n{_prop_text(value)}\n\n")
    parts.append("$$$$\n")
    return "".join(parts)


def write_sdf(
    path: str | os.PathLike, records: Iterable[Record], bonds: str = "lookup", metadata: Mapping[str, Any] | None = None
) -> int:
    """Write ``records`` (``(symbols, pos Å)`` or ``(symbols, pos, metadata)``) to one SDF, atomically.
    Returns the number of records written."""
    with SDFWriter(path, bonds=bonds, metadata=metadata) as writer:
        return writer.write_all(records)


class XYZWriter:
    """Streaming multi-frame XYZ writer (atomic like :class:`SDFWriter`). The comment line holds the
    name followed by ``key=value`` metadata."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.count = 0
        self._file = AtomicFile(path)

    @property
    def path(self) -> Path:
        return self._file.path

    def write(
        self, symbols: Sequence[str], pos_angstrom: np.ndarray, metadata: Mapping[str, Any] | None = None, name: str | None = None
    ) -> None:
        """Append one frame: ``symbols`` ``[n]``, ``pos_angstrom`` ``[n, 3]`` Å."""
        pos = np.asarray(pos_angstrom, dtype=np.float64).reshape(-1, 3)
        if len(symbols) != len(pos):
            raise ValueError(f"{len(symbols)} symbols but {len(pos)} positions")
        comment = [" ".join(str(name if name is not None else f"molecule_{self.count}").split())]
        for key, value in (metadata or {}).items():
            text = _prop_text(value)
            comment.append(f"{key}={json.dumps(text) if (' ' in text or '=' in text) else text}")
        lines = [str(len(symbols)), " ".join(comment)]
        lines += [f"{s:<2s} {x:14.8f} {y:14.8f} {z:14.8f}" for s, (x, y, z) in zip(map(str, symbols), pos.tolist())]
        self._file.write("\n".join(lines) + "\n")
        self.count += 1

    def close(self) -> None:
        self._file.commit()

    def abort(self) -> None:
        self._file.abort()

    def __enter__(self) -> "XYZWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_xyz(path: str | os.PathLike, records: Iterable[Record]) -> int:
    """Write ``records`` as a multi-frame XYZ file, atomically. Returns the number of frames."""
    with XYZWriter(path) as writer:
        for record in records:
            symbols, pos, meta = _unpack(record)
            writer.write(symbols, pos, meta)
        return writer.count


class SDFRecord(NamedTuple):
    """One molecule read from an SDF: ``symbols`` ``[n]``, ``pos`` ``[n, 3]`` float64 Å, ``props``
    (SD properties as text, plus ``_Name`` (the title) and ``_index`` (0-based record number)),
    the file's own ``bonds`` ``(src [k], dst [k], order [k])`` in Kekulé form and formal ``charges``
    ``[n]`` (see :func:`kekule_bonds`)."""

    symbols: list[str]
    pos: np.ndarray
    props: dict[str, str]
    bonds: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    charges: np.ndarray | None = None


class RecordError(NamedTuple):
    """A record that could not be used: 0-based ``index``, ``reason`` (a short category:
    ``"unreadable record"``, ``"no 3D coordinates"``, ``"no atoms"``) and ``detail`` (RDKit's message,
    the title, ...)."""

    index: int
    reason: str
    detail: str


class SDFContents(NamedTuple):
    """What :func:`read_sdf` found: usable ``records`` and per-record ``errors``."""

    records: list[SDFRecord]
    errors: list[RecordError]


@contextlib.contextmanager
def _captured_rdkit_log() -> Iterator[io.StringIO]:
    """Route RDKit's log to a buffer instead of the terminal (restores C++ stream logging after)."""
    buf = io.StringIO()
    rdBase.LogToPythonStderr()
    try:
        with contextlib.redirect_stderr(buf):
            yield buf
    finally:
        rdBase.LogToCppStreams()


def _log_detail(text: str) -> str:
    lines = [ln.split("] ", 1)[-1].strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if "moving to the beginning of the next molecule" not in ln]
    return "; ".join(lines)


def read_sdf(path: str | os.PathLike, require_3d: bool = True, aromatic: bool = False) -> SDFContents:
    """Read every record of an SDF (V2000 or V3000) without sanitizing and without dropping hydrogens.

    Args:
        path: the file.
        require_3d: report records without 3D coordinates (a ``2D`` header, no conformer, or 3+ atoms
            all at z = 0) as errors instead of returning them.
        aromatic: give aromatic bonds the code :data:`~molediff.elements.AROMATIC` in the records'
            bonds (see :func:`kekule_bonds`) instead of their Kekulé orders.

    Returns:
        :class:`SDFContents` ``(records, errors)``; ``records[k]`` unpacks as ``(symbols, pos, props)``.
        Nothing is dropped silently: every record is either in ``records`` or in ``errors``.

    Raises:
        OSError / UnicodeDecodeError when the file itself cannot be read.
    """
    text = Path(path).read_text(encoding="utf-8", errors="strict")
    records: list[SDFRecord] = []
    errors: list[RecordError] = []
    if not text.strip():
        return SDFContents(records, errors)
    supplier = Chem.SDMolSupplier()
    supplier.SetData(text, sanitize=False, removeHs=False, strictParsing=True)
    with _captured_rdkit_log() as log:
        n = len(supplier)
        if n == 0:
            errors.append(RecordError(0, "unreadable record", "no SDF record found (not an SDF file?)"))
        for k in range(n):
            start = log.tell()
            mol = supplier[k]
            if mol is None:
                log.seek(start)
                detail = _log_detail(log.read())
                title = supplier.GetItemText(k).split("\n", 1)[0].strip()
                errors.append(RecordError(k, "unreadable record", "; ".join(x for x in (f"title {title!r}" if title else "", detail) if x)))
                continue
            name = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
            if mol.GetNumAtoms() == 0:
                errors.append(RecordError(k, "no atoms", f"title {name!r}"))
                continue
            if mol.GetNumConformers() == 0:
                errors.append(RecordError(k, "no 3D coordinates", f"title {name!r}: no coordinates"))
                continue
            conf = mol.GetConformer()
            pos = np.array(conf.GetPositions(), dtype=np.float64).reshape(-1, 3)
            if require_3d and (not conf.Is3D() or (len(pos) >= 3 and np.all(pos[:, 2] == 0.0))):
                why = "2D header" if not conf.Is3D() else "all z = 0"
                errors.append(RecordError(k, "no 3D coordinates", f"title {name!r}: {why}"))
                continue
            props = {key: mol.GetProp(key) for key in mol.GetPropNames()}
            props["_Name"] = name
            props["_index"] = str(k)
            bonds, charges, kekulized = kekule_bonds(mol, aromatic=aromatic)
            if not kekulized:
                props["_molediff_unkekulizable"] = "1"
            implicit = implicit_hydrogens(mol)
            if implicit.any():  # the file leaves hydrogens implicit: say how many per atom
                props["_molediff_implicit_h"] = " ".join(map(str, implicit.tolist()))
            records.append(SDFRecord(symbols_of(mol), pos, props, bonds, charges))
    return SDFContents(records, errors)



def implicit_hydrogens(mol: Chem.Mol) -> np.ndarray:
    """``[n]`` hydrogens RDKit would add to each atom of ``mol`` as written (0 where the file carries
    them as atoms, or where the atom says it has none): a record written without its hydrogens shows here."""
    work = Chem.Mol(mol)
    with rdBase.BlockLogs():
        work.UpdatePropertyCache(strict=False)
    return np.array([a.GetNumImplicitHs() + a.GetNumExplicitHs() for a in work.GetAtoms()], dtype=np.int64)


class OneMolecule(NamedTuple):
    """One molecule as plain data: ``symbols`` [n], ``pos`` [n, 3] float64 Å, formal ``charges`` [n],
    its own ``bonds`` ``(src [k], dst [k], order [k])`` (Kekulé orders 1–3, src < dst) and ``name``
    (how messages about it name it). Field order is that of :class:`molediff.inpainting.Fragment`.
    Hydrogens are atoms: where a molecule has no hydrogen atoms at all, :func:`read_one_molecule` and
    :func:`molecule_from_mol` add its implicit ones (see :func:`_explicit_hydrogens`)."""

    symbols: list[str]
    pos: np.ndarray
    charges: np.ndarray
    bonds: tuple[np.ndarray, np.ndarray, np.ndarray]
    name: str


def molecule_from_mol(mol: Chem.Mol, name: str = "fragment", what: str = "fragment") -> OneMolecule:
    """An RDKit molecule with a 3D conformer as :class:`OneMolecule` (its own bonds, kekulized, and
    formal charges; hydrogens as given). A clear :class:`~molediff.errors.UserError` (naming it
    ``name`` and calling it "the ``what``") when it has no atoms, no 3D coordinates, or aromatic bonds
    that cannot be kekulized."""
    if mol is None or mol.GetNumAtoms() == 0:
        raise UserError(f"{name}: the {what} has no atoms")
    if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
        raise UserError(f"{name}: the {what} has no 3D coordinates")
    bonds, charges, kekulized = kekule_bonds(mol)
    if not kekulized:
        raise UserError(f"{name}: the {what}'s aromatic bonds cannot be kekulized; write it in Kekulé form")
    one = OneMolecule(symbols_of(mol), np.array(mol.GetConformer().GetPositions(), dtype=np.float64), charges, bonds, name)
    return _explicit_hydrogens(*_without_attachment_points(one, implicit_hydrogens(mol)))


def _without_attachment_points(one: OneMolecule, implicit: np.ndarray) -> tuple[OneMolecule, np.ndarray, bool]:
    """``one`` without its attachment points (:data:`~molediff.elements.ATTACHMENT_POINT` atoms), the
    implicit hydrogens ``[n]`` of the atoms kept, and whether there were any. The atom an attachment
    point was bonded to keeps the hydrogen count it had with it (RDKit counted the point as a
    neighbour), so it is left with an open valence there: where new atoms attach. A point must hang on
    exactly one atom by a single bond."""
    sym = np.asarray(one.symbols, dtype=object)
    points = sym == ATTACHMENT_POINT
    if not points.any():
        return one, np.asarray(implicit), False
    if points.all():
        raise UserError(f"{one.name}: the fragment has no atoms besides its attachment points")
    src, dst, order = (np.asarray(b, dtype=np.int64) for b in one.bonds)
    touches = points[src] | points[dst]
    for k in np.flatnonzero(points):
        mine = (src == k) | (dst == k)
        partners = np.where(src[mine] == k, dst[mine], src[mine])
        if len(partners) != 1 or points[partners[0]] or order[mine][0] != 1:
            raise UserError(f"{one.name}: attachment point {k + 1} ({ATTACHMENT_POINT}) must be bonded to exactly one "
                            "atom by a single bond")
    new_index = np.cumsum(~points) - 1
    keep = ~touches
    bonds = (new_index[src[keep]], new_index[dst[keep]], order[keep])
    kept = OneMolecule([s for s, p in zip(one.symbols, points) if not p], np.asarray(one.pos)[~points],
                       np.asarray(one.charges)[~points], bonds, one.name)
    return kept, np.asarray(implicit)[~points], True


def _explicit_hydrogens(one: OneMolecule, implicit: np.ndarray, sites_marked: bool = False) -> OneMolecule:
    """``one`` as the user meant it. Written with hydrogen atoms, it is taken as written: an atom with
    fewer hydrogens than its valence allows is where new atoms may attach (remove a hydrogen to open a
    site, or write an attachment point ``*``/``R`` there). Written without any hydrogen atom, its
    hydrogens are RDKit's implicit ones, added as atoms (placed from the geometry), so that implicit and
    explicit hydrogens mean the same thing; unless the file marks attachment points
    (``sites_marked``), a warning says so, since such a fragment then has no open site unless an atom's
    valence is left open."""
    if not np.asarray(implicit).any() or "H" in one.symbols:
        return one
    import warnings

    if not sites_marked:
        warnings.warn(f"{one.name}: written without hydrogen atoms; its {int(np.sum(implicit))} implicit hydrogens are kept "
                      "as hydrogens (new atoms attach only at open valences): to choose where new atoms attach, write the "
                      "hydrogens and remove those at the attachment points, or mark them with * (R) atoms", UserWarning,
                      stacklevel=3)
    from molediff.chem.hydrogens import place_hydrogens

    full = place_hydrogens(one.symbols, one.pos, *one.bonds, one.charges, np.asarray(implicit, dtype=np.int64), relax=False)
    return OneMolecule(list(full.symbols), np.asarray(full.pos, dtype=np.float64), np.asarray(full.charges, dtype=np.int64),
                       full.bonds, one.name)


def read_one_molecule(path: str | os.PathLike, what: str = "fragment") -> OneMolecule:
    """The one molecule of an SDF/MOL file as :class:`OneMolecule` (``name`` is ``"{what} {path}"``);
    a clear :class:`~molediff.errors.UserError`, starting with ``"{what} {path}: "``, for a missing,
    empty, multi-record, 2D or unreadable file. ``what`` is the caller's word for it (a command may pass
    its option's name)."""
    path = Path(path)
    label = f"{what} {path}"
    if not path.is_file():
        raise UserError(f"{label}: no such file")
    try:
        contents = read_sdf(path, require_3d=True)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{label}: cannot read it ({exc})") from None
    total = len(contents.records) + len(contents.errors)
    if total == 0:
        raise UserError(f"{label}: the file holds no molecule")
    if total > 1:
        raise UserError(f"{label}: the file holds {total} records; give one molecule")
    if contents.errors:
        e = contents.errors[0]
        raise UserError(f"{label}: {e.reason} ({e.detail})")
    rec = contents.records[0]
    one = OneMolecule(rec.symbols, rec.pos, rec.charges, rec.bonds, label)
    implicit = rec.props.get("_molediff_implicit_h")
    implicit = np.array(implicit.split(), dtype=np.int64) if implicit else np.zeros(len(rec.symbols), dtype=np.int64)
    return _explicit_hydrogens(*_without_attachment_points(one, implicit))
