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

Here: the options, the plan (which chunks this shard builds), the build loop and its report. Beside
it: :mod:`molediff.data.sources` (the source files and their parsers), :mod:`molediff.data.chunks`
(chunk files, sidecars, the manifest) and :mod:`molediff.data.build_runtime` (worker pool, Ctrl-C, lock).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from molediff._version import __version__
from molediff.atomic import output_folder
from molediff.config import TRAINING_MAX_ATOMS
from molediff.data.build_runtime import StopRequest, acquire_lock, pool
from molediff.data.chunks import (FORMAT, MANIFEST, built_files, chunk_path, existing_chunk_indices, is_build, read_json, tally,
                                  verify_chunk, write_chunk, write_manifest)
from molediff.data.sources import MOSES_SPLITS, Source, SourceItem, resolve_source
from molediff.errors import UserError

__all__ = ["BuildOptions", "BuildReport", "MOSES_SPLITS", "build", "built_files", "check", "is_build", "parse_shard"]

DUPLICATE = "duplicate"


# ---------------------------------------------------------------------------------------------- options


@dataclass
class BuildOptions:
    """What ``molediff data`` was asked to do (see its ``--help``)."""

    out: Path
    source: str = "moses"
    split: str | None = None
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    conformers: int = 1
    max_atoms: int = TRAINING_MAX_ATOMS
    chunk_size: int = 1000
    workers: int | None = None  # None: all cores
    shard: tuple[int, int] = (0, 1)
    force: bool = False
    progress: bool = True

    def validate(self) -> None:
        if self.limit is not None and self.sample is not None:
            raise UserError("--limit takes the first N molecules, --sample N drawn at random: give one of them")
        for name, value, low in (("--limit", self.limit, 1), ("--sample", self.sample, 1), ("--seed", self.seed, 0), ("--conformers", self.conformers, 1),
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


def _available_cores() -> int:
    from molediff.distributed import available_cores  # the one rule (imported late: it brings torch)

    return available_cores()


def _source(opts: BuildOptions) -> Source:
    """The molecules ``opts`` asks for: the source, or ``--sample`` of them drawn at random."""
    source = resolve_source(opts.source, opts.split)
    return source.subset(opts.sample, opts.seed) if opts.sample is not None else source


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
        tally(side, self.failures, self.examples, self.standardised)

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
    manifest = read_json(out / MANIFEST)
    if manifest is not None and isinstance(manifest.get("settings"), dict):
        found.append((MANIFEST, manifest["settings"]))
    for c in sorted(existing_chunk_indices(out)):
        side = read_json(chunk_path(out, c, "json"))
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
    source = _source(opts)
    settings = _settings(source, opts)
    output_folder(out, "--out")
    lock = acquire_lock(out, opts.shard)
    try:
        return _build_locked(opts, out, source, settings, prepare_batch)
    finally:
        lock.release()

def _chunk_range(c: int, chunk_size: int, total: int) -> tuple[int, int]:
    """(first source index, molecule count) of chunk ``c``."""
    return c * chunk_size, min(chunk_size, total - c * chunk_size)


def _plan(opts: BuildOptions, out: Path, source: Source, settings: dict) -> tuple[BuildReport, list[int], dict[int, dict], list[int]]:
    """What this shard's build finds: its report, its chunks, those already built and verified (their
    sidecars) and those to build. A folder holding other settings is refused (with ``force``: its
    manifest and this shard's chunks past the new end are removed)."""
    si, sn = opts.shard
    diffs = _refuse_other_settings(out, settings, opts.force)
    if diffs and (out / MANIFEST).exists():
        (out / MANIFEST).unlink()
    total, short = _count(source, opts.limit)
    num_chunks = -(-total // opts.chunk_size)
    report = BuildReport(out=out, shard=opts.shard, num_chunks=num_chunks, total_molecules=total, limit_short=short)
    if opts.force:  # this shard's chunk files past the new end, left by a build with other settings
        for c in existing_chunk_indices(out):
            if c >= num_chunks and c % sn == si:
                chunk_path(out, c, "sdf").unlink(missing_ok=True)
                chunk_path(out, c, "json").unlink(missing_ok=True)
    mine = [c for c in range(num_chunks) if c % sn == si]
    sidecars: dict[int, dict] = {}
    todo: list[int] = []
    for c in mine:
        status, side = verify_chunk(out, c, settings, *_chunk_range(c, opts.chunk_size, total))
        if status == "ok":
            sidecars[c] = side
        else:
            todo.append(c)
    report.chunks_skipped = len(sidecars)
    return report, mine, sidecars, todo


def _build_locked(opts: BuildOptions, out: Path, source: Source, settings: dict, prepare_batch) -> BuildReport:
    report, mine, sidecars, todo = _plan(opts, out, source, settings)
    report.workers = 1
    t0 = time.time()
    if todo:
        _ChunkBuild(opts, out, source, settings, report, sidecars, prepare_batch).run(todo, len(mine))
    report.elapsed = time.time() - t0
    for c in mine:
        if c in sidecars:
            report.add_sidecar(sidecars[c])
    if report.interrupted:
        report.missing = {c: "interrupted" for c in mine if c not in sidecars}
        return report
    _finalise(report, out, source, opts, settings, sidecars)
    return report


class _ChunkBuild:
    """The chunks still to build, by a pool of workers: the source is read in order (an exact duplicate
    SMILES fails at once, naming its first occurrence), each chunk's molecules go out in batches (at
    most four per worker in flight), and a chunk is written as soon as its last molecule is back.
    Ctrl-C stops at the next safe point: finished chunks stay, those in progress are dropped."""

    def __init__(self, opts: BuildOptions, out: Path, source: Source, settings: dict, report: BuildReport,
                 sidecars: dict[int, dict], prepare_batch) -> None:
        self.opts, self.out, self.source, self.settings, self.report = opts, out, source, settings, report
        self.sidecars, self.prepare_batch = sidecars, prepare_batch
        self.inflight: dict[Future, tuple[int, list[int]]] = {}
        self.pending: dict[int, list] = {}  # chunk -> [entries, results, remaining]
        self.num_mine = 0

    def _range(self, c: int) -> tuple[int, int]:
        return _chunk_range(c, self.opts.chunk_size, self.report.total_molecules)

    def run(self, todo: list[int], num_mine: int) -> None:
        from tqdm import tqdm

        opts, report = self.opts, self.report
        todo_molecules = sum(self._range(c)[1] for c in todo)
        workers = opts.workers or _available_cores()
        self.batch = 1 if workers == 1 else max(1, min(16, opts.chunk_size // (4 * workers)))
        workers = max(1, min(workers, -(-todo_molecules // self.batch)))
        report.workers, self.max_inflight, self.num_mine = workers, 4 * workers, num_mine
        self.stop = StopRequest.install()
        self.executor = pool(workers)
        self.bar = tqdm(total=todo_molecules, unit="mol", desc="embedding", dynamic_ncols=True, disable=not opts.progress,
                        smoothing=0.05)
        try:
            self._feed(todo)
            while self.inflight:
                self._drain(True)
        except KeyboardInterrupt:
            report.interrupted = True
            self.executor.shutdown(wait=False, cancel_futures=True)
        except BaseException:
            self.executor.shutdown(wait=False, cancel_futures=True)
            raise
        else:
            self.executor.shutdown()
        finally:
            self.bar.close()
            self.stop.uninstall()

    def _feed(self, todo: list[int]) -> None:
        """Read the source up to the last chunk to build and dispatch each of those chunks once it is whole."""
        cs, total, source = self.opts.chunk_size, self.report.total_molecules, self.source
        todo_set = set(todo)
        seen: dict[bytes, int] = {}
        end = (max(todo) + 1) * cs
        current: list = []
        for item in source.items():
            if item.at >= min(total, end):
                break
            self.stop.check()
            pre = None
            if item.kind == "smiles" and item.text:
                key = hashlib.blake2b(item.text.encode(), digest_size=8).digest()
                first_line = seen.setdefault(key, item.line)
                if first_line != item.line:
                    pre = ("fail", DUPLICATE, f"same SMILES as {source.where(first_line)}")
            c = item.at // cs
            if c not in todo_set:
                continue
            current.append((item, pre))
            if len(current) == self._range(c)[1]:
                self._dispatch(c, current)
                current = []

    def _dispatch(self, c: int, entries: list[tuple[SourceItem, tuple | None]]) -> None:
        """Send chunk ``c``'s molecules (those not failed already) to the workers in batches."""
        opts = self.opts
        compute = [k for k, (_, pre) in enumerate(entries) if pre is None]
        self.pending[c] = [entries, [None] * len(entries), len(compute)]
        n_pre = len(entries) - len(compute)
        self.report.molecules_processed += n_pre
        self.bar.update(n_pre)
        if not compute:
            self._finish(c)
            return
        for k in range(0, len(compute), self.batch):
            positions = compute[k:k + self.batch]
            while len(self.inflight) >= self.max_inflight:
                self._drain(True)
            args = [(entries[p][0].index, entries[p][0].kind, entries[p][0].text, entries[p][0].title) for p in positions]
            self.inflight[self.executor.submit(self.prepare_batch, args, opts.seed, opts.conformers, opts.max_atoms)] = (c, positions)
            self._drain(False)

    def _drain(self, block: bool) -> None:
        """Take in the finished batches (waiting for one if ``block``), writing every chunk they complete."""
        if not self.inflight:
            return
        while True:  # short waits, so that Ctrl-C is noticed here, outside the pool's locks
            done, _ = wait(list(self.inflight), timeout=0.25 if block else 0, return_when=FIRST_COMPLETED)
            self.stop.check()
            if done or not block:
                break
        for fut in done:
            c, positions = self.inflight.pop(fut)
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker died (BrokenProcessPool) or could not start
                raise UserError(f"a worker process failed ({type(exc).__name__}: {exc}); the chunks written so far "
                                f"are intact; rerun the same command to resume (fewer --workers if memory ran out)") from None
            state = self.pending[c]
            for pos, r in zip(positions, res):
                state[1][pos] = r
            state[2] -= len(positions)
            self.report.molecules_processed += len(positions)
            self.bar.update(len(positions))
            if state[2] == 0:
                self._finish(c)

    def _finish(self, c: int) -> None:
        """Write chunk ``c`` (its SDF, then its sidecar)."""
        report = self.report
        entries, results, _ = self.pending.pop(c)
        try:
            self.sidecars[c] = write_chunk(self.out, c, self._range(c)[0], self.settings, self.source, entries, results)
        except OSError as exc:
            raise UserError(f"cannot write chunk {c} to {self.out}: {exc.strerror or exc}; the "
                            f"{report.chunks_built + report.chunks_skipped} chunk(s) written before are intact; free space "
                            f"or fix the folder and rerun the same command to resume") from None
        report.chunks_built += 1
        self.bar.set_postfix(chunks=f"{len(self.sidecars)}/{self.num_mine}", refresh=False)


def _finalise(report: BuildReport, out: Path, source: Source, opts: BuildOptions, settings: dict,
              verified: dict[int, dict]) -> None:
    """Check every chunk (those not verified in this run against their files) and write the manifest
    when all are there."""
    cs, total = opts.chunk_size, report.total_molecules
    sidecars: dict[int, dict] = {}
    others = [c for c in range(report.num_chunks) if c not in verified]
    if others and any(not chunk_path(out, c, "json").exists() for c in others):  # cheap test before hashing
        for c in others:
            if not chunk_path(out, c, "json").exists():
                report.missing[c] = "missing"
        return
    for c in range(report.num_chunks):
        if c in verified:
            sidecars[c] = verified[c]
            continue
        status, side = verify_chunk(out, c, settings, *_chunk_range(c, cs, total))
        if status == "ok":
            sidecars[c] = side
        else:
            report.missing[c] = status
    if report.missing:
        return
    write_manifest(out, source, settings, sidecars)
    report.manifest_written = True


def check(opts: BuildOptions) -> BuildReport:
    """Verify every chunk of ``opts.out`` against the settings of ``opts`` (builds nothing); writes
    ``manifest.json`` when all are present. ``report.missing`` lists what is not."""
    opts.validate()
    out = Path(opts.out).expanduser()
    if not out.is_dir():
        raise UserError(f"--out {out}: no such folder")
    source = _source(opts)
    settings = _settings(source, opts)
    total, short = _count(source, opts.limit)
    cs = opts.chunk_size
    report = BuildReport(out=out, shard=(0, 1), num_chunks=-(-total // cs), total_molecules=total, limit_short=short)
    verified: dict[int, dict] = {}
    for c in range(report.num_chunks):
        status, side = verify_chunk(out, c, settings, *_chunk_range(c, cs, total))
        if status == "ok":
            verified[c] = side
            report.add_sidecar(side)
        else:
            report.missing[c] = status
    report.chunks_skipped = len(verified)
    if not report.missing:
        _finalise(report, out, source, opts, settings, verified)
    return report
