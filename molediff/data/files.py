"""Read the user's own 3D molecules from SDF and XYZ files (or folders of them) into a :class:`MoleculeSet`.

Nothing is dropped silently and bad input never produces a traceback: every record that cannot be
used is counted under a reason in the :class:`FileReadReport` (unreadable record, element outside
the vocabulary, no 3D coordinates, too many atoms, overlapping atoms when asked, ...), and
:class:`~molediff.errors.UserError` is raised when no usable molecule remains. SDF parsing goes through :mod:`molediff.chem` (RDKit);
XYZ parsing is plain Python.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from molediff.chem.bonds import OVERLAP_DISTANCE, closest_pair
from molediff.data.molecules import MoleculeSet, ptr_from_counts
from molediff.elements import ELEMENTS, SYMBOL_TO_INDEX, Z_TO_SYMBOL
from molediff.errors import UserError

__all__ = ["FileReadReport", "SDF_SUFFIXES", "XYZ_SUFFIXES", "read_molecule_files", "read_xyz"]

SDF_SUFFIXES: tuple[str, ...] = (".sdf", ".sd", ".mol")
XYZ_SUFFIXES: tuple[str, ...] = (".xyz",)

# Reason categories (keys of FileReadReport.skipped).
UNREADABLE_FILE = "unreadable file"
EMPTY_FILE = "empty file"
UNSUPPORTED_TYPE = "unsupported file type"
UNREADABLE = "unreadable record"
NO_ATOMS = "no atoms"
NO_3D = "no 3D coordinates"
BAD_ELEMENT = "element outside molediff's table"
TOO_MANY = "too many atoms"
NON_FINITE = "non-finite coordinates"
OVERLAP = "overlapping atoms"
IMPLICIT_H = "hydrogens implicit (add them, e.g. RDKit AddHs(addCoords=True), or train a heavy-atom model)"

#: what the SDF reader says of a file in which it finds no record at all
NOT_SDF = "no SDF record found (not an SDF file?)"
#: reasons that skip a whole file (not counted among the records)
FILE_REASONS = (UNREADABLE_FILE, EMPTY_FILE, UNSUPPORTED_TYPE)
_MAX_EXAMPLES = 5


@dataclass
class FileReadReport:
    """What :func:`read_molecule_files` did.

    ``files``: files looked at. ``num_records``: records seen (used + skipped). ``num_read``: molecules
    kept. ``skipped``: count per reason. ``unknown_elements``: count of records per offending element
    symbol. ``examples``: up to 5 ``"file:record: detail"`` strings per reason. ``overlapping``:
    records kept although two of their atoms overlap (``overlapping="keep"``), with up to 5
    ``overlapping_examples``.
    """

    files: list[str] = field(default_factory=list)
    num_records: int = 0
    num_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    unknown_elements: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    overlapping: int = 0
    overlapping_examples: list[str] = field(default_factory=list)

    def add_skip(self, reason: str, where: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < _MAX_EXAMPLES:
            ex.append(f"{where}: {detail}" if detail else where)

    @property
    def num_skipped(self) -> int:
        return int(sum(self.skipped.values()))

    def summary(self) -> str:
        """Human-readable multi-line summary (one line when everything was read). Records and whole
        files are counted apart: "read 5 of 7 records" and "skipped 2 records, 2 files" add up."""
        head = f"read {self.num_read} of {self.num_records} molecule record(s) from {len(self.files)} file(s)"
        kept = []
        if self.overlapping:
            kept.append(f"  {self.overlapping} record(s) kept with {OVERLAP} (two atoms closer than {OVERLAP_DISTANCE} Å): "
                        "not a real geometry; any bonds they carry are not used")
            kept += [f"      e.g. {ex}" for ex in self.overlapping_examples]
        if not self.skipped:
            return "\n".join([head] + kept)
        files = sum(n for reason, n in self.skipped.items() if reason in FILE_REASONS)
        records = self.num_skipped - files
        parts = [f"{records} record(s)" if records else "", f"{files} file(s)" if files else ""]
        lines = [head + f"; skipped {', '.join(x for x in parts if x)}:"]
        for reason, count in self.skipped.most_common():
            line = f"  {count} x {reason}"
            if reason == BAD_ELEMENT and self.unknown_elements:
                names = ", ".join(f"{el} ({n})" for el, n in self.unknown_elements.most_common())
                line += f": {names}; supported elements are {', '.join(ELEMENTS)}"
            lines.append(line)
            for ex in self.examples.get(reason, []):
                lines.append(f"      e.g. {ex}")
        return "\n".join(lines + kept)

    def to_dict(self) -> dict:
        return {
            "files": list(self.files),
            "num_records": self.num_records,
            "num_read": self.num_read,
            "skipped": dict(self.skipped),
            "unknown_elements": dict(self.unknown_elements),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "overlapping": self.overlapping,
            "overlapping_examples": list(self.overlapping_examples),
        }


def _normalise_symbol(token: str) -> str:
    """``"c"``/``"CL"``/``"6"`` -> ``"C"``/``"Cl"``/``"C"`` (atomic numbers of the vocabulary accepted)."""
    token = token.strip()
    if token.isdigit():
        return Z_TO_SYMBOL.get(int(token), f"Z={token}")
    return token[:1].upper() + token[1:].lower()


def read_xyz(path: str | os.PathLike) -> tuple[list[tuple[int, list[str], np.ndarray, str]], list[tuple[int, str, str]]]:
    """Parse a single- or multi-frame XYZ file (plain and extended XYZ; extra columns ignored).

    Returns ``(frames, errors)``: ``frames`` as ``(frame index, symbols [n], pos [n, 3] float64 Å,
    comment)``, ``errors`` as ``(frame index, reason, detail)`` (0-based frame indices). After a broken frame parsing resumes at the next
    line holding only an atom count.

    Raises:
        OSError / UnicodeDecodeError when the file cannot be read as text.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    frames: list[tuple[int, list[str], np.ndarray, str]] = []
    errors: list[tuple[int, str, str]] = []
    i, n_lines, index = 0, len(lines), 0
    while i < n_lines:
        head = lines[i].strip()
        if not head:
            i += 1
            continue
        fields = head.split()
        if len(fields) != 1 or not fields[0].lstrip("+-").isdigit():
            errors.append((index, UNREADABLE, f"line {i + 1}: expected an atom count, got {head[:40]!r}"))
            index += 1
            i = _next_count_line(lines, i + 1)
            continue
        count = int(fields[0])
        if count == 0:
            errors.append((index, NO_ATOMS, f"line {i + 1}: atom count 0"))
            index += 1
            i += 2
            continue
        comment = lines[i + 1] if i + 1 < n_lines else ""
        body = lines[i + 2 : i + 2 + count]
        symbols: list[str] = []
        coords: list[list[float]] = []
        problem = None
        if count < 0:
            problem = f"line {i + 1}: negative atom count {count}"
        elif len(body) < count:
            problem = f"line {i + 1}: frame declares {count} atoms but the file ends after {len(body)}"
        else:
            for k, line in enumerate(body):
                parts = line.split()
                try:
                    if len(parts) < 4:
                        raise ValueError
                    coords.append([float(parts[1]), float(parts[2]), float(parts[3])])
                    symbols.append(_normalise_symbol(parts[0]))
                except ValueError:
                    problem = f"line {i + 3 + k}: expected 'element x y z', got {line.strip()[:40]!r}"
                    break
        if problem:
            errors.append((index, UNREADABLE, problem))
            index += 1
            i = _next_count_line(lines, i + 1)
            continue
        frames.append((index, symbols, np.asarray(coords, dtype=np.float64).reshape(-1, 3), comment.strip()))
        index += 1
        i += 2 + count
    return frames, errors


