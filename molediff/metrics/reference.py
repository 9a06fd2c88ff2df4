"""Featurised reference molecules for the drug-like metrics: :func:`build_reference` computes, once, what
:func:`molediff.metrics.moses.moses_metrics` compares generated molecules with (Morgan fingerprints,
BRICS fragment and scaffold counts, drug-likeness properties, ChemNet statistics) into a
:class:`Reference`, which :meth:`Reference.save` / :meth:`Reference.load` keep on disk as one ``.npz``.
The MOSES sets themselves come from :mod:`molediff.metrics.moses_data`."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from molediff.atomic import atomic_write_binary
from molediff.metrics.errors import MetricUnavailable
from molediff.metrics.fcd import fcd_statistics
from molediff.metrics.fingerprints import FP_BITS
from molediff.metrics.moses import Workers, gather_counter, gather_fingerprints, gather_properties

__all__ = ["Reference", "build_reference"]


@dataclass
class Reference:
    """Featurised reference molecules for :func:`~molediff.metrics.moses.moses_metrics` /
    :func:`~molediff.metrics.druglike.evaluate_druglike` (build once with :func:`build_reference`;
    :meth:`save` / :meth:`load` keep it on disk).

    ``fingerprints``: ``[n, 1024]`` uint8 Morgan bits of the valid reference molecules; ``fragments`` /
    ``scaffolds``: BRICS fragment and Bemis–Murcko scaffold counts (``scaffold_min_rings`` as used);
    ``properties``: :data:`~molediff.metrics.properties.DRUGLIKE_PROPERTY_NAMES` arrays (``None`` when
    not computed); ``fcd_stats``: ChemNet ``mu``/``sigma`` or ``None`` with ``fcd_note`` saying why."""

    name: str
    num_molecules: int
    num_invalid: int
    fingerprints: np.ndarray
    fragments: Counter
    scaffolds: Counter
    properties: dict[str, np.ndarray] | None
    fcd_stats: dict[str, np.ndarray] | None
    fcd_note: str | None = None
    scaffold_min_rings: int = 2
    seconds: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to one ``.npz`` (fingerprints bit-packed; counts as JSON; no pickles)."""
        meta = {
            "name": self.name,
            "num_molecules": self.num_molecules,
            "num_invalid": self.num_invalid,
            "fragments": dict(self.fragments),
            "scaffolds": dict(self.scaffolds),
            "fcd_note": self.fcd_note,
            "scaffold_min_rings": self.scaffold_min_rings,
            "seconds": self.seconds,
            "properties": list(self.properties) if self.properties is not None else None,
        }
        arrays: dict[str, np.ndarray] = {
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            "fingerprints": np.packbits(self.fingerprints, axis=1),
        }
        for k, v in (self.properties or {}).items():
            arrays[f"prop_{k}"] = np.asarray(v)
        if self.fcd_stats is not None:
            arrays["fcd_mu"], arrays["fcd_sigma"] = self.fcd_stats["mu"], self.fcd_stats["sigma"]
        path = Path(path)
        atomic_write_binary(path, lambda f: np.savez_compressed(f, **arrays))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Reference":
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            fps = np.unpackbits(data["fingerprints"], axis=1, count=FP_BITS)
            props = {k: data[f"prop_{k}"] for k in meta["properties"]} if meta["properties"] is not None else None
            fcd = {"mu": data["fcd_mu"], "sigma": data["fcd_sigma"]} if "fcd_mu" in data else None
        return cls(meta["name"], meta["num_molecules"], meta["num_invalid"], fps, Counter(meta["fragments"]),
                   Counter(meta["scaffolds"]), props, fcd, meta["fcd_note"], meta["scaffold_min_rings"], meta["seconds"])


def _reference_fcd(valid_smiles: list[str], fcd_stats: Mapping[str, np.ndarray] | None, compute_fcd: bool,
                   seconds: dict[str, float]) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``(ChemNet statistics or None, note)`` for :func:`build_reference`."""
    if fcd_stats is not None:
        stats = {"mu": np.asarray(fcd_stats["mu"], dtype=np.float64), "sigma": np.asarray(fcd_stats["sigma"], dtype=np.float64)}
        return stats, "precomputed statistics given"
    if not compute_fcd:
        return None, "not computed (compute_fcd=False and no statistics given)"
    t = time.perf_counter()
    stats, note = None, None
    try:
        stats = fcd_statistics(valid_smiles)
    except MetricUnavailable as exc:
        note = str(exc)
    seconds["fcd"] = time.perf_counter() - t
    return stats, note


def build_reference(
    smiles: Sequence[str],
    name: str = "reference",
    fcd_stats: Mapping[str, np.ndarray] | None = None,
    compute_fcd: bool = True,
    properties: bool = True,
    scaffold_min_rings: int = 2,
    n_jobs: int = 1,
) -> Reference:
    """Featurise reference ``smiles`` (unparsable ones are counted and dropped) into a
    :class:`Reference`. ``fcd_stats``: precomputed ChemNet statistics (e.g.
    :func:`~molediff.metrics.moses_data.moses_fcd_statistics` for the MOSES test set, what MOSES itself
    uses); otherwise computed when ``compute_fcd`` and ``fcd_torch`` is installed (~7 ms per molecule).
    ``n_jobs`` worker processes share the RDKit work (MOSES test set, 176k molecules: ~3 minutes on 2
    cores)."""
    smiles = [str(s) for s in smiles]
    seconds: dict[str, float] = {}
    with Workers(n_jobs) as workers:
        t = time.perf_counter()
        parts = workers.map("fingerprints", smiles)
        fps = gather_fingerprints(parts)
        mask = np.concatenate([m for m, _ in parts]) if parts else np.zeros(0, dtype=bool)
        seconds["fingerprints"] = time.perf_counter() - t
        t = time.perf_counter()
        fragments = gather_counter(workers.map("fragments", smiles))
        seconds["fragments"] = time.perf_counter() - t
        t = time.perf_counter()
        scaffolds = gather_counter(workers.map("scaffolds", smiles, scaffold_min_rings))
        seconds["scaffolds"] = time.perf_counter() - t
        props = None
        if properties:
            t = time.perf_counter()
            props = gather_properties(workers.map("properties", smiles))
            seconds["properties"] = time.perf_counter() - t
    stats, fcd_note = _reference_fcd([s for s, ok in zip(smiles, mask) if ok], fcd_stats, compute_fcd, seconds)
    seconds = {k: round(v, 3) for k, v in seconds.items()}
    return Reference(name, int(mask.sum()), int((~mask).sum()), fps, fragments, scaffolds, props, stats, fcd_note,
                     scaffold_min_rings, seconds)
