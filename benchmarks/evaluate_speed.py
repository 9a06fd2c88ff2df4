"""How long ``evaluate_molecules`` takes on 1,000 QM9 test molecules.

Runs: lookup and rdkit bonds, each without reference (stability, validity, uniqueness) and with the
QM9 reference (+ novelty, distributions, QED/logP/MolWt). Reference caches are built first if missing
(timed separately: a one-time cost), then each configuration is timed with a cold in-process memo
(caches read from disk) and a warm one (as when a sampler evaluates repeatedly).

    python benchmarks/evaluate_speed.py [--n 1000] [--bonds lookup rdkit]

Prints a table and writes ``benchmarks/results/evaluate_speed.json``.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="molecules from the QM9 test split (fixed seed 0)")
    parser.add_argument("--bonds", nargs="+", default=["lookup", "rdkit"], choices=["lookup", "rdkit"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "evaluate_speed.json"))
    args = parser.parse_args()

    import molediff.metrics as metrics
    from molediff.data import reference as reference_data
    from molediff.data.qm9 import load_qm9

    test = load_qm9("test", progress=False)
    index = np.sort(np.random.default_rng(0).choice(len(test), min(args.n, len(test)), replace=False))
    molecules = test.subset(index)

    rows = []
    cache_build = {}
    for bonds in args.bonds:
        t = time.perf_counter()
        reference_data.training_smiles(bonds, progress=True)
        reference_data.reference_statistics(bonds, progress=True)
        cache_build[bonds] = round(time.perf_counter() - t, 2)  # ~1 s when the caches already exist
        for reference in (False, True):
            for memo in ("cold", "warm"):
                if memo == "cold":
                    reference_data._MEMO.clear()
                elif not reference:
                    continue  # nothing to memoise without reference
                t = time.perf_counter()
                # the references are loaded inside the timed region, as `molediff evaluate` does
                stats = reference_data.reference_statistics(bonds, progress=False) if reference else None
                novel = reference_data.training_smiles(bonds, progress=False) if reference else None
                result = metrics.evaluate_molecules(molecules, bonds=bonds, reference=stats, novelty=novel, progress=False)
                seconds = time.perf_counter() - t
                rows.append(
                    {
                        "bonds": bonds,
                        "reference": reference,
                        "memo": memo if reference else "-",
                        "seconds": round(seconds, 3),
                        "molecules_per_second": round(len(molecules) / seconds, 1),
                        "parts": result["seconds"],
                        "validity": result["validity"],
                        "molecule_stability": result["molecule_stability"],
                    }
                )

    print(f"evaluate_molecules on {len(molecules)} QM9 test molecules")
    print(f"{'bonds':<7} {'reference':<10} {'memo':<5} {'seconds':>8} {'mol/s':>8}   parts")
    for r in rows:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in r["parts"].items() if k != "total")
        print(f"{r['bonds']:<7} {str(r['reference']):<10} {r['memo']:<5} {r['seconds']:>8.2f} {r['molecules_per_second']:>8.0f}   {parts}")
    print("reference cache load/build seconds:", cache_build)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "num_molecules": len(molecules),
        "rows": rows,
        "reference_cache_seconds": cache_build,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "note": "2 shared CPU cores; timings include RDKit sanitization/SMILES per molecule and, with reference, QED/logP/MolWt",
    }
    atomic_write(out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