def _next_count_line(lines: Sequence[str], start: int) -> int:
    """Index of the next line that holds only a non-negative integer (a frame header), else len(lines)."""
    for j in range(start, len(lines)):
        s = lines[j].strip()
        if s.isdigit():
            return j
    return len(lines)


def _expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in SDF_SUFFIXES + XYZ_SUFFIXES)
            if not found:
                raise UserError(f"{path}: folder holds no .sdf/.sd/.mol or .xyz files")
            out.extend(found)
        else:
            out.append(path)
    return out


def read_molecule_files(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    max_atoms: int | None = None,
    limit: int | None = None,
    bonds: bool = False,
    implicit_hydrogens: str = "ignore",
    overlapping: str = "keep",
    aromatic: bool = False,
) -> tuple[MoleculeSet, FileReadReport]:
    """Read molecules from SDF (``.sdf``/``.sd``/``.mol``) and XYZ files or folders (searched recursively).

    Args:
        paths: a path or several.
        max_atoms: skip molecules with more atoms than this (``None``: no limit; training data takes
            :data:`molediff.config.TRAINING_MAX_ATOMS`), counted as "too many atoms".
        limit: stop after this many usable molecules (``None``: all).
        bonds: also give each molecule bonds and formal charges: an SDF record's own (aromatic bonds
            kekulized), for XYZ frames perceived with RDKit (``rdDetermineBonds``); molecules whose
            bonds cannot be had (an aromatic system that cannot be kekulized, failed perception) are
            kept with ``has_bonds`` False. Without it, the file's bonds are not read (no RDKit for XYZ).
        implicit_hydrogens: what to do with an SDF record that leaves hydrogens implicit (atoms RDKit
            would give hydrogens): "ignore" (read as written, the default: scoring a file), "refuse" (skipped, counted under its reason: an explicit-H model
            would learn molecules without their hydrogens) or "count" (kept, the counts in the set's
            ``hydrogens``, for a heavy-atom model; explicit hydrogen atoms are counted by
            :meth:`MoleculeSet.heavy_atoms`).
        overlapping: what to do with a record two of whose atoms are closer than
            :data:`OVERLAP_DISTANCE` (duplicated coordinates, a clash): "keep" (the default: scoring a
            file; the molecule is read as written, with ``has_bonds`` False when ``bonds``, so that
            bond-based scores count it unstable and invalid, and counted in the report's
            ``overlapping``) or "refuse" (skipped under "overlapping atoms": training data).
        aromatic: with ``bonds``, an SDF record's aromatic bonds (RDKit's aromaticity model) carry the
            code :data:`~molediff.elements.AROMATIC` instead of a Kekulé order: the data of a model with
            an aromatic bond type (XYZ frames' perceived bonds too).

    Returns:
        ``(molecules, report)``: a :class:`MoleculeSet` (pos [N, 3] float32 Å, atom_type [N] into
        ELEMENTS, names ``"file:record"``) and the :class:`FileReadReport`.

    Raises:
        UserError: a path does not exist, or no usable molecule was found (the message carries the
        report's summary).
    """
    if implicit_hydrogens not in ("ignore", "refuse", "count"):
        raise ValueError(f"implicit_hydrogens must be 'ignore', 'refuse' or 'count', got {implicit_hydrogens!r}")
    if overlapping not in ("keep", "refuse"):
        raise ValueError(f"overlapping must be 'keep' or 'refuse', got {overlapping!r}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = _expand(paths)
    if not files:
        raise UserError("no input files given")
    report = FileReadReport(files=[str(f) for f in files])
    reader = _Reader(report, max_atoms, bonds, implicit_hydrogens, overlapping, aromatic)
    for file in files:
        if limit is not None and report.num_read >= limit:
            break
        contents = _file_records(file, report, aromatic)
        if contents is None:
            continue
        items, bad = contents
        for where, reason, detail in bad:
            report.num_records += 1
            report.add_skip(reason, where, detail)
        for symbols, pos, where, own, implicit in items:
            if limit is not None and report.num_read >= limit:
                break
            reader.record(list(symbols), pos, where, own, implicit)
    if report.num_read == 0:
        raise UserError("no usable molecules in " + ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "") + "\n" + report.summary())
    return reader.molecule_set(), report


