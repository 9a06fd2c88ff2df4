"""The MOSES suite (Polykovskiy et al., 2020), following the definitions of the ``molsets`` code that
produced the published tables: :func:`moses_metrics` — validity, unique@1k / unique@10k, novelty, FCD
(:mod:`molediff.metrics.fcd`), SNN, Frag, Scaf, IntDiv / IntDiv2 (:mod:`molediff.metrics.fingerprints`)
and Filters. As MOSES, everything but validity, uniqueness and novelty is computed on the *valid*
molecules, duplicates kept (each is featurised once and counted with its multiplicity, which gives the
same numbers faster). The RDKit work is shared by worker processes (:class:`Workers`) in chunks of SMILES.

Also here: :func:`smiles_hashes` / :func:`hashed_novelty`, novelty against a training set compact
enough for a model file to carry.
"""

from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdSubstructLibrary
from rdkit.Chem.Scaffolds import MurckoScaffold

from molediff.chem.rdkit_mol import canonical_smiles, mol_from_smiles
from molediff.metrics.errors import MetricUnavailable
from molediff.metrics.fcd import frechet_chemnet_distance
from molediff.metrics.fingerprints import FP_BITS, internal_diversity, morgan_fingerprints, similarity_to_nearest_neighbour
from molediff.metrics.moses_data import MosesFilters
from molediff.metrics.properties import DRUGLIKE_PROPERTY_NAMES, druglike_properties

if TYPE_CHECKING:
    from molediff.metrics.reference import DruglikeFeatures, Reference

__all__ = [
    "count_cosine_similarity",
    "fragment_counts",
    "hashed_novelty",
    "moses_metrics",
    "novelty",
    "passes_filters",
    "scaffold_counts",
    "smiles_hashes",
    "unique_fraction",
]

#: Molecules per task handed to a worker process.
_CHUNK = 1000


# ----------------------------------------------------------------------------- features and measures


def fragment_counts(mols: Iterable[Chem.Mol]) -> Counter:
    """BRICS fragments (canonical SMILES with the dummy-atom labels, as MOSES) counted over ``mols``."""
    counts: Counter = Counter()
    with rdBase.BlockLogs():
        for mol in mols:
            counts.update(Chem.MolToSmiles(Chem.FragmentOnBRICSBonds(mol)).split("."))
    return counts


def scaffold_counts(mols: Iterable[Chem.Mol], min_rings: int = 2) -> Counter:
    """Bemis–Murcko scaffolds (canonical SMILES) counted over ``mols``; as MOSES, scaffolds with fewer
    than ``min_rings`` rings (default 2) and empty scaffolds are not counted."""
    counts: Counter = Counter()
    with rdBase.BlockLogs():
        for mol in mols:
            try:
                scaffold = MurckoScaffold.GetScaffoldForMol(mol)
            except (ValueError, RuntimeError):
                continue
            smiles = Chem.MolToSmiles(scaffold)
            if smiles and scaffold.GetRingInfo().NumRings() >= min_rings:
                counts[smiles] += 1
    return counts


