"""Synthetic accessibility score (Ertl & Schuffenhauer, J. Cheminf. 2009): :func:`sa_score`, from RDKit's
Contrib ``sascorer`` when installed, else from this module's implementation of the same formula with
the same fragment table (RDKit Contrib's ``fpscores.pkl.gz``, else molsets' copy)."""

from __future__ import annotations

import functools
import gzip
import importlib.util
import math
import pickle
from pathlib import Path
from typing import Any, Mapping

from rdkit import Chem, RDConfig
from rdkit.Chem import rdMolDescriptors

from molediff.metrics.errors import MetricUnavailable
from molediff.metrics.fingerprints import morgan_generator
from molediff.metrics.moses_data import moses_data_dir

__all__ = ["sa_score"]


@functools.lru_cache(maxsize=1)
def _contrib_sascorer() -> Any | None:
    """RDKit's Contrib ``sascorer`` module (loaded from ``RDConfig.RDContribDir``), or ``None``."""
    path = Path(RDConfig.RDContribDir) / "SA_Score" / "sascorer.py"
    if not path.is_file() or not (path.parent / "fpscores.pkl.gz").is_file():
        return None
    spec = importlib.util.spec_from_file_location("_molediff_contrib_sascorer", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - a broken Contrib folder: use our own implementation
        return None
    return module


@functools.lru_cache(maxsize=2)
def _sa_fragment_scores(path: str | None = None) -> dict[int, float]:
    """Fragment contributions of the SA score: ``{Morgan radius-2 environment id: score}`` from an
    ``fpscores.pkl.gz`` (rows ``[score, id, id, ...]``); default: RDKit Contrib's, else molsets'."""
    if path is None:
        candidates = [Path(RDConfig.RDContribDir) / "SA_Score" / "fpscores.pkl.gz"]
        try:
            candidates.append(moses_data_dir() / "metrics" / "SA_Score" / "fpscores.pkl.gz")
        except MetricUnavailable:
            pass
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise MetricUnavailable("no fpscores.pkl.gz for the SA score (neither RDKit Contrib nor molsets is installed)")
        path = str(found[0])
    with gzip.open(path, "rb") as f:
        rows = pickle.load(f)  # a data file shipped with RDKit / molsets
    return {int(i): float(row[0]) for row in rows for i in row[1:]}


def _sa_score_formula(mol: Chem.Mol, fragment_scores: Mapping[int, float]) -> float:
    """SA score by the published formula (Ertl & Schuffenhauer, J. Cheminf. 2009, with the Contrib
    v1.1 fingerprint-density term): fragment score (mean contribution of the radius-2 Morgan
    environments, unknown ones −4) minus complexity penalties (size, stereo centres, spiro and bridgehead
    atoms, macrocycles), rescaled from [−4, 2.5] onto 10 … 1."""
    n_atoms = mol.GetNumAtoms()
    counts = morgan_generator(2, 2048).GetSparseCountFingerprint(mol).GetNonzeroElements()
    total = sum(counts.values())
    fragment = sum(fragment_scores.get(k, -4.0) * c for k, c in counts.items()) / total
    n_chiral = len(Chem.FindMolChiralCenters(mol, includeUnassigned=True))
    n_spiro = rdMolDescriptors.CalcNumSpiroAtoms(mol)
    n_bridge = rdMolDescriptors.CalcNumBridgeheadAtoms(mol)
    macrocycle = any(len(r) > 8 for r in mol.GetRingInfo().AtomRings())
    penalty = (n_atoms**1.005 - n_atoms) + math.log10(n_chiral + 1) + math.log10(n_spiro + 1) + math.log10(n_bridge + 1)
    penalty += math.log10(2) if macrocycle else 0.0
    density = 0.5 * math.log(n_atoms / len(counts)) if n_atoms > len(counts) else 0.0
    raw = fragment - penalty + density
    score = 11.0 - (raw + 4.0 + 1.0) / 6.5 * 9.0
    if score > 8.0:
        score = 8.0 + math.log(score - 8.0)
    return float(min(10.0, max(1.0, score)))


def sa_score(mol: Chem.Mol, implementation: str = "auto") -> float:
    """Synthetic accessibility (1 easy … 10 hard) of a sanitized molecule: RDKit's Contrib ``sascorer``
    (``"contrib"``; ``"auto"`` when present) or this module's implementation of the same formula with
    the same fragment table (``"formula"``; ``"auto"`` without Contrib, reading molsets' table)."""
    if implementation not in ("auto", "contrib", "formula"):
        raise ValueError(f"implementation must be 'auto', 'contrib' or 'formula', got {implementation!r}")
    if mol.GetNumAtoms() == 0:
        return float("nan")
    if implementation != "formula":
        scorer = _contrib_sascorer()
        if scorer is not None:
            return float(scorer.calculateScore(mol))
        if implementation == "contrib":
            raise MetricUnavailable("RDKit Contrib SA_Score is not installed with this rdkit")
    return _sa_score_formula(mol, _sa_fragment_scores())