def _file_records(file: Path, report: FileReadReport, aromatic: bool) -> tuple[list[tuple], list[tuple[str, str, str]]] | None:
    """One file's records ``(symbols, pos, "file:record", own bonds or None, implicit hydrogens or None)``
    and its unreadable records ``("file:record", reason, detail)``; None for a file skipped whole (its
    reason counted in ``report``)."""
    suffix = file.suffix.lower()
    if suffix not in SDF_SUFFIXES + XYZ_SUFFIXES:
        report.add_skip(UNSUPPORTED_TYPE, file.name, f"'{file.suffix or '(none)'}'; use .sdf or .xyz")
        return None
    try:
        is_empty = file.stat().st_size == 0
    except OSError as exc:
        report.add_skip(UNREADABLE_FILE, file.name, exc.strerror or str(exc))
        return None
    if is_empty:
        report.add_skip(EMPTY_FILE, file.name, "0 bytes")
        return None
    try:
        if suffix in XYZ_SUFFIXES:
            frames, errors = read_xyz(file)
            items = [(sym, pos, f"{file.name}:{idx}", None, None) for idx, sym, pos, _comment in frames]
            bad = [(f"{file.name}:{idx}", reason, detail) for idx, reason, detail in errors]
        else:
            from molediff.chem.io import read_sdf  # RDKit only when SDFs are read

            contents = read_sdf(file, require_3d=True, aromatic=aromatic)
            if not contents.records and [e.detail for e in contents.errors] == [NOT_SDF]:
                report.add_skip(UNREADABLE_FILE, file.name, NOT_SDF)  # a whole file, not a record
                return None
            items = [(r.symbols, r.pos, f"{file.name}:{r.props['_index']}",
                      (*r.bonds, r.charges, "_molediff_unkekulizable" not in r.props), r.props.get("_molediff_implicit_h"))
                     for r in contents.records]
            bad = [(f"{file.name}:{e.index}", e.reason, e.detail) for e in contents.errors]
    except (UnicodeDecodeError, ValueError) as exc:
        report.add_skip(UNREADABLE_FILE, file.name, f"not a text {suffix} file ({type(exc).__name__})")
        return None
    except OSError as exc:
        report.add_skip(UNREADABLE_FILE, file.name, exc.strerror or str(exc))
        return None
    if not items and not bad:
        report.add_skip(EMPTY_FILE, file.name, "only whitespace")
        return None
    return items, bad