def count_cosine_similarity(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Cosine similarity of two count vectors given as ``{key: count}`` (absent keys are 0); ``nan`` if
    either is empty (MOSES ``cos_similarity``)."""
    if not a or not b:
        return float("nan")
    dot = float(sum(float(v) * float(b.get(k, 0.0)) for k, v in a.items()))
    na = math.sqrt(sum(float(v) ** 2 for v in a.values()))
    nb = math.sqrt(sum(float(v) ** 2 for v in b.values()))
    return dot / (na * nb) if na > 0 and nb > 0 else float("nan")


def unique_fraction(canonical: Sequence[str], k: int | None = None) -> float:
    """Distinct SMILES among the first ``k`` (all if ``None`` or fewer) canonical SMILES of valid molecules."""
    head = list(canonical[:k]) if k is not None else list(canonical)
    return len(set(head)) / len(head) if head else float("nan")


def novelty(canonical: Iterable[str], train: Iterable[str]) -> float:
    """Fraction of the distinct canonical SMILES not in ``train`` (compared as strings, as MOSES: pass
    canonical training SMILES, e.g. MOSES's own train split, or canonicalise them with
    :func:`~molediff.chem.rdkit_mol.canonical_smiles` first). A ``set``/``frozenset`` is used as is."""
    distinct = set(canonical) - {None}
    if not distinct:
        return float("nan")
    train_set = train if isinstance(train, (set, frozenset)) else set(train)
    return len(distinct - train_set) / len(distinct)


def smiles_hashes(smiles: Iterable[str | None]) -> np.ndarray:
    """The distinct SMILES strings as sorted 64-bit hashes (the first 8 bytes of BLAKE2b, [k] int64): a
    set of training molecules compact enough for a model file to carry (60,000 molecules: 480 kB), so
    that novelty can be scored offline (:func:`hashed_novelty`). Pass canonical SMILES
    (:func:`~molediff.chem.rdkit_mol.canonical_smiles`); two distinct SMILES collide with probability
    ~k²/2⁶⁵ (nil for any data set)."""
    import hashlib

    values = {int.from_bytes(hashlib.blake2b(x.encode(), digest_size=8).digest(), "little", signed=True)
              for x in smiles if x}
    return np.array(sorted(values), dtype=np.int64)


def hashed_novelty(canonical: Iterable[str | None], hashes: np.ndarray) -> float:
    """:func:`novelty` against a set given as :func:`smiles_hashes`: the fraction of the distinct
    SMILES whose hash is not among ``hashes``; NaN without any."""
    mine = smiles_hashes(canonical)
    if not len(mine):
        return float("nan")
    hashes = np.asarray(hashes, dtype=np.int64)
    return float(1.0 - np.isin(mine, hashes).sum() / len(mine))


# ----------------------------------------------------------------------------- filters


@functools.lru_cache(maxsize=4)
def _compiled_filters(smarts: tuple[str, ...]) -> tuple[Chem.Mol, ...]:
    patterns = []
    for s in smarts:
        pattern = Chem.MolFromSmarts(s)
        if pattern is None:
            raise ValueError(f"invalid filter SMARTS {s!r}")
        patterns.append(pattern)
    return tuple(patterns)


def _filter_candidate(mol: Chem.Mol | None, filters: MosesFilters) -> bool:
    """Whether ``mol`` passes the filters' rules other than the SMARTS alerts (elements, charges, ring
    sizes, a SMILES that reads back)."""
    if mol is None or mol.GetNumAtoms() == 0:
        return False
    if any(len(r) >= filters.min_forbidden_ring for r in mol.GetRingInfo().AtomRings()):
        return False
    if any(a.GetFormalCharge() != 0 or a.GetSymbol() not in filters.allowed for a in mol.GetAtoms()):
        return False
    smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
    return bool(smiles) and Chem.MolFromSmiles(smiles) is not None


def passes_filters(mols: Sequence[Chem.Mol | None], filters: MosesFilters) -> np.ndarray:
    """``[n]`` bool: whether each molecule passes MOSES's filters — only ``filters.allowed`` elements, no
    formal charge, no ring of ``filters.min_forbidden_ring`` or more atoms, none of the SMARTS alerts on
    the molecule with explicit hydrogens, and its (non-isomeric) SMILES reads back. ``None`` fails.
    The alerts are screened with RDKit pattern fingerprints (a ``SubstructLibrary``): same answers as
    matching every alert on every molecule, ~20x faster."""
    patterns = _compiled_filters(tuple(filters.smarts))
    ok = np.zeros(len(mols), dtype=bool)
    with rdBase.BlockLogs():
        candidates = [i for i, mol in enumerate(mols) if _filter_candidate(mol, filters)]
        hmols = [Chem.AddHs(mols[i]) for i in candidates]
        if not candidates:
            return ok
        holder, screens = rdSubstructLibrary.MolHolder(), rdSubstructLibrary.PatternHolder()
        for m in hmols:
            holder.AddMol(m)
            screens.AddFingerprint(Chem.PatternFingerprint(m))
        library = rdSubstructLibrary.SubstructLibrary(holder, screens)
        flagged = np.zeros(len(hmols), dtype=bool)
        for pattern in patterns:
            hits = library.GetMatches(pattern, numThreads=1, maxResults=len(hmols))
            if len(hits):
                flagged[np.fromiter(hits, dtype=np.int64)] = True
    ok[np.asarray(candidates)[~flagged]] = True
    return ok


# ----------------------------------------------------------------------------- worker processes


def _chunk_task(task: tuple[str, list[str], Any]) -> Any:
    """Featurise one chunk of SMILES (in a worker process or inline): parse, drop unparsable, compute
    ``kind``. Returns ``(valid mask, value)``."""
    kind, smiles, option = task
    if kind == "canonical":
        return np.ones(len(smiles), dtype=bool), [canonical_smiles(s, largest_fragment=bool(option)) for s in smiles]
    mols = [mol_from_smiles(s) for s in smiles]
    mask = np.array([m is not None for m in mols], dtype=bool)
    mols = [m for m in mols if m is not None]
    if kind == "fingerprints":
        value = np.packbits(morgan_fingerprints(mols), axis=1)
    elif kind == "fragments":
        value = fragment_counts(mols)
    elif kind == "scaffolds":
        value = scaffold_counts(mols, min_rings=int(option))
    elif kind == "properties":
        props = druglike_properties(mols)
        value = np.stack([props[n] for n in DRUGLIKE_PROPERTY_NAMES]) if mols else np.zeros((len(DRUGLIKE_PROPERTY_NAMES), 0))
    elif kind == "filters":
        value = passes_filters(mols, option)
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    return mask, value


class Workers:
    """``n_jobs`` spawned worker processes (started on first use, for inputs of two chunks or more), or
    inline work for ``n_jobs <= 1``. Use as a context manager. :meth:`map` returns one ``(valid mask,
    value)`` per chunk; the ``gather_*`` functions join them (shared with
    :func:`molediff.metrics.reference.build_druglike_features`)."""

    def __init__(self, n_jobs: int = 1) -> None:
        self.n_jobs = max(1, int(n_jobs))
        self._pool: Any = None

    def map(self, kind: str, smiles: Sequence[str], option: Any = None) -> list[tuple[np.ndarray, Any]]:
        tasks = [(kind, list(smiles[i : i + _CHUNK]), option) for i in range(0, len(smiles), _CHUNK)]
        if self.n_jobs == 1 or len(tasks) < 2:
            return [_chunk_task(t) for t in tasks]
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(self.n_jobs)
        return self._pool.map(_chunk_task, tasks, chunksize=1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None and self._pool is not None:
            self._pool.terminate()
        self.close()


def gather_fingerprints(parts: list[tuple[np.ndarray, Any]]) -> np.ndarray:
    packed = [v for _, v in parts if len(v)]
    if not packed:
        return np.zeros((0, FP_BITS), dtype=np.uint8)
    return np.unpackbits(np.concatenate(packed), axis=1, count=FP_BITS)


def gather_counter(parts: list[tuple[np.ndarray, Any]]) -> Counter:
    total: Counter = Counter()
    for _, c in parts:
        total.update(c)
    return total


def gather_properties(parts: list[tuple[np.ndarray, Any]]) -> dict[str, np.ndarray]:
    stacked = np.concatenate([v for _, v in parts], axis=1) if parts else np.zeros((len(DRUGLIKE_PROPERTY_NAMES), 0))
    return {name: stacked[row] for row, name in enumerate(DRUGLIKE_PROPERTY_NAMES)}


def _weighted_counts(workers: Workers, kind: str, distinct: list[str], weights: np.ndarray, option: Any) -> Counter:
    """Counts of ``kind`` (fragments / scaffolds) over the valid set: each distinct molecule's counts
    times its multiplicity (one worker call per distinct molecule would be slow, so groups of equal
    multiplicity are featurised together)."""
    total: Counter = Counter()
    for w in np.unique(weights):
        group = [s for s, wi in zip(distinct, weights) if wi == w]
        counts = gather_counter(workers.map(kind, group, option))
        for key, c in counts.items():
            total[key] += int(c * w)
    return total


# ----------------------------------------------------------------------------- the MOSES suite


@contextlib.contextmanager
def _timed(seconds: dict[str, float], key: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    seconds[key] = time.perf_counter() - t


def _valid_canonical(workers: Workers, gen: list[Any], largest_fragment: bool) -> list[str]:
    """Canonical SMILES of the valid inputs, in order, duplicates kept (SMILES inputs in the workers)."""
    strings = [g for g in gen if isinstance(g, str)]
    if len(strings) == len([g for g in gen if g is not None]):
        parts = workers.map("canonical", [g if g is not None else "" for g in gen], largest_fragment)
        canonical = [c for _, value in parts for c in value]
    else:
        canonical = [canonical_smiles(g, largest_fragment) for g in gen]
    return [c for c in canonical if c is not None]


def _uniqueness(valid: list[str], ks: Sequence[int], out: dict[str, Any], notes: dict[str, str]) -> tuple[list[str], np.ndarray]:
    """``unique@k`` into ``out`` (with a note when fewer than k are valid); returns the distinct valid
    SMILES and each one's multiplicity."""
    for k in ks:
        key = f"unique@{k // 1000}k" if k % 1000 == 0 else f"unique@{k}"
        out[key] = unique_fraction(valid, k) if valid else None
        if 0 < len(valid) < k:
            notes[key] = f"only {len(valid)} valid molecules (< {k}): computed over all of them, as MOSES"
    distinct, inverse = np.unique(np.asarray(valid, dtype=object), return_inverse=True) if valid else (np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64))
    distinct = [str(s) for s in distinct]
    weights = np.bincount(inverse, minlength=len(distinct)).astype(np.float64)
    out["num_unique"] = len(distinct)
    return distinct, weights


