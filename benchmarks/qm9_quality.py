"""Quality of the bundled QM9 model (or ``--checkpoint``): every evaluate metric at several step counts.

Samples ``--n`` molecules (default 1,000) per step count with ``molediff.load_pretrained`` and scores
them with :func:`molediff.metrics.evaluate_molecules` (lookup bonds on the geometry, novelty against
the QM9 train split), side by side with the published rows for QM9 data and EDM; for models that
write bonds, also the honest model-bond view (:func:`molediff.metrics.model_bond_metrics`: the bonds
and charges the model wrote, Kekulé valences with charges, no implicit H, one fragment). Prints a
table and writes ``benchmarks/results/qm9_quality.json`` (or ``--out``).

    python benchmarks/qm9_quality.py --steps 50,100,250,1000 --compile
    python benchmarks/qm9_quality.py --steps 100 --noise-scales 1,0.9,0.8,0.7,0.6   # the temperature sweep

Each step count runs at noise scale 1 (the model's own distribution, the protocol of the published
rows) and at the sampler's default noise scale.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from molediff.atomic import atomic_write
from molediff.data.molecules import MoleculeSet
from molediff.metrics import PUBLISHED_EDM_PERCENT, PUBLISHED_QM9_DATA_PERCENT, evaluate_molecules, model_bond_metrics
from molediff.config import DEFAULT_ETA, DEFAULT_NOISE_SCALE
from molediff.sampling import DEFAULT_MODEL, load_pretrained

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ("atom_stability", "molecule_stability", "validity", "strict_validity", "uniqueness", "valid_x_unique", "novelty", "connected")
#: distances to the QM9 reference (total variation, lower is better): is a lower temperature distorting the data?
DISTRIBUTIONS = ("atom_type_tv", "ring_size_tv")
#: the model-bond view, for models that write bonds
MODEL_COLUMNS = ("model_atom_stability", "model_molecule_stability", "model_connected_validity", "model_uniqueness",
                 "model_valid_x_unique", "model_novelty")


def score(gen, n: int, steps: int, eta: float, noise_scale: float, seed: int = 0) -> dict:
    """Sample ``n`` molecules with ``gen`` (a :class:`molediff.sampling.MoleculeGenerator`) and score both
    views: the geometry under lookup bonds (:data:`COLUMNS`, :data:`DISTRIBUTIONS`) and, for models that
    write bonds, the model-bond view (:data:`MODEL_COLUMNS`). All T steps: ancestral DDPM."""
    T = gen.config.diffusion.timesteps
    t0 = time.time()
    mols = list(gen.sample_arrays(n, steps=None if steps == T else steps, seed=seed, eta=eta, noise_scale=noise_scale))
    sample_s = time.time() - t0
    mset = MoleculeSet.from_records(mols)
    scores = evaluate_molecules(mset, bonds="lookup", reference=True, progress=False)
    row = {"steps": steps, "eta": eta, "noise_scale": noise_scale, "n": n, "sample_seconds": round(sample_s, 1),
           **{c: scores.get(c) for c in COLUMNS}, **{d: scores["distributions"].get(d) for d in DISTRIBUTIONS}}
    if gen.writes_bonds:
        row.update({c: v for c, v in model_bond_metrics(mset, novelty=True, progress=False)[0].items() if c in MODEL_COLUMNS})
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", default="50,100,250,1000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eta", default=None,
                    help=f"comma-separated DDIM η values for the strided step counts (default {DEFAULT_ETA:g}, the sampler's)")
    ap.add_argument("--noise-scales", default=f"1,{DEFAULT_NOISE_SCALE:g}",
                    help=f"comma-separated noise scales (default 1 and the sampler's default {DEFAULT_NOISE_SCALE:g})")
    ap.add_argument("--checkpoint", default=None, help="a model file (default: the bundled model named by --model)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name (default {DEFAULT_MODEL}; qm9, qm9-joint, qm9-cond)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network (faster; same molecules up to float rounding)")
    ap.add_argument("--out", default=str(RESULTS / "qm9_quality.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = load_pretrained(args.checkpoint, model=args.model)
    if args.compile:
        gen.compile()
    T = gen.config.diffusion.timesteps
    rows = []
    etas = [float(e) for e in args.eta.split(",")] if args.eta else [DEFAULT_ETA]
    scales = sorted({float(x) for x in args.noise_scales.split(",")}, reverse=True)
    for steps in [int(s) for s in args.steps.split(",")]:
        for eta in etas if steps < T else [1.0]:  # all T steps: ancestral DDPM (η = 1 by definition)
            for scale in scales:
                row = score(gen, args.n, steps, eta, scale, args.seed)
                row["compiled"] = args.compile
                rows.append(row)
                print(f"steps {steps}, eta {eta:g}, noise scale {scale:g}: "
                      + ", ".join(f"{c} {100 * row[c]:.1f}" for c in MODEL_COLUMNS + COLUMNS if row.get(c) is not None)
                      + ", " + ", ".join(f"{d} {row[d]:.3f}" for d in DISTRIBUTIONS), flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "model": gen.source, "model_meta": {k: v for k, v in gen.meta.items() if k not in ("size_histogram", "learning_curve")}}
    out = Path(args.out)
    # rows of other step counts for the same model (an earlier call) are kept, so long step counts
    # can be run separately; a different model starts a fresh file
    if out.exists():
        previous = json.loads(out.read_text())
        if previous.get("meta", {}).get("model_meta") == meta["model_meta"] and previous.get("n") in (None, args.n):
            key = lambda r: (r["steps"], r.get("eta"), r.get("noise_scale", 1.0))  # noqa: E731
            done = {key(r) for r in rows}
            rows = sorted([r for r in previous["rows"] if key(r) not in done and r["n"] == args.n] + rows,
                          key=lambda r: (r["steps"], r["eta"], -r.get("noise_scale", 1.0)))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps({"meta": meta, "n": args.n, "rows": rows}, indent=2))
    print()
    if gen.writes_bonds:
        print("model bonds: row | " + " | ".join(MODEL_COLUMNS))
        for r in rows:
            print(f"molediff, {r['steps']} steps, η {r['eta']:g}, noise {r.get('noise_scale', 1.0):g} | "
                  + " | ".join(f"{100 * r[c]:.1f}" if r.get(c) is not None else "-" for c in MODEL_COLUMNS))
        print("geometry, lookup bonds:")
    print("row | " + " | ".join(COLUMNS + DISTRIBUTIONS))
    for name, ref in (("QM9 data (published)", PUBLISHED_QM9_DATA_PERCENT), ("EDM (published, 1000 steps)", PUBLISHED_EDM_PERCENT)):
        print(name + " | " + " | ".join(f"{ref[c]:.1f}" if c in ref else "-" for c in COLUMNS + DISTRIBUTIONS))
    for r in rows:
        print(f"molediff, {r['steps']} steps, η {r['eta']:g}, noise {r.get('noise_scale', 1.0):g} | "
              + " | ".join(f"{100 * r[c]:.1f}" if r[c] is not None else "-" for c in COLUMNS)
              + " | " + " | ".join(f"{r[d]:.3f}" if r.get(d) is not None else "-" for d in DISTRIBUTIONS))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
