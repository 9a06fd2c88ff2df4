"""The files of a ``molediff data`` build folder: each chunk's SDF and its sidecar (written atomically,
the SDF first, the sidecar last; a chunk counts as built only when its sidecar names these settings
and its SDF matches the checksum), and ``manifest.json``, written once every chunk is present and
verified. :func:`built_files` reads a finished build; :func:`is_build` recognises one."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from molediff.atomic import atomic_write
from molediff.data.sources import Source, SourceItem, sha256_file
from molediff.errors import UserError

__all__ = ["FORMAT", "MANIFEST", "built_files", "is_build"]

FORMAT = "molediff-data/1"
MANIFEST = "manifest.json"
_CHUNK_RE = re.compile(r"^chunk_(\d{6,})\.(sdf|json)$")
#: failures named as examples per reason, in a report and in the manifest
MAX_EXAMPLES = 5


def chunk_path(out: Path, c: int, ext: str) -> Path:
    return out / f"chunk_{c:06d}.{ext}"


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def verify_chunk(out: Path, c: int, settings: dict, first: int, count: int) -> tuple[str, dict | None]:
    """``("ok", sidecar)`` or ``(problem, None)``: "missing", "other settings", "corrupt ..."."""
    side_path = chunk_path(out, c, "json")
    if not side_path.exists():
        return ("missing" if not chunk_path(out, c, "sdf").exists() else "incomplete (no sidecar)"), None
    side = read_json(side_path)
    if side is None or side.get("format") != FORMAT:
        return "corrupt sidecar", None
    if side.get("settings") != settings:
        return "other settings", None
    if side.get("chunk") != c or side.get("first") != first or side.get("count") != count:
        return "corrupt sidecar (wrong range)", None
    sdf = chunk_path(out, c, "sdf")
    if side.get("sdf") is None:
        return ("ok", side) if side.get("written") == 0 else ("corrupt sidecar", None)
    if side.get("sdf") != sdf.name:
        return "corrupt sidecar", None
    try:
        if sdf.stat().st_size != side.get("sdf_bytes"):
            return "corrupt SDF (size differs)", None
        if sha256_file(sdf) != side.get("sdf_sha256"):
            return "corrupt SDF (checksum differs)", None
    except FileNotFoundError:
        return "missing SDF", None
    except OSError as exc:
        return f"unreadable SDF ({exc.strerror or exc})", None
    return "ok", side


def write_chunk(out: Path, c: int, first: int, settings: dict, source: Source,
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
    sdf = chunk_path(out, c, "sdf")
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
    atomic_write(chunk_path(out, c, "json"), json.dumps(side, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return side


def existing_chunk_indices(out: Path) -> set[int]:
    found = set()
    if out.is_dir():
        for f in out.iterdir():
            m = _CHUNK_RE.match(f.name)
            if m:
                found.add(int(m.group(1)))
    return found


def tally(side: dict, failures: Counter, examples: dict[str, list[str]], standardised: Counter) -> None:
    """Add a chunk's sidecar to counts of failures by reason (with up to :data:`MAX_EXAMPLES` examples
    each) and of standardisation steps."""
    standardised.update(side.get("standardised", {}))
    for f in side["failures"]:
        failures[f["reason"]] += 1
        ex = examples.setdefault(f["reason"], [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(f"{f['where']} {f['input']!r}" + (f": {f['detail']}" if f.get("detail") else ""))


def write_manifest(out: Path, source: Source, settings: dict[str, Any], sidecars: dict[int, dict]) -> None:
    """``manifest.json`` of a build whose chunks ``0 .. len(sidecars) − 1`` are all present and verified
    (rewritten only where its text changes)."""
    failures: Counter = Counter()
    examples: dict[str, list[str]] = {}
    standardised: Counter = Counter()
    chunks = range(len(sidecars))
    for c in chunks:
        tally(sidecars[c], failures, examples, standardised)
    manifest = {
        "format": FORMAT,
        "complete": True,
        "source": source.describe(),
        "split": source.split,
        **{key: settings[key] for key in ("limit", "seed", "conformers", "max_atoms", "chunk_size", "molediff_version",
                                          "rdkit_version")},
        "settings": settings,
        "num_chunks": len(sidecars),
        "total_molecules": sum(s["count"] for s in sidecars.values()),
        "written": sum(s["written"] for s in sidecars.values()),
        "failed": sum(failures.values()),
        "failures": dict(failures.most_common()),
        "failure_examples": examples,
        "standardised": dict(standardised.most_common()),
        "chunks": [{"index": c, "sdf": sidecars[c]["sdf"], "sdf_sha256": sidecars[c]["sdf_sha256"],
                    "sdf_bytes": sidecars[c]["sdf_bytes"], "first": sidecars[c]["first"], "count": sidecars[c]["count"],
                    "written": sidecars[c]["written"]} for c in chunks],
    }
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    try:
        if not (out / MANIFEST).exists() or (out / MANIFEST).read_text(encoding="utf-8") != text:
            atomic_write(out / MANIFEST, text)
    except OSError as exc:
        raise UserError(f"cannot write {out / MANIFEST}: {exc.strerror or exc}; the chunks are intact; rerun with --check") from None


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
    manifest = read_json(out / MANIFEST)
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
            ok = path.stat().st_size == chunk["sdf_bytes"] and sha256_file(path) == chunk["sdf_sha256"]
        except OSError:
            raise UserError(f"{path}: missing; rerun the same 'molediff data' command to rebuild it") from None
        if not ok:
            raise UserError(f"{path}: does not match its checksum in {MANIFEST}; rerun the same 'molediff data' "
                            f"command to rebuild it")
        files.append(path)
    return files
