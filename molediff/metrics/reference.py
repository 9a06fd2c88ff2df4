"""The one reference object of the metrics: a :class:`Reference` is a named set of molecules that
generated ones are compared with, and gives, each computed on first use and then kept:

* :meth:`Reference.smiles` ``(bonds)``: the novelty reference (canonical largest-fragment SMILES);
* :meth:`Reference.statistics` ``(bonds)``: the distribution reference
  (:func:`molediff.metrics.distribution_statistics`);
* :meth:`Reference.features`: the drug-like featurisation (:class:`DruglikeFeatures`: Morgan
  fingerprints, BRICS fragment and scaffold counts, drug-likeness properties, ChemNet statistics) that
  :func:`molediff.metrics.moses.moses_metrics` and :func:`molediff.metrics.druglike.evaluate_druglike`
  compare with; :meth:`DruglikeFeatures.save` / :meth:`DruglikeFeatures.load` keep it on disk as one
  ``.npz``;
* :meth:`Reference.rings`: ring-system figures (:func:`molediff.metrics.rings.ring_statistics`), the
  data's side of the ring table.

Made here from molecules in memory (:func:`molecules_reference`) or SMILES (:func:`smiles_reference`);
:mod:`molediff.data.reference` makes the QM9 training split's, a user's files' and the MOSES test set's,
reading their data on first use. The metrics take the object as an argument and import no data.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from molediff.atomic import atomic_write_binary
from molediff.chem.bonds import BOND_MODES, check_bond_mode
from molediff.metrics.errors import MetricUnavailable
from molediff.metrics.fcd import fcd_statistics
from molediff.metrics.fingerprints import FP_BITS
from molediff.metrics.moses import Workers, gather_counter, gather_fingerprints, gather_properties

__all__ = ["DruglikeFeatures", "RING_REFERENCE_SIZE", "Reference", "build_druglike_features", "molecules_reference",
           "ring_sample_statistics", "smiles_reference"]

T = TypeVar("T")
#: reference molecules (a random sample of a larger set) whose rings stand for the data's in the ring table
RING_REFERENCE_SIZE = 2000


# ----------------------------------------------------------------------------- the drug-like featurisation


@dataclass
class DruglikeFeatures:
    """The drug-like featurisation of reference molecules (:meth:`Reference.features`; build with
    :func:`build_druglike_features`; :meth:`save` / :meth:`load` keep it on disk).

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
    def load(cls, path: str | os.PathLike) -> "DruglikeFeatures":
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            fps = np.unpackbits(data["fingerprints"], axis=1, count=FP_BITS)
            props = {k: data[f"prop_{k}"] for k in meta["properties"]} if meta["properties"] is not None else None
            fcd = {"mu": data["fcd_mu"], "sigma": data["fcd_sigma"]} if "fcd_mu" in data else None
        return cls(meta["name"], meta["num_molecules"], meta["num_invalid"], fps, Counter(meta["fragments"]),
                   Counter(meta["scaffolds"]), props, fcd, meta["fcd_note"], meta["scaffold_min_rings"], meta["seconds"])


