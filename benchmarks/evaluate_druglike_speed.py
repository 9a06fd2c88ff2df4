"""How long the drug-discovery metrics (``molediff.metrics.druglike`` and its parts) take: N drug-like
molecules (MOSES train SMILES, fixed seed) against the 176k-molecule MOSES test set, every metric, 2
worker processes.

Steps, each timed: read the MOSES files; build the test-set reference once (fingerprints, BRICS
fragments, scaffolds, drug-likeness properties; ChemNet statistics are the ones MOSES ships, as its
own ``get_all_metrics`` uses); then :func:`evaluate_druglike` on the N SMILES (validity, unique@k,
novelty vs the 1.58M train SMILES, FCD, SNN, Frag, Scaf, IntDiv, Filters, property distributions);
then the 3D part on a subset: ETKDG embedding with hydrogens, the MMFF94 relaxation test, PoseBusters
``mol_fast`` and the full ``mol`` checks (with the ETKDG-ensemble energy ratio) on a smaller subset.

    python benchmarks/evaluate_druglike_speed.py [--n 10000] [--n-3d 1000] [--n-posebusters 100] [--jobs 2]

Prints seconds per metric and writes ``benchmarks/results/evaluate_druglike_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from molediff.atomic import atomic_write


def _embed(smiles: list[str], seed: int = 0) -> list:
    from rdkit import Chem, rdBase
    from rdkit.Chem import AllChem

    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    out = []
    with rdBase.BlockLogs():
        for s in smiles:
            mol = Chem.AddHs(Chem.MolFromSmiles(s))
            out.append(mol if AllChem.EmbedMolecule(mol, params) == 0 else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="molecules from the MOSES train split (seed 0)")
    parser.add_argument("--n-3d", type=int, default=1000, help="of them, embedded in 3D for the relaxation test and PoseBusters mol_fast")
    parser.add_argument("--n-posebusters", type=int, default=100, help="of them, checked with the full PoseBusters 'mol' config")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes for the RDKit work")
    parser.add_argument("--reference-cache", metavar="FILE", help="load the test-set reference from FILE if present, else build and save it there")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "evaluate_druglike_speed.json"))
    args = parser.parse_args()

    import torch

    from molediff.metrics.druglike import evaluate_druglike
    from molediff.metrics.errors import MetricUnavailable
    from molediff.metrics.moses_data import load_moses_filters, moses_fcd_statistics, moses_reference
    from molediff.metrics.posebusters import posebusters_checks
    from molediff.metrics.reference import smiles_reference
    from molediff.metrics.relaxation import relaxation_metrics
    from molediff.metrics.report import format_druglike_table

    torch.set_num_threads(args.jobs)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    test = moses_reference("test")
    train = moses_reference("train")
    fcd_stats = moses_fcd_statistics("test")
    filters = load_moses_filters()
    seconds["read MOSES files"] = time.perf_counter() - t
    t = time.perf_counter()
    train_set = frozenset(train)
    seconds["train SMILES set"] = time.perf_counter() - t

    cache = Path(args.reference_cache) if args.reference_cache else None
    reference_source = f"loaded from {cache}" if cache is not None and cache.is_file() else "built"
    reference = smiles_reference(test, "test", fcd_stats=fcd_stats, n_jobs=args.jobs, cache=cache)
    t = time.perf_counter()
    features = reference.features(progress=False)  # loaded from the cache, or built (and saved there when given)
    seconds["reference (test set)"] = time.perf_counter() - t
    print(f"reference: {features.num_molecules} test molecules, {reference_source} in {seconds['reference (test set)']:.1f} s "
          f"(parts: {features.seconds})", flush=True)
    t = time.perf_counter()
    reference.rings()  # the ring figures of 2,000 test molecules, the reference's side of the ring table
    seconds["reference rings (2,000 test molecules)"] = time.perf_counter() - t

    index = np.random.default_rng(0).choice(len(train), args.n, replace=False)
    gen = [train[i] for i in index]

    t = time.perf_counter()
    result = evaluate_druglike(gen, reference, train=train_set, filters=filters, n_jobs=args.jobs)
    seconds["evaluate_druglike (2D, all metrics)"] = time.perf_counter() - t
    per_metric = dict(result["seconds"])

    sub = gen[: args.n_3d]
    t = time.perf_counter()
    mols3d = _embed(sub)
    seconds[f"ETKDG embedding ({len(sub)})"] = time.perf_counter() - t
    t = time.perf_counter()
    result["relaxation"] = relaxation_metrics(mols3d)
    per_metric[f"relaxation MMFF94 ({len(sub)})"] = time.perf_counter() - t
    pb_fast = pb_full = None
    pb_note = None
    try:
        t = time.perf_counter()
        pb_fast = posebusters_checks(mols3d, config="mol_fast")
        per_metric[f"posebusters mol_fast ({len(sub)})"] = time.perf_counter() - t
        t = time.perf_counter()
        pb_full = posebusters_checks(mols3d[: args.n_posebusters], config="mol")
        per_metric[f"posebusters mol ({min(len(mols3d), args.n_posebusters)})"] = time.perf_counter() - t
    except MetricUnavailable as exc:
        pb_note = str(exc)
    result["posebusters"] = pb_full
    result["posebusters_fast"] = pb_fast
    if pb_note:
        result["notes"]["posebusters"] = pb_note
    else:
        result["notes"].pop("posebusters", None)
    result["notes"].pop("relaxation", None)

    print()
    print(format_druglike_table(result))
    if pb_fast:
        print(f"PoseBusters mol_fast on {pb_fast['num_molecules']}: all checks pass {100 * pb_fast['all_pass']:.1f}%")
    print()
    print(f"seconds, {args.n} molecules vs the MOSES test set ({features.num_molecules}), {args.jobs} worker processes, "
          f"{os.cpu_count()} CPUs")
    width = max(len(k) for k in list(per_metric) + list(seconds))
    for k, v in per_metric.items():
        print(f"  {k:<{width}}  {v:8.2f}")
    print("  " + "-" * (width + 10))
    for k, v in seconds.items():
        print(f"  {k:<{width}}  {v:8.2f}")

    out = Path(args.out)
    payload = {
        "benchmark": "evaluate_druglike_speed",
        "n": args.n,
        "n_3d": len(sub),
        "n_posebusters_full": min(len(mols3d), args.n_posebusters),
        "jobs": args.jobs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "reference": {"name": reference.name, "num_molecules": features.num_molecules, "source": reference_source,
                      "seconds_parts": features.seconds, "fcd_statistics": "MOSES test_stats.npz"},
        "seconds_per_metric": {k: round(v, 2) for k, v in per_metric.items()},
        "seconds_steps": {k: round(v, 2) for k, v in seconds.items()},
        "metrics": {k: v for k, v in result.items() if k != "seconds"},
    }

    def default(obj):
        if isinstance(obj, np.generic):
            return obj.item()
        raise TypeError(type(obj).__name__)

    def finite(obj):
        if isinstance(obj, float) and not np.isfinite(obj):
            return None
        if isinstance(obj, dict):
            return {str(k): finite(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [finite(v) for v in obj]
        return obj

    atomic_write(out, json.dumps(finite(payload), indent=2, default=default) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