def _fcd(valid: list[str], features: "DruglikeFeatures", fcd: bool, notes: dict[str, str]) -> float | None:
    if not fcd:
        notes["fcd"] = "skipped (fcd=False)"
        return None
    if features.fcd_stats is None:
        notes["fcd"] = f"reference has no ChemNet statistics: {features.fcd_note}"
        return None
    try:
        return frechet_chemnet_distance(valid, features.fcd_stats)
    except MetricUnavailable as exc:
        notes["fcd"] = str(exc)
        return None


def _featurised_metrics(workers: Workers, distinct: list[str], weights: np.ndarray, features: "DruglikeFeatures",
                        filters: MosesFilters | None, out: dict[str, Any], notes: dict[str, str], seconds: dict[str, float]) -> None:
    """SNN, Frag, Scaf, IntDiv / IntDiv2 and Filters of the distinct valid molecules, weighted by multiplicity."""
    with _timed(seconds, "snn"):
        fps = gather_fingerprints(workers.map("fingerprints", distinct))
        out["snn"] = similarity_to_nearest_neighbour(fps, features.fingerprints, weights)
    with _timed(seconds, "frag"):
        out["frag"] = count_cosine_similarity(features.fragments, _weighted_counts(workers, "fragments", distinct, weights, None))
    with _timed(seconds, "scaf"):
        gen_scafs = _weighted_counts(workers, "scaffolds", distinct, weights, features.scaffold_min_rings)
        out["scaf"] = count_cosine_similarity(features.scaffolds, gen_scafs)
        if not gen_scafs:
            notes["scaf"] = f"no generated molecule has a scaffold of {features.scaffold_min_rings}+ rings"
    with _timed(seconds, "int_div"):
        out["int_div"] = internal_diversity(fps, 1, weights)
        out["int_div2"] = internal_diversity(fps, 2, weights)
    with _timed(seconds, "filters"):
        if filters is None:
            out["filters"] = None
            notes["filters"] = "no filters given (pass filters=load_moses_filters())"
        else:
            passed = np.concatenate([v for _, v in workers.map("filters", distinct, filters)])
            out["filters"] = float(np.sum(passed * weights) / weights.sum())


