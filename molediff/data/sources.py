"""Where a ``molediff data`` build reads its molecules: MOSES (the ``molsets`` package's files), or the
user's SMILES file (one per line, optional name), CSV (a "smiles" column, optional name column) or
SDF, each optionally gzipped. A :class:`Source` lists its molecules in order as :class:`SourceItem`
(index, SMILES or mol block, title, line); its identity is its content (SHA-256 and size), so that
machines that see it at other paths build the same chunks."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, NamedTuple

from molediff.errors import UserError

__all__ = ["MOSES_SPLITS", "Source", "SourceItem", "moses_folder", "resolve_source", "sha256_file"]

MOSES_SPLITS: tuple[str, ...] = ("train", "test", "test_scaffolds")
SMILES_SUFFIXES: tuple[str, ...] = (".smi", ".smiles", ".txt")
CSV_SUFFIXES: tuple[str, ...] = (".csv",)
SDF_SUFFIXES: tuple[str, ...] = (".sdf", ".sd")
_HEADER_WORDS = {"smiles", "smi", "canonical_smiles", "smiles_string"}
_NAME_COLUMNS = ("name", "id", "title", "mol_id", "molecule_id", "compound_id")


#: :meth:`Source._chosen`'s draws, by (content, split, (n, seed))
_CHOSEN: dict[tuple, set[int]] = {}


class SourceItem(NamedTuple):
    index: int  # 0-based position among the source's molecules (names the molecule and seeds its embedding)
    kind: str  # "smiles" or "molblock"
    text: str
    title: str
    line: int  # 1-based line (text files) or record number (SDF)
    position: int | None = None  # 0-based position among the molecules built, where not index (a --sample)

    @property
    def at(self) -> int:
        """Where the molecule goes in the build (its chunk is ``at // chunk_size``)."""
        return self.index if self.position is None else self.position


@dataclass
class Source:
    """Where molecules come from: ``kind`` "moses", "smi", "csv" or "sdf"."""

    kind: str
    path: Path
    split: str | None = None
    sha256: str = ""
    size: int = 0
    mtime_ns: int = 0
    #: ``(n, seed)``: only ``n`` molecules drawn at random from the whole source (:meth:`subset`)
    sample: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        return self.path.name

    def where(self, line: int) -> str:
        return f"{self.label}:{'record' if self.kind == 'sdf' else 'line'} {line}"

    def identity(self) -> dict[str, Any]:
        """What makes two builds read the same molecules (content, not path or mtime: a shared
        folder may be built by machines that see the source at different paths)."""
        out = {"kind": self.kind, "split": self.split, "sha256": self.sha256, "size": self.size}
        if self.sample is not None:
            out["sample"] = list(self.sample)
        return out

    def describe(self) -> dict[str, Any]:
        return {**self.identity(), "path": str(self.path), "mtime_ns": self.mtime_ns}

    def subset(self, n: int, seed: int) -> "Source":
        """This source reduced to ``n`` of its molecules drawn uniformly at random without replacement (by
        ``seed``), kept in source order at positions 0 .. n − 1 (:attr:`SourceItem.at`); each keeps its
        index and line in the source, so it is named and embedded as in a build of the whole source. The
        draw is a hash of (seed, index) per molecule, the ``n`` smallest kept: it depends on nothing but
        those numbers (no library's random stream), so every machine and version picks the same ones.
        Raises :class:`UserError` when the source holds ``n`` molecules or fewer."""
        total = sum(1 for _ in self._all_items())
        if n >= total:
            raise UserError(f"--sample {n}: the source holds only {total} molecule{'s' * (total != 1)}; leave --sample "
                            "out to use them all")
        sub = dataclasses.replace(self, sample=(n, seed))
        sub._chosen(total)  # drawn now, from the count just made (one pass over the file, not two)
        return sub

    def _chosen(self, total: int | None = None) -> set[int]:
        """The source indices :meth:`subset` keeps (computed once per source content and draw; ``total``:
        the source's molecule count, where known)."""
        import numpy as np

        key = (self.sha256, self.split, self.sample)
        if key not in _CHOSEN:
            n, seed = self.sample
            if total is None:
                total = sum(1 for _ in self._all_items())
            keys = np.fromiter((int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "little")
                                for i in range(total)), dtype=np.uint64, count=total)
            _CHOSEN[key] = set(np.argsort(keys, kind="stable")[:n].tolist())
        return _CHOSEN[key]

    def items(self) -> Iterator[SourceItem]:
        if self.sample is None:
            yield from self._all_items()
            return
        chosen = self._chosen()
        k = 0
        for item in self._all_items():
            if item.index in chosen:
                yield item._replace(position=k)
                k += 1

    def _all_items(self) -> Iterator[SourceItem]:
        try:
            with _open_text(self.path) as f:
                if self.kind == "moses":
                    yield from _csv_items(f, self.path, f"moses_{self.split}_")
                elif self.kind == "csv":
                    yield from _csv_items(f, self.path, "")
                elif self.kind == "sdf":
                    yield from _sdf_items(f)
                else:
                    yield from _smi_items(f)
        except UnicodeDecodeError as exc:
            raise UserError(f"{self.path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except (OSError, EOFError, csv.Error) as exc:
            raise UserError(f"{self.path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None


def _open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _smi_items(f: IO[str]) -> Iterator[SourceItem]:
    index, first = 0, True
    for lineno, line in enumerate(f, 1):
        text = line.strip().lstrip("\ufeff")
        if not text or text.startswith("#"):
            continue
        parts = text.split(None, 1)
        if first:
            first = False
            if parts[0].lower() in _HEADER_WORDS:
                continue
        yield SourceItem(index, "smiles", parts[0], parts[1].strip() if len(parts) > 1 else "", lineno)
        index += 1


def _csv_items(f: IO[str], path: Path, title_prefix: str) -> Iterator[SourceItem]:
    reader = csv.reader(f)
    header = next(reader, None)
    while header is not None and not any(h.strip() for h in header):
        header = next(reader, None)
    if header is None:
        return
    cols = [h.strip().lstrip("\ufeff").lower() for h in header]
    if "smiles" not in cols:
        shown = ", ".join(repr(h.strip()) for h in header[:10]) + (" ..." if len(header) > 10 else "")
        raise UserError(f"{path}: no SMILES column (columns: {shown}); name the column with the SMILES 'smiles'")
    si = cols.index("smiles")
    ni = next((cols.index(n) for n in _NAME_COLUMNS if n in cols), None)
    index = 0
    for row in reader:
        if not row or not any(c.strip() for c in row):
            continue
        smiles = row[si].strip() if si < len(row) else ""
        name = row[ni].strip() if ni is not None and ni < len(row) else ""
        yield SourceItem(index, "smiles", smiles, name or (f"{title_prefix}{index}" if title_prefix else ""), reader.line_num)
        index += 1


def _sdf_items(f: IO[str]) -> Iterator[SourceItem]:
    index, record, buf = 0, 0, []
    for line in f:
        if line.strip() == "$$$$":
            record += 1
            text = "".join(buf)
            buf = []
            if text.strip():
                yield SourceItem(index, "molblock", text, text.split("\n", 1)[0].strip(), record)
                index += 1
            continue
        buf.append(line.rstrip("\r\n") + "\n")
    text = "".join(buf)
    if text.strip():  # a last record without its $$$$
        yield SourceItem(index, "molblock", text, text.split("\n", 1)[0].strip(), record + 1)


def moses_folder() -> Path:
    """The MOSES data files of the installed ``molsets`` package (found without importing it)."""
    from molediff.metrics.errors import MetricUnavailable
    from molediff.metrics.moses_data import moses_data_dir

    try:
        return moses_data_dir() / "dataset" / "data"
    except MetricUnavailable:
        raise UserError("the MOSES data set is not installed (it comes with the 'molsets' package: "
                        "pip install --no-deps molsets); install it or give --source FILE") from None


def resolve_source(source: str, split: str | None) -> Source:
    if source == "moses":
        split = split or "train"
        if split not in MOSES_SPLITS:
            raise UserError(f"--split must be one of {', '.join(MOSES_SPLITS)}, got {split!r}")
        path = moses_folder() / f"{split}.csv.gz"
        if not path.is_file():
            raise UserError(f"the MOSES file {path} is missing; reinstall molsets or give --source FILE")
        kind = "moses"
    else:
        if split is not None:
            raise UserError("--split applies to --source moses only")
        path = Path(source).expanduser()
        if not path.exists():
            raise UserError(f"--source {source}: no such file")
        if not path.is_file():
            raise UserError(f"--source {source}: not a file")
        name = path.name.lower().removesuffix(".gz")
        suffix = Path(name).suffix
        if suffix in SMILES_SUFFIXES:
            kind = "smi"
        elif suffix in CSV_SUFFIXES:
            kind = "csv"
        elif suffix in SDF_SUFFIXES:
            kind = "sdf"
        else:
            raise UserError(f"--source {source}: unsupported file type '{suffix or '(none)'}'; use .smi/.txt "
                            f"(one SMILES per line), .csv (a 'smiles' column) or .sdf (optionally .gz)")
    try:
        stat = path.stat()
        sha = sha256_file(path)
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return Source(kind, path.resolve(), split, sha, stat.st_size, stat.st_mtime_ns)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