def _reference_fcd(valid_smiles: list[str], fcd_stats: Mapping[str, np.ndarray] | None, compute_fcd: bool,
                   seconds: dict[str, float]) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``(ChemNet statistics or None, note)`` for :func:`build_druglike_features`."""
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


def build_druglike_features(
    smiles: Sequence[str],
    name: str = "reference",
    fcd_stats: Mapping[str, np.ndarray] | None = None,
    compute_fcd: bool = True,
    properties: bool = True,
    scaffold_min_rings: int = 2,
    n_jobs: int = 1,
) -> DruglikeFeatures:
    """Featurise reference ``smiles`` (unparsable ones are counted and dropped) into
    :class:`DruglikeFeatures`. ``fcd_stats``: precomputed ChemNet statistics (e.g.
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
    return DruglikeFeatures(name, int(mask.sum()), int((~mask).sum()), fps, fragments, scaffolds, props, stats, fcd_note,
                            scaffold_min_rings, seconds)


def cached_features(path: str | os.PathLike, build: Callable[[], DruglikeFeatures], progress: bool = True,
                    what: str = "the reference") -> DruglikeFeatures:
    """:class:`DruglikeFeatures` loaded from ``path``, or built once with ``build()`` and saved there (an
    unreadable file is rebuilt)."""
    path = Path(path)
    if path.exists():
        try:
            return DruglikeFeatures.load(path)
        except (OSError, ValueError, KeyError) as exc:
            print(f"{path} is unreadable ({exc}); rebuilding it")
    if progress:
        print(f"building the drug-like features of {what} once into {path} (the MOSES test set's: about 7 minutes on 2 cores)")
    features = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    features.save(path)
    return features


def cached_rings(path: str | os.PathLike, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Ring figures (:func:`ring_sample_statistics`) loaded from the JSON file ``path``, or built once with
    ``build()`` and saved there (reading the reference's SMILES takes seconds, its drug-like sampling
    summary needs the figures every time); a file from another sample size is rebuilt."""
    import json

    from molediff.atomic import atomic_write

    path = Path(path)
    try:
        saved = json.loads(path.read_text())
        if saved.get("sample_size") == RING_REFERENCE_SIZE:
            return saved["figures"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    figures = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"sample_size": RING_REFERENCE_SIZE, "figures": figures}, indent=1))
    except OSError:  # a read-only data folder: the figures are still right, only not kept
        pass
    return figures


def ring_sample_statistics(smiles: Sequence[str], name: str, size: int = RING_REFERENCE_SIZE, seed: int = 0) -> dict[str, Any]:
    """:func:`molediff.metrics.rings.ring_statistics` of ``size`` random molecules of ``smiles`` (seed
    ``seed``; all of them when there are no more; about a second for 2,000), per-molecule flags left out,
    with ``source`` saying which."""
    from rdkit import Chem, rdBase

    from molediff.metrics.rings import ring_statistics

    pick = np.random.default_rng(seed).choice(len(smiles), size=min(size, len(smiles)), replace=False)
    with rdBase.BlockLogs():
        out = ring_statistics([Chem.MolFromSmiles(smiles[i]) for i in sorted(pick.tolist())])
    out.pop("per_molecule")
    out["source"] = f"{len(pick)} random {name} molecules (seed {seed})" if len(pick) < len(smiles) else f"the {len(pick)} {name} molecules"
    return out


# ----------------------------------------------------------------------------- the reference object


class Reference:
    """A named set of reference molecules (module docstring): :meth:`smiles`, :meth:`statistics`,
    :meth:`features` and :meth:`rings`, each made on first use by the function given for it and kept.
    A part without a function raises :class:`~molediff.metrics.errors.MetricUnavailable` (:meth:`rings`:
    ``None``).

    ``kind`` says where the molecules come from (``"qm9"``, ``"molecules"``, ``"smiles"``, ``"moses"``);
    ``name`` what they are (for tables and JSON); ``label`` the short name the tables and plots use
    ("QM9", a file name). The functions: ``smiles(bonds, progress)``, ``statistics(bonds, progress)``,
    ``features(progress)``, ``rings()``."""

    def __init__(self, kind: str, name: str, label: str | None = None, *,
                 smiles: Callable[[str, bool], frozenset[str]] | None = None,
                 statistics: Callable[[str, bool], dict[str, Any]] | None = None,
                 features: Callable[[bool], DruglikeFeatures] | None = None,
                 rings: Callable[[], dict[str, Any]] | None = None,
                 bond_types: Callable[[bool], dict[str, int]] | None = None) -> None:
        self.kind, self.name, self.label = kind, name, label or name
        self._make: dict[str, Callable[..., Any] | None] = {"smiles": smiles, "statistics": statistics, "features": features,
                                                            "rings": rings, "bond_types": bond_types}
        self._cache: dict[tuple[str, str | None], Any] = {}

    def __repr__(self) -> str:
        return f"Reference(kind={self.kind!r}, name={self.name!r}, label={self.label!r})"

    def has(self, part: str) -> bool:
        """Whether the reference can give ``part`` ("smiles", "statistics", "features", "rings" or "bond_types")."""
        return self._make[part] is not None

    def _part(self, part: str, key: str | None, *args: Any) -> Any:
        if (part, key) not in self._cache:
            make = self._make[part]
            if make is None:
                raise MetricUnavailable(f"the reference {self.name} has no {part}")
            self._cache[(part, key)] = make(*args)
        return self._cache[(part, key)]

    def smiles(self, bonds: str = "lookup", progress: bool = True) -> frozenset[str]:
        """The novelty reference: canonical largest-fragment SMILES perceived with ``bonds``."""
        check_bond_mode(bonds, BOND_MODES)
        return self._part("smiles", bonds, bonds, progress)

    def statistics(self, bonds: str = "lookup", progress: bool = True) -> dict[str, Any]:
        """The distribution reference (see :func:`molediff.metrics.distribution_statistics`)."""
        check_bond_mode(bonds)
        return self._part("statistics", bonds, bonds, progress)

    def features(self, progress: bool = True) -> DruglikeFeatures:
        """The drug-like featurisation (``progress``: say so when it is built rather than loaded)."""
        return self._part("features", None, progress)

    def rings(self) -> dict[str, Any] | None:
        """Ring-system figures of (a sample of) the molecules, or ``None`` when the reference has none."""
        return self._part("rings", None) if self.has("rings") else None

    def bond_types(self, progress: bool = True) -> dict[str, int] | None:
        """The bond-type counts of the molecules' own written bonds (:func:`~molediff.metrics.distributions.bond_type_counts`),
        or ``None`` when the reference has no bonds of its own."""
        return self._part("bond_types", None, progress) if self.has("bond_types") else None

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "label": self.label}


def _given(value: T | Callable[[], T]) -> T:
    """A value, or what a function that gives it returns (read on first use)."""
    return value() if callable(value) else value


def molecules_reference(molecules: Any, name: str, label: str | None = None) -> Reference:
    """Any molecules as the reference (a :class:`~molediff.data.molecules.MoleculeSet`; with bonds and
    charges for the ``"model"`` bond mode's SMILES): novelty against their SMILES, distributions
    against their statistics, computed in memory on first use."""
    from molediff.metrics import distribution_statistics, smiles_set

    label = label or name
    n = len(molecules)

    def statistics(bonds: str, progress: bool) -> dict[str, Any]:
        stats = distribution_statistics(molecules, bonds, progress=progress, description=f"{name}: {n} molecules",
                                        desc=f"reference statistics ({bonds} bonds)")
        return {**stats, "label": label}

    def bond_types(progress: bool) -> dict[str, int]:  # noqa: ARG001 - numpy, quick
        from molediff.metrics import written_bond_types

        return written_bond_types(molecules)

    return Reference(
        "molecules", name, label,
        smiles=lambda bonds, progress: smiles_set(molecules, bonds, progress=progress, desc=f"reference SMILES ({bonds} bonds)"),
        statistics=statistics,
        # molecules read with their bonds (an SDF file's own) have a written chemistry to compare with
        bond_types=bond_types if bool(np.asarray(getattr(molecules, "has_bonds", [False])).any()) else None,
    )


def smiles_reference(
    smiles: Sequence[str] | Callable[[], Sequence[str]],
    name: str,
    label: str | None = None,
    *,
    kind: str = "smiles",
    fcd_stats: Mapping[str, np.ndarray] | Callable[[], Mapping[str, np.ndarray]] | None = None,
    compute_fcd: bool = True,
    n_jobs: int = 1,
    cache: str | os.PathLike | Callable[[], Path] | None = None,
) -> Reference:
    """Molecules given as SMILES (no 3D: no :meth:`~Reference.statistics`) as the reference: novelty
    against their canonical largest-fragment SMILES (whatever the bond mode: a SMILES has its own bonds),
    :class:`DruglikeFeatures` by :func:`build_druglike_features` (``fcd_stats``, ``compute_fcd``,
    ``n_jobs``; loaded from and saved to the ``.npz`` ``cache`` when given), and the rings of a sample of
    :data:`RING_REFERENCE_SIZE` (:func:`ring_sample_statistics`). ``smiles``, ``fcd_stats`` and ``cache``
    may be functions that give them, called on first use (e.g. reading a data file)."""
    from functools import cache as once

    from molediff.chem.rdkit_mol import canonical_smiles

    source = once(lambda: [str(s) for s in _given(smiles)])

    def novelty(bonds: str, progress: bool) -> frozenset[str]:  # noqa: ARG001 - every bond mode reads the SMILES' own bonds
        return frozenset(c for c in (canonical_smiles(s, largest_fragment=True) for s in source()) if c)

    def features(progress: bool) -> DruglikeFeatures:
        def build() -> DruglikeFeatures:
            return build_druglike_features(source(), name, fcd_stats=_given(fcd_stats), compute_fcd=compute_fcd, n_jobs=n_jobs)

        return build() if cache is None else cached_features(_given(cache), build, progress, what=name)

    def rings() -> dict[str, Any]:
        build = lambda: ring_sample_statistics(source(), name)  # noqa: E731
        return build() if cache is None else cached_rings(Path(_given(cache)).with_suffix(".rings.json"), build)

    return Reference(kind, name, label, smiles=novelty, features=features, rings=rings)
