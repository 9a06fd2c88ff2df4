"""``molediff data``: SMILES (MOSES or the user's file) → a folder of 3D training molecules in SDF chunks.

Layout of an output folder::

    chunk_000000.sdf   molecules of source indices [0, chunk_size), in source order (failures left out)
    chunk_000000.json  sidecar: the build settings, the chunk's index range, the SDF's SHA-256 and size,
                       every failure (source index, line, input, reason, detail), standardisation counts
    ...
    manifest.json      written once every chunk is present and verified: source signature, settings,
                       the chunks with their checksums, counts by reason

Design (the simplest one that is correct):

* A chunk is a fixed range of *source* molecules, so its content depends only on the source, the
  settings and the per-molecule seeds (:func:`molediff.chem.conformers.molecule_seed` of ``--seed`` and
  the source index), never on workers, shards or interruptions: a rebuild is bit-identical.
* Chunk files are written atomically (:mod:`molediff.atomic`), the SDF first and its sidecar last; a
  chunk counts as built only when its sidecar exists, names these settings and the SDF matches the
  checksum. Resuming rebuilds exactly the chunks that are missing or corrupt; a ``kill -9`` at any
  moment loses at most the chunks in progress.
* Shards (``--shard I/N``) build chunks ``c`` with ``c % N == I`` into the same folder; every builder
  reads the whole source (cheap next to embedding; duplicates are found in source order). The builder
  that finds every chunk present writes ``manifest.json``; ``--check`` verifies a folder and writes it.
* A lock file per shard (``.build.lock``, ``.build-shard-I-of-N.lock``) refuses a second live builder
  of the same chunks on this machine.

Exact duplicate SMILES (the same text after trimming) are dropped as "duplicate", naming the first
occurrence; other spellings of the same molecule are kept. SDF sources are not de-duplicated.

:func:`built_files` gives the verified chunk SDFs of a finished build in order; they read with
:func:`molediff.chem.io.read_sdf` and ``molediff train --data DIR``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator, NamedTuple

from molediff._version import __version__
from molediff.atomic import OutputLock, atomic_write, lock_owner
from molediff.config import TRAINING_MAX_ATOMS
from molediff.errors import UserError

__all__ = ["BuildOptions", "BuildReport", "MOSES_SPLITS", "build", "built_files", "check", "parse_shard"]

FORMAT = "molediff-data/1"
MANIFEST = "manifest.json"
MOSES_SPLITS: tuple[str, ...] = ("train", "test", "test_scaffolds")
SMILES_SUFFIXES: tuple[str, ...] = (".smi", ".smiles", ".txt")
CSV_SUFFIXES: tuple[str, ...] = (".csv",)
SDF_SUFFIXES: tuple[str, ...] = (".sdf", ".sd")
DUPLICATE = "duplicate"
_HEADER_WORDS = {"smiles", "smi", "canonical_smiles", "smiles_string"}
_NAME_COLUMNS = ("name", "id", "title", "mol_id", "molecule_id", "compound_id")
_CHUNK_RE = re.compile(r"^chunk_(\d{6,})\.(sdf|json)$")
_LOCK_RE = re.compile(r"^\.build(?:-shard-(\d+)-of-(\d+))?\.lock$")
_MAX_EXAMPLES = 5


# ----------------------------------------------------------------------------------------------- source


class SourceItem(NamedTuple):
    index: int  # 0-based position among the source's molecules
    kind: str  # "smiles" or "molblock"
    text: str
    title: str
    line: int  # 1-based line (text files) or record number (SDF)


@dataclass
class Source:
    """Where molecules come from: ``kind`` "moses", "smi", "csv" or "sdf"."""

    kind: str
    path: Path
    split: str | None = None
    sha256: str = ""
    size: int = 0
    mtime_ns: int = 0

    @property
    def label(self) -> str:
        return self.path.name

    def where(self, line: int) -> str:
        return f"{self.label}:{'record' if self.kind == 'sdf' else 'line'} {line}"

    def identity(self) -> dict[str, Any]:
        """What makes two builds read the same molecules (content, not path or mtime: a shared
        folder may be built by machines that see the source at different paths)."""
        return {"kind": self.kind, "split": self.split, "sha256": self.sha256, "size": self.size}

    def describe(self) -> dict[str, Any]:
        return {**self.identity(), "path": str(self.path), "mtime_ns": self.mtime_ns}

    def items(self) -> Iterator[SourceItem]:
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
        sha = _sha256_file(path)
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return Source(kind, path.resolve(), split, sha, stat.st_size, stat.st_mtime_ns)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- options


@dataclass
class BuildOptions:
    """What ``molediff data`` was asked to do (see its ``--help``)."""

    out: Path
    source: str = "moses"
    split: str | None = None
    limit: int | None = None
    seed: int = 0
    conformers: int = 1
    max_atoms: int = TRAINING_MAX_ATOMS
    chunk_size: int = 1000
    workers: int | None = None  # None: all cores
    shard: tuple[int, int] = (0, 1)
    force: bool = False
    progress: bool = True

    def validate(self) -> None:
        for name, value, low in (("--limit", self.limit, 1), ("--seed", self.seed, 0), ("--conformers", self.conformers, 1),
                                 ("--max-atoms", self.max_atoms, 1), ("--chunk-size", self.chunk_size, 1),
                                 ("--workers", self.workers, 1)):
            if value is not None and value < low:
                raise UserError(f"{name} must be ≥ {low}, got {value}")
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise UserError(f"--shard I/N needs 0 ≤ I < N, got {i}/{n}")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` → ``(2, 8)``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise UserError(f"--shard must look like I/N (e.g. 0/4), got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard I/N needs 0 ≤ I < N, got {text!r}")
    return i, n


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _settings(source: Source, opts: BuildOptions) -> dict[str, Any]:
    """Everything the chunk files depend on; a folder holds one build of one set of settings."""
    from molediff.chem.conformers import MAX_FF_ITERS, RDKIT_VERSION

    return {
        "format": FORMAT,
        "source": source.identity(),
        "limit": opts.limit,
        "seed": opts.seed,
        "conformers": opts.conformers,
        "max_atoms": opts.max_atoms,
        "chunk_size": opts.chunk_size,
        "force_field_iterations": MAX_FF_ITERS,
        "molediff_version": __version__,
        "rdkit_version": RDKIT_VERSION,
    }


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            show = lambda v: "all" if v is None and key == "limit" else (v[:12] + "…" if isinstance(v, str) and len(v) > 16 else v)  # noqa: E731
            out.append(f"{prefix}{key} {show(a)!s} → {show(b)!s}")
    return out


# ----------------------------------------------------------------------------------------------- chunks


def _chunk_path(out: Path, c: int, ext: str) -> Path:
    return out / f"chunk_{c:06d}.{ext}"


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _verify_chunk(out: Path, c: int, settings: dict, first: int, count: int) -> tuple[str, dict | None]:
    """``("ok", sidecar)`` or ``(problem, None)``: "missing", "other settings", "corrupt ..."."""
    side_path = _chunk_path(out, c, "json")
    if not side_path.exists():
        return ("missing" if not _chunk_path(out, c, "sdf").exists() else "incomplete (no sidecar)"), None
    side = _read_json(side_path)
    if side is None or side.get("format") != FORMAT:
        return "corrupt sidecar", None
    if side.get("settings") != settings:
        return "other settings", None
    if side.get("chunk") != c or side.get("first") != first or side.get("count") != count:
        return "corrupt sidecar (wrong range)", None
    sdf = _chunk_path(out, c, "sdf")
    if side.get("sdf") is None:
        return ("ok", side) if side.get("written") == 0 else ("corrupt sidecar", None)
    if side.get("sdf") != sdf.name:
        return "corrupt sidecar", None
    try:
        if sdf.stat().st_size != side.get("sdf_bytes"):
            return "corrupt SDF (size differs)", None
        if _sha256_file(sdf) != side.get("sdf_sha256"):
            return "corrupt SDF (checksum differs)", None
    except FileNotFoundError:
        return "missing SDF", None
    except OSError as exc:
        return f"unreadable SDF ({exc.strerror or exc})", None
    return "ok", side


def _write_chunk(out: Path, c: int, first: int, settings: dict, source: Source,
                 entries: list[tuple[SourceItem, tuple | None]], results: list[tuple | None]) -> dict:
    blocks: list[str] = []
    failures: list[dict] = []
    standardised: Counter = Counter()
    for (item, pre), res in zip(entries, results):
        status = pre if pre is not None else res
        if status[0] == "ok":
            blocks.append(status[1])
            standardised.update(status[2])
        else:
            failures.append({"index": item.index, "where": source.where(item.line),
                             "input": item.text[:200] if item.kind == "smiles" else (item.title[:200] or "(untitled record)"),
                             "reason": status[1], "detail": status[2]})
    sdf = _chunk_path(out, c, "sdf")
    data = "".join(blocks).encode("utf-8")
    if blocks:
        atomic_write(sdf, data)
    else:
        sdf.unlink(missing_ok=True)
    side = {
        "format": FORMAT, "chunk": c, "first": first, "count": len(entries), "settings": settings,
        "sdf": sdf.name if blocks else None, "sdf_sha256": hashlib.sha256(data).hexdigest() if blocks else None,
        "sdf_bytes": len(data) if blocks else 0, "written": len(blocks), "failures": failures,
        "standardised": dict(sorted(standardised.items())),
    }
    atomic_write(_chunk_path(out, c, "json"), json.dumps(side, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return side


def _existing_chunk_indices(out: Path) -> set[int]:
    found = set()
    if out.is_dir():
        for f in out.iterdir():
            m = _CHUNK_RE.match(f.name)
            if m:
                found.add(int(m.group(1)))
    return found


# ----------------------------------------------------------------------------------------------- report


@dataclass
class BuildReport:
    """What a build (or ``--check``) found; :meth:`summary` is what the command prints."""

    out: Path
    shard: tuple[int, int] = (0, 1)
    num_chunks: int = 0
    total_molecules: int = 0  # in the whole source range (all shards)
    molecules_in: int = 0  # in this shard's chunks
    written: int = 0
    failures: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    standardised: Counter = field(default_factory=Counter)
    chunks_built: int = 0
    chunks_skipped: int = 0
    molecules_processed: int = 0  # this run
    elapsed: float = 0.0
    workers: int = 1
    missing: dict[int, str] = field(default_factory=dict)  # chunk -> problem (all shards)
    manifest_written: bool = False
    interrupted: bool = False
    limit_short: int | None = None  # the source had fewer molecules than --limit

    @property
    def complete(self) -> bool:
        return self.num_chunks > 0 and not self.missing

    def add_sidecar(self, side: dict) -> None:
        self.molecules_in += side["count"]
        self.written += side["written"]
        self.standardised.update(side.get("standardised", {}))
        for f in side["failures"]:
            self.failures[f["reason"]] += 1
            ex = self.examples.setdefault(f["reason"], [])
            if len(ex) < _MAX_EXAMPLES:
                ex.append(f"{f['where']} {f['input']!r}" + (f": {f['detail']}" if f.get("detail") else ""))

    def summary(self) -> str:
        i, n = self.shard
        who = f"shard {i}/{n}: " if n > 1 else ""
        lines = []
        if self.limit_short is not None:
            lines.append(f"note: the source holds only {self.limit_short} molecules, fewer than --limit")
        failed = sum(self.failures.values())
        lines.append(f"{who}{self.molecules_in} molecules in, {self.written} written, {failed} failed "
                     f"({self.num_chunks} chunk(s) in all, {self.total_molecules} molecules)")
        if self.molecules_processed or self.chunks_built:
            rate = self.molecules_processed / max(self.elapsed, 1e-9)
            lines.append(f"this run: built {self.chunks_built} chunk(s), {self.molecules_processed} molecules in "
                         f"{self.elapsed:.1f} s: {rate:.2f} molecules/s with {self.workers} worker(s) "
                         f"({rate / max(self.workers, 1):.2f} per worker)"
                         + (f"; {self.chunks_skipped} chunk(s) already built and verified" if self.chunks_skipped else ""))
        elif self.chunks_skipped:
            lines.append(f"nothing to build: {self.chunks_skipped} chunk(s) already built and verified")
        if failed:
            lines.append("failures by reason:")
            for reason, count in self.failures.most_common():
                lines.append(f"  {count} x {reason}")
                lines += [f"      e.g. {ex}" for ex in self.examples.get(reason, [])]
        if self.standardised:
            lines.append("standardisation: " + ", ".join(f"{v} x {k}" for k, v in self.standardised.most_common()))
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- build


class _InlineExecutor:
    """The one-worker "pool": runs each task at once in this process."""

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - delivered through the future like a pool would
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class _StopRequest:
    """Ctrl-C during a build: the first one asks the loop to stop at its next safe point (chunks being
    built are dropped, finished ones stay); a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    @classmethod
    def install(cls) -> "_StopRequest":
        stop = cls()
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            stop._old = signal.signal(signal.SIGINT, stop._handle)
        return stop

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def uninstall(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


def _pool(workers: int):
    if workers <= 1:
        return _InlineExecutor()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from molediff.chem.conformers import worker_init

    # spawn: workers start clean (no forked locks or threads) and import only molediff.chem
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=worker_init, initargs=(os.getpid(),))