class _Reader:
    """The molecules :func:`read_molecule_files` keeps (each record checked, kept or counted under its
    reason in ``report``), and the :class:`MoleculeSet` they make."""

    def __init__(self, report: FileReadReport, max_atoms: int | None, bonds: bool, implicit_hydrogens: str, overlapping: str,
                 aromatic: bool) -> None:
        self.report, self.max_atoms, self.bonds = report, max_atoms, bonds
        self.implicit_hydrogens, self.overlapping, self.aromatic = implicit_hydrogens, overlapping, aromatic
        self.types: list[np.ndarray] = []
        self.pos: list[np.ndarray] = []
        self.names: list[str] = []
        self.bond_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]] = []
        self.hydrogens: list[np.ndarray] = []

    def _refusal(self, symbols: Sequence[str], pos: np.ndarray, implicit: str | None) -> tuple[str, str] | None:
        """Why a record is not used, ``(reason, detail)``, or None (overlapping atoms are judged apart)."""
        if len(symbols) == 0:
            return NO_ATOMS, ""
        if implicit is not None and self.implicit_hydrogens == "refuse":
            return IMPLICIT_H, f"{sum(map(int, implicit.split()))} hydrogens not written"
        unknown = sorted({s for s in symbols if s not in SYMBOL_TO_INDEX})
        if unknown:
            for el in unknown:
                self.report.unknown_elements[el] += 1
            return BAD_ELEMENT, ", ".join(unknown)
        if self.max_atoms is not None and len(symbols) > self.max_atoms:
            return TOO_MANY, f"{len(symbols)} atoms > {self.max_atoms}"
        if not np.isfinite(pos).all():
            return NON_FINITE, ""
        if len(symbols) >= 3 and np.all(pos[:, 2] == 0.0):
            return NO_3D, "all z = 0"
        return None

    def record(self, symbols: Sequence[str], pos: np.ndarray, where: str, own: tuple | None = None,
               implicit: str | None = None) -> None:
        """Check one record and keep it, or count it under its reason."""
        report = self.report
        report.num_records += 1
        refused = self._refusal(symbols, pos, implicit)
        if refused is not None:
            report.add_skip(refused[0], where, refused[1])
            return
        close = closest_pair(pos)
        if close is not None:
            i, j, d = close
            detail = f"atoms {i} and {j} ({symbols[i]}, {symbols[j]}) {d:.3f} Å apart"
            if self.overlapping == "refuse":
                report.add_skip(OVERLAP, where, detail)
                return
            report.overlapping += 1
            if len(report.overlapping_examples) < _MAX_EXAMPLES:
                report.overlapping_examples.append(f"{where}: {detail}")
        self.types.append(np.fromiter((SYMBOL_TO_INDEX[s] for s in symbols), dtype=np.int64, count=len(symbols)))
        self.hydrogens.append(np.array(implicit.split(), dtype=np.int64) if implicit else np.zeros(len(symbols), dtype=np.int64))
        self.pos.append(np.asarray(pos, dtype=np.float32).reshape(-1, 3))
        self.names.append(where)
        report.num_read += 1
        if self.bonds:
            if close is not None:  # bonds of a broken geometry are not used (and perceiving them can crash RDKit)
                own = (*own[:4], False) if own is not None else _no_bonds(len(symbols))
            self.bond_parts.append(own if own is not None else _perceive(symbols, pos, self.aromatic))

    def molecule_set(self) -> MoleculeSet:
        """The kept molecules (with bonds and charges, and hydrogen counts, where asked)."""
        counts = torch.tensor([len(t) for t in self.types], dtype=torch.long)
        extra = {}
        if self.bonds:
            parts = self.bond_parts
            cat = lambda xs: torch.from_numpy(np.concatenate(xs).astype(np.int64))  # noqa: E731
            extra = dict(charge=cat([b[3] for b in parts]),
                         bond_index=torch.stack([cat([b[0] for b in parts]), cat([b[1] for b in parts])]),
                         bond_order=cat([b[2] for b in parts]),
                         bond_ptr=ptr_from_counts(torch.tensor([len(b[2]) for b in parts], dtype=torch.long)),
                         has_bonds=torch.tensor([b[4] for b in parts], dtype=torch.bool))
        if self.implicit_hydrogens == "count" and any(h.any() for h in self.hydrogens):
            extra["hydrogens"] = torch.from_numpy(np.concatenate(self.hydrogens))
        return MoleculeSet(torch.from_numpy(np.concatenate(self.pos)), torch.from_numpy(np.concatenate(self.types)),
                           ptr_from_counts(counts), self.names, **extra)


