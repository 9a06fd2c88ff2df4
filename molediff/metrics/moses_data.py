"""The MOSES data files shipped in the ``molsets`` package, read without importing it (``import moses``
fails on current numpy / pandas): :func:`moses_reference` (the SMILES of a split),
:func:`moses_fcd_statistics` (MOSES's own ChemNet statistics) and :func:`load_moses_filters` (the
medicinal-chemistry and PAINS alerts, as a :class:`MosesFilters`). Nothing here downloads."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molediff.metrics.errors import MetricUnavailable

__all__ = ["MOSES_ALLOWED_ATOMS", "MosesFilters", "load_moses_filters", "moses_data_dir", "moses_fcd_statistics", "moses_reference"]

#: Elements MOSES's filters allow (``mol_passes_filters``).
MOSES_ALLOWED_ATOMS: frozenset[str] = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})


def moses_data_dir() -> Path:
    """The folder of the installed ``molsets`` package (``moses``), found without importing it."""
    try:
        spec = importlib.util.find_spec("moses")
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
    except ValueError:  # a module object named moses without a spec (already imported some other way)
        locations = list(getattr(sys.modules.get("moses"), "__path__", []))
    if not locations:
        raise MetricUnavailable("the molsets package (MOSES data) is not installed: pip install molsets --no-deps")
    return Path(locations[0])


def moses_reference(split: str = "test") -> list[str]:
    """MOSES SMILES of ``split`` (``"train"`` 1,584,663, ``"test"`` 176,074, ``"test_scaffolds"`` 176,226)
    from the ``molsets`` package files."""
    import pandas as pd

    if split not in ("train", "test", "test_scaffolds"):
        raise ValueError(f"unknown MOSES split {split!r}: expected 'train', 'test' or 'test_scaffolds'")
    path = moses_data_dir() / "dataset" / "data" / f"{split}.csv.gz"
    return pd.read_csv(path, compression="gzip")["SMILES"].astype(str).tolist()


def moses_fcd_statistics(split: str = "test") -> dict[str, np.ndarray]:
    """The ChemNet activation mean ``mu`` [512] and covariance ``sigma`` [512, 512] that MOSES ships for
    ``split`` (``"test"`` or ``"test_scaffolds"``): what MOSES's ``get_all_metrics`` compares with (the
    same ChemNet weights as ``fcd_torch``). Computing them afresh takes ~7 ms per molecule on 2 cores
    (20 minutes for the test set)."""
    if split not in ("test", "test_scaffolds"):
        raise ValueError(f"MOSES ships statistics for 'test' and 'test_scaffolds', not {split!r}")
    path = moses_data_dir() / "dataset" / "data" / f"{split}_stats.npz"
    with np.load(path, allow_pickle=True) as data:  # a pickled dict written by MOSES; a package file
        stats = data["stats"].item()["FCD"]
    return {"mu": np.asarray(stats["mu"], dtype=np.float64), "sigma": np.asarray(stats["sigma"], dtype=np.float64)}


@dataclass(frozen=True)
class MosesFilters:
    """MOSES's filter rules: SMARTS alerts (MCF and PAINS, matched on the molecule with explicit
    hydrogens), allowed elements, no formal charges, no ring of ``min_forbidden_ring`` atoms or more."""

    names: tuple[str, ...]
    smarts: tuple[str, ...]
    allowed: frozenset[str] = MOSES_ALLOWED_ATOMS
    min_forbidden_ring: int = 8

    def __post_init__(self) -> None:
        if len(self.names) != len(self.smarts):
            raise ValueError(f"{len(self.names)} names but {len(self.smarts)} SMARTS")


def load_moses_filters() -> MosesFilters:
    """The 502 alerts of MOSES (``metrics/mcf.csv``: 22 medicinal-chemistry filters; ``metrics/wehi_pains.csv``:
    480 PAINS) with MOSES's other rules (:class:`MosesFilters` defaults)."""
    import pandas as pd

    base = moses_data_dir() / "metrics"
    mcf = pd.read_csv(base / "mcf.csv")
    pains = pd.read_csv(base / "wehi_pains.csv", names=["smarts", "names"])
    names = [str(n) for n in mcf["names"]] + [str(n).strip() for n in pains["names"]]
    smarts = [str(s).strip() for s in mcf["smarts"]] + [str(s).strip() for s in pains["smarts"]]
    return MosesFilters(tuple(names), tuple(smarts))