def _acquire_lock(out: Path, shard: tuple[int, int]) -> OutputLock:
    i, n = shard
    for other in out.glob(".build*.lock"):
        m = _LOCK_RE.match(other.name)
        if not m:
            continue
        oi, on = (int(m.group(1)), int(m.group(2))) if m.group(1) else (0, 1)
        pid = lock_owner(other)
        if pid and (on != n or n == 1 or oi == i):
            what = f"shard {oi}/{on}" if on > 1 else "all chunks"
            who = f"pid {pid}, " if pid > 0 else ""
            raise UserError(f"{out}: another 'molediff data' build ({who}{what}) is writing this folder; wait for it "
                            f"to finish or use another --out (if that process is gone, delete {other})")
    lock = OutputLock(out / ("build" if n == 1 else f"build-shard-{i}-of-{n}"))
    try:
        return lock.acquire()
    except UserError:
        pid = lock_owner(lock.lock)
        raise UserError(f"{out}: another 'molediff data' build (pid {pid if pid > 0 else '?'}) is writing this folder; wait for it "
                        f"to finish or use another --out (if that process is gone, delete {lock.lock})") from None


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".molediff_write_test_{os.getpid()}_{time.time_ns()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to --out {out}: {exc.strerror or exc}") from None


def _count(source: Source, limit: int | None) -> tuple[int, int | None]:
    n = 0
    for _ in source.items():
        n += 1
        if limit is not None and n >= limit:
            break
    if n == 0:
        raise UserError(f"{source.path}: no molecules found")
    return n, (n if limit is not None and n < limit else None)