def _no_bonds(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """No bonds, neutral atoms, ``has_bonds`` False: what a molecule whose bonds cannot be had carries."""
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty, empty, np.zeros(n, dtype=np.int64), False


def _perceive(symbols: Sequence[str], pos: np.ndarray, aromatic: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Bonds and charges of a bare geometry (an XYZ frame) by RDKit perception, in Kekulé form (aromatic
    bonds coded as such with ``aromatic``)."""
    from molediff.chem.rdkit_mol import kekule_bonds
    from molediff.chem.rdkit_mol import bond_perception_status, build_molecule

    mol = build_molecule(symbols, np.asarray(pos, dtype=np.float64), bonds="rdkit")
    (src, dst, order), charges, kekulized = kekule_bonds(mol, aromatic=aromatic)
    return src, dst, order, charges, kekulized and bond_perception_status(mol) == "rdkit"


def with_condition_properties(molecules: MoleculeSet, names: Sequence[str], progress: bool = False) -> MoleculeSet:
    """``molecules`` with ``props`` [M, len(DRUGLIKE_CONDITION_NAMES)] float64: the drug-like conditioning
    properties ``names`` (:data:`molediff.conditioning.DRUGLIKE_PROPERTIES`) computed with RDKit from
    each molecule's own bonds, charges and hydrogens (aromatic bond codes kekulized first); the columns
    not asked for, and molecules RDKit cannot read, hold NaN (a NaN condition counts as "not given").
    Needs bonds; about 1–2 ms a molecule with QED, so a progress bar for large sets."""
    from tqdm import tqdm

    from molediff.chem.analysis import condition_values
    from molediff.chem.kekule import kekulize
    from molediff.conditioning import BY_NAME, DRUGLIKE_CONDITION_NAMES, property_columns

    cols = property_columns(list(names))
    columns = [BY_NAME[n].column for n in names]
    props = np.full((len(molecules), len(DRUGLIKE_CONDITION_NAMES)), np.nan)
    symbols = np.array(ELEMENTS)
    hydrogens = molecules.hydrogens
    for i in tqdm(range(len(molecules)), desc="drug-like properties", unit="mol", disable=not progress, mininterval=2.0):
        a, b = int(molecules.ptr[i]), int(molecules.ptr[i + 1])
        if not bool(molecules.has_bonds[i]):
            continue
        src, dst, order, charge = molecules.bonds(i)
        types = molecules.atom_type[a:b].numpy()
        h = None if hydrogens is None else hydrogens[a:b].numpy()
        order, _ = kekulize(types, charge, src, dst, order, h)
        props[i, cols] = condition_values(symbols[types], src, dst, order, charge, h, columns)
    out = molecules.subset(torch.arange(len(molecules)))
    out.props = torch.from_numpy(props)
    return out
