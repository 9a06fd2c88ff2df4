"""Every drug-discovery metric of generated molecules at once: :func:`evaluate_druglike` runs the MOSES
suite (:mod:`molediff.metrics.moses`), the drug-likeness distributions
(:mod:`molediff.metrics.properties`), the ring systems (:mod:`molediff.metrics.rings`) and, for
molecules with 3D conformers, PoseBusters (:mod:`molediff.metrics.posebusters`) and the force-field
strain (:mod:`molediff.metrics.relaxation`), and records seconds per metric;
:func:`molediff.metrics.report.format_druglike_table` prints the result.

Reference data always comes in as an argument, one :class:`molediff.metrics.reference.Reference` (its
drug-like features and ring figures; the MOSES test set's: :func:`molediff.data.reference.moses_test_reference`). Optional packages: ``fcd_torch`` (FCD; extra
``druglike``) and ``posebusters`` (extra ``posebusters``); without them the affected metric is
``None`` and ``result["notes"]`` says why.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable, Sequence

from rdkit import Chem

from molediff.chem.rdkit_mol import mol_from_smiles
from molediff.metrics.errors import MetricUnavailable
from molediff.metrics.moses import moses_metrics
from molediff.metrics.moses_data import MosesFilters
from molediff.metrics.posebusters import posebusters_checks
from molediff.metrics.properties import property_distributions
from molediff.metrics.reference import Reference
from molediff.metrics.relaxation import relaxation_metrics, strain_against_etkdg
from molediff.metrics.report import plot_property_histograms
from molediff.metrics.rings import ring_statistics

__all__ = ["evaluate_druglike"]


def _three_d(result: dict[str, Any], mols_3d: Sequence[Chem.Mol | None], posebusters_config: str | None, strain: bool,
             notes: dict[str, str], seconds: dict[str, float]) -> None:
    """``"posebusters"``, ``"relaxation"`` and ``"strain"`` of the 3D molecules into ``result``."""
    if posebusters_config is None:
        notes["posebusters"] = "skipped (posebusters_config=None)"
    else:
        t = time.perf_counter()
        try:
            result["posebusters"] = posebusters_checks(mols_3d, config=posebusters_config)
        except MetricUnavailable as exc:
            notes["posebusters"] = str(exc)
        seconds["posebusters"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    result["relaxation"] = relaxation_metrics(mols_3d)
    seconds["relaxation"] = round(time.perf_counter() - t, 3)
    if strain:
        t = time.perf_counter()
        result["strain"] = strain_against_etkdg(mols_3d)
        seconds["strain"] = round(time.perf_counter() - t, 3)
    else:
        notes["strain"] = "skipped (strain=False)"


def evaluate_druglike(
    gen: Iterable[str | Chem.Mol | None],
    reference: Reference,
    train: Iterable[str] | None = None,
    filters: MosesFilters | None = None,
    mols_3d: Sequence[Chem.Mol | None] | None = None,
    posebusters_config: str | None = "mol",
    fcd: bool = True,
    largest_fragment: bool = False,
    n_jobs: int = 1,
    plots_dir: str | os.PathLike | None = None,
    strain: bool = True,
) -> dict[str, Any]:
    """Every drug-like metric against ``reference`` (and novelty against the SMILES ``train``): ``"moses"``
    (:func:`~molediff.metrics.moses.moses_metrics`), ``"properties"``
    (:func:`~molediff.metrics.properties.property_distributions` of the valid molecules, duplicates kept,
    vs the properties of ``reference.features()``), ``"rings"``
    (:func:`molediff.metrics.rings.ring_statistics` of the valid molecules, beside ``reference.rings()``,
    the same figures of reference molecules, kept as ``"rings_reference"``), and for
    ``mols_3d`` (molecules with 3D conformers and explicit H, e.g. the same generated molecules; ``None``
    entries are records that could not be read, counted as failing) ``"posebusters"`` (``None`` when
    ``posebusters_config`` is ``None`` or the package is missing), ``"relaxation"`` and, with ``strain``,
    ``"strain"`` (:func:`molediff.metrics.relaxation.strain_against_etkdg`: the molecules' relaxation
    drop beside that of ETKDGv3 conformers of the same graphs). ``notes`` say why a part is ``None``;
    ``seconds`` per metric. ``plots_dir``: also write
    :func:`~molediff.metrics.report.plot_property_histograms` there."""
    keep: dict[str, Any] = {}
    result: dict[str, Any] = {}
    features = reference.features()
    moses = moses_metrics(gen, reference, train=train, filters=filters, fcd=fcd, largest_fragment=largest_fragment,
                          n_jobs=n_jobs, _keep=keep)
    result["moses"] = moses
    notes = {f"moses.{k}": v for k, v in moses.get("notes", {}).items()}
    seconds = dict(moses["seconds"])
    gen_props = keep.get("properties")
    if gen_props is not None and features.properties is not None:
        result["properties"] = property_distributions(gen_props, features.properties)
    else:
        result["properties"] = None
        notes["properties"] = "no valid molecules" if gen_props is None else "reference has no properties"
    if "seconds_properties" in keep:
        seconds["properties"] = round(keep["seconds_properties"], 3)
    if plots_dir is not None and gen_props is not None:
        result["plots"] = [str(p) for p in plot_property_histograms(gen_props, features.properties, plots_dir, reference_label=reference.name)]
    ref_rings = reference.rings()  # before the clock: the reference's side is made once, not per evaluation
    t = time.perf_counter()
    valid_mols = [m for m in (mol_from_smiles(s) for s in keep.get("valid_smiles", [])) if m is not None]
    result["rings"] = ring_statistics(valid_mols, generated=moses["num_molecules"])
    result["rings"].pop("per_molecule")
    result["rings_reference"] = dict(ref_rings) if ref_rings is not None else None
    seconds["rings"] = round(time.perf_counter() - t, 3)
    result["posebusters"] = result["relaxation"] = result["strain"] = None
    if mols_3d is None:
        notes["posebusters"] = notes["relaxation"] = notes["strain"] = "no 3D molecules given"
    else:
        _three_d(result, list(mols_3d), posebusters_config, strain, notes, seconds)
    result["notes"] = notes
    result["seconds"] = seconds
    return result
