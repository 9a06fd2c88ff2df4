"""Quality of the bundled QM9 model (or ``--checkpoint``): every evaluate metric at several step counts.

Samples ``--n`` molecules (default 1,000) per step count with ``molediff.load_pretrained`` and scores
them with :func:`molediff.metrics.evaluate_molecules` (lookup bonds, novelty against the QM9 train
split), side by side with the published rows for QM9 data and EDM. Prints a table and writes
``benchmarks/results/qm9_quality.json``.

    python benchmarks/qm9_quality.py --steps 50,100,250,1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from molediff.metrics import PUBLISHED_EDM_PERCENT, PUBLISHED_QM9_DATA_PERCENT, evaluate_molecules
from molediff.molecular import DEFAULT_ETA
from molediff.sampling import load_pretrained

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ("atom_stability", "molecule_stability", "validity", "strict_validity", "uniqueness", "valid_x_unique", "novelty", "connected")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", default="50,100,250,1000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eta", default=None,
                    help=f"comma-separated DDIM η values for the strided step counts (default {DEFAULT_ETA:g}, the sampler's)")
    ap.add_argument("--checkpoint", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network (faster; same molecules up to float rounding)")
    ap.add_argument("--out", default=str(RESULTS / "qm9_quality.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = load_pretrained(args.checkpoint)
    if args.compile:
        gen.compile()
    T = gen.config.diffusion.timesteps
    rows = []
    etas = [float(e) for e in args.eta.split(",")] if args.eta else [DEFAULT_ETA]
    for steps in [int(s) for s in args.steps.split(",")]:
        for eta in etas if steps < T else [1.0]:  # all T steps: ancestral DDPM (η = 1 by definition)
            t0 = time.time()
            mols = list(gen.sample_arrays(args.n, steps=None if steps == T else steps, seed=args.seed, eta=eta))
            sample_s = time.time() - t0
            scores = evaluate_molecules(mols, bonds="lookup", reference=True, progress=False)
            row = {"steps": steps, "eta": eta, "n": args.n, "sample_seconds": round(sample_s, 1), **{c: scores.get(c) for c in COLUMNS}}
            rows.append(row)
            print(f"steps {steps}, eta {eta:g}: " + ", ".join(f"{c} {100 * row[c]:.1f}" for c in COLUMNS if row[c] is not None), flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "model": gen.source, "model_meta": {k: v for k, v in gen.meta.items() if k not in ("size_histogram", "learning_curve")}}
    out = Path(args.out)
    # rows of other step counts for the same model (an earlier call) are kept, so long step counts
    # can be run separately; a different model starts a fresh file
    if out.exists():
        previous = json.loads(out.read_text())
        if previous.get("meta", {}).get("model_meta") == meta["model_meta"] and previous.get("n") in (None, args.n):
            done = {(r["steps"], r["eta"]) for r in rows}
            rows = sorted([r for r in previous["rows"] if (r["steps"], r.get("eta")) not in done and r["n"] == args.n] + rows,
                          key=lambda r: (r["steps"], r["eta"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "n": args.n, "rows": rows}, indent=2))
    print()
    print("row | " + " | ".join(COLUMNS))
    for name, ref in (("QM9 data (published)", PUBLISHED_QM9_DATA_PERCENT), ("EDM (published, 1000 steps)", PUBLISHED_EDM_PERCENT)):
        print(name + " | " + " | ".join(f"{ref[c]:.1f}" if c in ref else "-" for c in COLUMNS))
    for r in rows:
        print(f"molediff, {r['steps']} steps, η {r['eta']:g} | " + " | ".join(f"{100 * r[c]:.1f}" if r[c] is not None else "-" for c in COLUMNS))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