def moses_metrics(
    gen: Iterable[str | Chem.Mol | None],
    reference: "Reference",
    train: Iterable[str] | None = None,
    filters: MosesFilters | None = None,
    ks: Sequence[int] = (1000, 10000),
    fcd: bool = True,
    largest_fragment: bool = False,
    n_jobs: int = 1,
    _keep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The MOSES metrics of generated molecules (SMILES, RDKit molecules, or ``None`` for a failed
    generation) against a :class:`~molediff.metrics.reference.Reference` (its
    :meth:`~molediff.metrics.reference.Reference.features`).

    Returns ``validity`` (valid / all inputs), ``unique@1k`` / ``unique@10k`` (distinct among the first
    k valid; over all valid when fewer, with a note), ``novelty`` (distinct valid not in ``train``;
    ``None`` without it), ``fcd``, ``snn``, ``frag``, ``scaf``, ``int_div``, ``int_div2``, ``filters``
    (``None`` without ``filters``: pass :func:`~molediff.metrics.moses_data.load_moses_filters`), counts,
    ``notes`` (why a metric is ``None``) and ``seconds`` per metric. ``largest_fragment`` keeps each
    molecule's largest fragment (MOSES scores the whole input). ``n_jobs`` worker processes share the
    RDKit work."""
    gen = list(gen)
    features = reference.features()
    notes: dict[str, str] = {}
    seconds: dict[str, float] = {}
    out: dict[str, Any] = {"num_molecules": len(gen), "reference": reference.name}
    with Workers(n_jobs) as workers:
        with _timed(seconds, "validity"):
            valid = _valid_canonical(workers, gen, largest_fragment)
            if _keep is not None:  # for evaluate_druglike: the valid molecules, duplicates kept
                _keep["valid_smiles"] = valid
            out["num_valid"] = len(valid)
            out["validity"] = len(valid) / len(gen) if gen else float("nan")
        with _timed(seconds, "unique"):
            distinct, weights = _uniqueness(valid, ks, out, notes)
        with _timed(seconds, "novelty"):
            if train is None:
                out["novelty"] = None
                notes["novelty"] = "no training SMILES given"
            else:
                out["novelty"] = novelty(distinct, train) if distinct else None
        if not distinct:
            for key in ("fcd", "snn", "frag", "scaf", "int_div", "int_div2", "filters"):
                out[key] = None
                notes[key] = "no valid molecules"
            out["notes"], out["seconds"] = notes, {k: round(v, 3) for k, v in seconds.items()}
            return out
        with _timed(seconds, "fcd"):
            out["fcd"] = _fcd(valid, features, fcd, notes)
        _featurised_metrics(workers, distinct, weights, features, filters, out, notes, seconds)
        if _keep is not None:  # for evaluate_druglike: properties of the same molecules
            t = time.perf_counter()
            props = gather_properties(workers.map("properties", distinct))
            _keep["properties"] = {k: np.repeat(v, weights.astype(np.int64)) for k, v in props.items()}
            _keep["seconds_properties"] = time.perf_counter() - t
    out["notes"] = notes
    out["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return out