def _refuse_other_settings(out: Path, settings: dict, force: bool) -> list[str]:
    """The differences between this build and what the folder holds (raises unless ``force``)."""
    found: list[tuple[str, dict]] = []
    manifest = _read_json(out / MANIFEST)
    if manifest is not None and isinstance(manifest.get("settings"), dict):
        found.append((MANIFEST, manifest["settings"]))
    for c in sorted(_existing_chunk_indices(out)):
        side = _read_json(_chunk_path(out, c, "json"))
        if side is not None and isinstance(side.get("settings"), dict):
            found.append((f"chunk_{c:06d}.json", side["settings"]))
    for name, old in found:
        if old != settings:
            diffs = _diff(old, settings)
            if not force:
                raise UserError(f"{out} holds a build with other settings ({name}: {'; '.join(diffs)}); rerun with the "
                                f"same settings to resume it, use another --out, or add --force to rebuild")
            return diffs
    return []


def build(opts: BuildOptions) -> BuildReport:
    """Build (or resume) ``opts.out``; prints progress and returns the :class:`BuildReport`.

    Raises:
        UserError: bad options or source, a folder holding other settings (without ``force``), another
        live builder of the same chunks, or a write error (earlier chunks stay intact).
    """
    opts.validate()
    from molediff.chem.conformers import prepare_batch

    out = Path(opts.out).expanduser()
    source = resolve_source(opts.source, opts.split)
    settings = _settings(source, opts)
    _prepare_out(out)
    lock = _acquire_lock(out, opts.shard)
    try:
        return _build_locked(opts, out, source, settings, prepare_batch)
    finally:
        lock.release()


def _build_locked(opts: BuildOptions, out: Path, source: Source, settings: dict, prepare_batch) -> BuildReport:
    from tqdm import tqdm

    si, sn = opts.shard
    cs = opts.chunk_size
    diffs = _refuse_other_settings(out, settings, opts.force)
    if diffs and (out / MANIFEST).exists():
        (out / MANIFEST).unlink()
    total, short = _count(source, opts.limit)
    num_chunks = -(-total // cs)
    report = BuildReport(out=out, shard=opts.shard, num_chunks=num_chunks, total_molecules=total, limit_short=short)
    if opts.force:  # this shard's chunk files past the new end, left by a build with other settings
        for c in _existing_chunk_indices(out):
            if c >= num_chunks and c % sn == si:
                _chunk_path(out, c, "sdf").unlink(missing_ok=True)
                _chunk_path(out, c, "json").unlink(missing_ok=True)
    rng = lambda c: (c * cs, min(cs, total - c * cs))  # noqa: E731
    mine = [c for c in range(num_chunks) if c % sn == si]
    sidecars: dict[int, dict] = {}
    todo: list[int] = []
    for c in mine:
        status, side = _verify_chunk(out, c, settings, *rng(c))
        if status == "ok":
            sidecars[c] = side
        else:
            todo.append(c)
    report.chunks_skipped = len(sidecars)
    todo_set = set(todo)
    todo_molecules = sum(rng(c)[1] for c in todo)
    workers = opts.workers or default_workers()
    batch = 1 if workers == 1 else max(1, min(16, cs // (4 * workers)))
    workers = max(1, min(workers, -(-todo_molecules // batch))) if todo else 1
    report.workers = workers
    t0 = time.time()
    if todo:
        stop = _StopRequest.install()
        executor = _pool(workers)
        max_inflight = 4 * workers
        inflight: dict[Future, tuple[int, list[int]]] = {}
        pending: dict[int, list] = {}  # chunk -> [entries, results, remaining]
        bar = tqdm(total=todo_molecules, unit="mol", desc="embedding", dynamic_ncols=True, disable=not opts.progress,
                   smoothing=0.05)

        def finish(c: int) -> None:
            entries, results, _ = pending.pop(c)
            try:
                sidecars[c] = _write_chunk(out, c, rng(c)[0], settings, source, entries, results)
            except OSError as exc:
                raise UserError(f"cannot write chunk {c} to {out}: {exc.strerror or exc}; the {report.chunks_built + report.chunks_skipped} "
                                f"chunk(s) written before are intact; free space or fix the folder and rerun the same "
                                f"command to resume") from None
            report.chunks_built += 1
            bar.set_postfix(chunks=f"{len(sidecars)}/{len(mine)}", refresh=False)

        def drain(block: bool) -> None:
            if not inflight:
                return
            while True:  # short waits, so that Ctrl-C is noticed here, outside the pool's locks
                done, _ = wait(list(inflight), timeout=0.25 if block else 0, return_when=FIRST_COMPLETED)
                stop.check()
                if done or not block:
                    break
            for fut in done:
                c, positions = inflight.pop(fut)
                try:
                    res = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker died (BrokenProcessPool) or could not start
                    raise UserError(f"a worker process failed ({type(exc).__name__}: {exc}); the chunks written so far "
                                    f"are intact; rerun the same command to resume (fewer --workers if memory ran out)") from None
                state = pending[c]
                for pos, r in zip(positions, res):
                    state[1][pos] = r
                state[2] -= len(positions)
                report.molecules_processed += len(positions)
                bar.update(len(positions))
                if state[2] == 0:
                    finish(c)

        def dispatch(c: int, entries: list) -> None:
            compute = [k for k, (_, pre) in enumerate(entries) if pre is None]
            pending[c] = [entries, [None] * len(entries), len(compute)]
            n_pre = len(entries) - len(compute)
            report.molecules_processed += n_pre
            bar.update(n_pre)
            if not compute:
                finish(c)
                return
            for k in range(0, len(compute), batch):
                positions = compute[k:k + batch]
                while len(inflight) >= max_inflight:
                    drain(True)
                args = [(entries[p][0].index, entries[p][0].kind, entries[p][0].text, entries[p][0].title) for p in positions]
                inflight[executor.submit(prepare_batch, args, opts.seed, opts.conformers, opts.max_atoms)] = (c, positions)
                drain(False)

        try:
            seen: dict[bytes, int] = {}
            end = (max(todo) + 1) * cs
            current: list = []
            for item in source.items():
                if item.index >= min(total, end):
                    break
                stop.check()
                pre = None
                if item.kind == "smiles" and item.text:
                    key = hashlib.blake2b(item.text.encode(), digest_size=8).digest()
                    first_line = seen.setdefault(key, item.line)
                    if first_line != item.line:
                        pre = ("fail", DUPLICATE, f"same SMILES as {source.where(first_line)}")
                c = item.index // cs
                if c not in todo_set:
                    continue
                current.append((item, pre))
                if len(current) == rng(c)[1]:
                    dispatch(c, current)
                    current = []
            while inflight:
                drain(True)
        except KeyboardInterrupt:
            report.interrupted = True
            executor.shutdown(wait=False, cancel_futures=True)
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        else:
            executor.shutdown()
        finally:
            bar.close()
            stop.uninstall()
    report.elapsed = time.time() - t0
    for c in mine:
        if c in sidecars:
            report.add_sidecar(sidecars[c])
    if report.interrupted:
        report.missing = {c: "interrupted" for c in mine if c not in sidecars}
        return report
    _finalise(report, out, source, opts, settings, sidecars)
    return report


def _finalise(report: BuildReport, out: Path, source: Source, opts: BuildOptions, settings: dict,
              verified: dict[int, dict]) -> None:
    """Check every chunk (those not verified in this run against their files) and write the manifest
    when all are there."""
    cs, total = opts.chunk_size, report.total_molecules
    sidecars: dict[int, dict] = {}
    others = [c for c in range(report.num_chunks) if c not in verified]
    if others and any(not _chunk_path(out, c, "json").exists() for c in others):  # cheap test before hashing
        for c in others:
            if not _chunk_path(out, c, "json").exists():
                report.missing[c] = "missing"
        return
    for c in range(report.num_chunks):
        if c in verified:
            sidecars[c] = verified[c]
            continue
        status, side = _verify_chunk(out, c, settings, c * cs, min(cs, total - c * cs))
        if status == "ok":
            sidecars[c] = side
        else:
            report.missing[c] = status
    if report.missing:
        return
    failures: Counter = Counter()
    examples: dict[str, list[str]] = {}
    standardised: Counter = Counter()
    for c in range(report.num_chunks):
        for f in sidecars[c]["failures"]:
            failures[f["reason"]] += 1
            ex = examples.setdefault(f["reason"], [])
            if len(ex) < _MAX_EXAMPLES:
                ex.append(f"{f['where']} {f['input']!r}" + (f": {f['detail']}" if f.get("detail") else ""))
        standardised.update(sidecars[c].get("standardised", {}))
    manifest = {
        "format": FORMAT,
        "complete": True,
        "source": source.describe(),
        "split": source.split,
        "limit": opts.limit,
        "seed": opts.seed,
        "conformers": opts.conformers,
        "max_atoms": opts.max_atoms,
        "chunk_size": cs,
        "molediff_version": settings["molediff_version"],
        "rdkit_version": settings["rdkit_version"],
        "settings": settings,
        "num_chunks": report.num_chunks,
        "total_molecules": total,
        "written": sum(s["written"] for s in sidecars.values()),
        "failed": sum(failures.values()),
        "failures": dict(failures.most_common()),
        "failure_examples": examples,
        "standardised": dict(standardised.most_common()),
        "chunks": [{"index": c, "sdf": sidecars[c]["sdf"], "sdf_sha256": sidecars[c]["sdf_sha256"],
                    "sdf_bytes": sidecars[c]["sdf_bytes"], "first": sidecars[c]["first"], "count": sidecars[c]["count"],
                    "written": sidecars[c]["written"]} for c in range(report.num_chunks)],
    }
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    try:
        if not (out / MANIFEST).exists() or (out / MANIFEST).read_text(encoding="utf-8") != text:
            atomic_write(out / MANIFEST, text)
    except OSError as exc:
        raise UserError(f"cannot write {out / MANIFEST}: {exc.strerror or exc}; the chunks are intact; rerun with --check") from None
    report.manifest_written = True


def check(opts: BuildOptions) -> BuildReport:
    """Verify every chunk of ``opts.out`` against the settings of ``opts`` (builds nothing); writes
    ``manifest.json`` when all are present. ``report.missing`` lists what is not."""
    opts.validate()
    out = Path(opts.out).expanduser()
    if not out.is_dir():
        raise UserError(f"--out {out}: no such folder")
    source = resolve_source(opts.source, opts.split)
    settings = _settings(source, opts)
    total, short = _count(source, opts.limit)
    cs = opts.chunk_size
    report = BuildReport(out=out, shard=(0, 1), num_chunks=-(-total // cs), total_molecules=total, limit_short=short)
    verified: dict[int, dict] = {}
    for c in range(report.num_chunks):
        status, side = _verify_chunk(out, c, settings, c * cs, min(cs, total - c * cs))
        if status == "ok":
            verified[c] = side
            report.add_sidecar(side)
        else:
            report.missing[c] = status
    report.chunks_skipped = len(verified)
    if not report.missing:
        _finalise(report, out, source, opts, settings, verified)
    return report


# ------------------------------------------------------------------------------------------------ read


def is_build(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``molediff data`` (finished or not): it holds the
    manifest or a chunk's sidecar."""
    out = Path(path).expanduser()
    return out.is_dir() and ((out / MANIFEST).exists() or any(out.glob("chunk_*.json")))


def built_files(directory: str | os.PathLike) -> list[Path]:
    """The chunk SDFs of a finished ``molediff data`` build, in order, each checked against the
    manifest's checksum (chunks in which every molecule failed have no SDF and are left out).

    Raises:
        UserError: no manifest (the build is not finished: rerun it or run ``molediff data --check``),
        or a chunk that is missing or does not match its checksum.
    """
    out = Path(directory).expanduser()
    manifest = _read_json(out / MANIFEST)
    if manifest is None:
        what = "no readable manifest.json" if out.is_dir() else "no such folder"
        raise UserError(f"{out}: {what}; finish the build with 'molediff data --out {out} ...' (same options) or "
                        f"verify it with --check")
    if manifest.get("format") != FORMAT or not manifest.get("complete") or not isinstance(manifest.get("chunks"), list):
        raise UserError(f"{out / MANIFEST}: not a complete molediff data manifest")
    files = []
    for chunk in manifest["chunks"]:
        if not chunk.get("sdf"):
            continue
        path = out / chunk["sdf"]
        try:
            ok = path.stat().st_size == chunk["sdf_bytes"] and _sha256_file(path) == chunk["sdf_sha256"]
        except OSError:
            raise UserError(f"{path}: missing; rerun the same 'molediff data' command to rebuild it") from None
        if not ok:
            raise UserError(f"{path}: does not match its checksum in {MANIFEST}; rerun the same 'molediff data' "
                            f"command to rebuild it")
        files.append(path)
    return files
