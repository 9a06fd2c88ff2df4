"""Recipes compared at equal CPU time: measure each recipe's training rate, then score its snapshots.

Training results depend on the optimiser steps taken, not on the machine that took them, so a budget
of CPU-hours is a number of steps: ``rate`` measures a recipe's steps per CPU-hour on this machine (one
thread, compiled, the way long runs train), and ``score`` samples and scores the EMA snapshot a run
saved at ``hours × rate`` steps. The run itself may have trained anywhere (a GPU lent for a session,
or this machine); its ``--eval-every-steps`` must put a snapshot on every budget asked for.

    # steps per CPU-hour of the atoms-only and the joint recipe (6 CPU-minutes each, side by side)
    python benchmarks/learning_curves.py rate --minutes 6 --name atoms
    python benchmarks/learning_curves.py rate --minutes 6 --name joint -- --diffusion-charges --diffusion-bonds --diffusion-self-condition
    # both views at 0.5, 1, 1.5 and 2 CPU-hours
    python benchmarks/learning_curves.py score --hours 0.5,1,1.5,2 --compile \\
        --run atoms=RUNS/atoms:17500 --run joint=RUNS/joint:11900

``score`` prints one row per run and budget: the model-bond view (joint models) and the geometry
under the lookup rule, 1,000 molecules, 100 DDIM steps, noise scale 1 (the published protocol) unless
asked otherwise, with the run's validation losses at that step; rows go to
``benchmarks/results/learning_curves.json`` (rows of other runs or budgets already there are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from molediff.atomic import atomic_write
from molediff.runstate import snapshot_path
from molediff.sampling import load_pretrained
from qm9_quality import COLUMNS, MODEL_COLUMNS, score

RESULTS = Path(__file__).resolve().parent / "results"
#: steps before this one are compile warm-up and left out of the rate
WARM_STEP = 300


def rate_from_log(run: Path) -> tuple[int, int, float]:
    """(first step, last step, steps per CPU-hour) of a run's log, past the compile warm-up; the run
    must have trained with ``--clock cpu`` on one thread."""
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["event"] == "train" and r["step"] >= WARM_STEP]
    if len(train) < 2:
        raise SystemExit(f"{run}: too few logged steps past the warm-up (step {WARM_STEP}); measure longer")
    a, b = train[0], train[-1]
    return a["step"], b["step"], (b["step"] - a["step"]) / (b["minutes"] - a["minutes"]) * 60


def measure_rate(name: str, minutes: float, extra: list[str], out: Path, from_run: Path | None = None) -> dict:
    """Train a fresh run for ``minutes`` CPU-minutes (one thread, compiled, ``--clock cpu``) and read its
    steps per CPU-hour from the log; ``from_run``: read a run trained that way instead."""
    with tempfile.TemporaryDirectory() as tmp:
        run = from_run or Path(tmp) / name
        if from_run is None:
            cmd = [sys.executable, "-m", "molediff", "train", "--out", str(run), "--threads", "1", "--compile", "--clock", "cpu",
                   "--max-minutes", str(minutes), "--eval-every-steps", "0", "--eval-samples", "0", "--no-progress", *extra]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
        first, last, rate = rate_from_log(run)
    rec = {"name": name, "args": extra, "from_run": str(from_run) if from_run else None, "steps": [first, last],
           "date": time.strftime("%Y-%m-%d"), "steps_per_cpu_hour": round(rate)}
    print(f"{name}: {rec['steps_per_cpu_hour']:,} steps per CPU-hour (steps {first}-{last}, one thread, compiled)")
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("rates", {})[name] = rec
    atomic_write(out, json.dumps(results, indent=2))
    return rec


def validation_at(run: Path, step: int) -> dict:
    """The run's logged validation losses at ``step`` (empty when it was not logged)."""
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "eval" and rec.get("step") == step:
            return {k: v for k, v in rec.items() if k.startswith("val_") and k != "val_loss_raw"}
    return {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="phase", required=True)
    r = sub.add_parser("rate", help="measure a recipe's training steps per CPU-hour")
    r.add_argument("--name", required=True)
    r.add_argument("--minutes", type=float, default=6.0, help="CPU-minutes of training (default 6)")
    r.add_argument("--from-run", default=None, help="read the rate off this run's log (trained with --clock cpu, one "
                   "thread, compiled) instead of training")
    r.add_argument("train_args", nargs="*", help="molediff train options of the recipe (after --)")
    s = sub.add_parser("score", help="score runs' snapshots at equal CPU budgets")
    s.add_argument("--run", action="append", required=True, metavar="NAME=DIR:STEPS_PER_CPU_HOUR")
    s.add_argument("--hours", default="0.5,1,2")
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--steps", type=int, default=100, help="DDIM steps (default 100)")
    s.add_argument("--noise-scales", default="1")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--compile", action="store_true")
    for p in (r, s):
        p.add_argument("--out", default=str(RESULTS / "learning_curves.json"))
    args = ap.parse_args()
    out = Path(args.out)
    if args.phase == "rate":
        measure_rate(args.name, args.minutes, args.train_args, out, Path(args.from_run) if args.from_run else None)
        return 0

    torch.set_num_threads(args.threads)
    runs = []
    for spec in args.run:
        try:
            name, rest = spec.split("=", 1)
            folder, rate = rest.rsplit(":", 1)
            runs.append((name, Path(folder), int(rate)))
        except ValueError:
            raise SystemExit(f"--run {spec!r}: expected NAME=DIR:STEPS_PER_CPU_HOUR") from None
    hours = [float(h) for h in args.hours.split(",")]
    scales = [float(x) for x in args.noise_scales.split(",")]
    missing = [str(snapshot_path(d, round(h * rate))) for _, d, rate in runs for h in hours
               if not snapshot_path(d, round(h * rate)).exists()]
    if missing:
        raise SystemExit("no snapshot at the budget's step (train with --eval-every-steps dividing it):\n  " + "\n  ".join(missing))
    results = json.loads(out.read_text()) if out.exists() else {}
    rows = results.get("rows", [])
    for name, folder, rate in runs:
        for h in hours:
            step = round(h * rate)
            gen = load_pretrained(str(snapshot_path(folder, step)))
            if args.compile:
                gen.compile()
            for scale in scales:
                row = {"run": name, "cpu_hours": h, "train_steps": step, "steps_per_cpu_hour": rate,
                       **score(gen, args.n, args.steps, 1.0, scale, args.seed), **validation_at(folder, step)}
                key = (name, h, args.steps, scale, args.n)
                rows = [x for x in rows if (x["run"], x["cpu_hours"], x["steps"], x["noise_scale"], x["n"]) != key] + [row]
                print(f"{name} at {h:g} CPU-h ({step:,} steps), noise {scale:g}: "
                      + ", ".join(f"{c} {100 * row[c]:.1f}" for c in MODEL_COLUMNS + COLUMNS if row.get(c) is not None), flush=True)
                results["rows"] = rows
                atomic_write(out, json.dumps(results, indent=2))
    cols = ("model_atom_stability", "model_molecule_stability", "model_connected_validity",
            "atom_stability", "molecule_stability", "validity", "valid_x_unique", "novelty")
    print("\nrun | CPU-h | steps | noise | " + " | ".join(cols) + " | val ε-MSE")
    for x in sorted(rows, key=lambda x: (x["run"], x["cpu_hours"], -x["noise_scale"])):
        print(f"{x['run']} | {x['cpu_hours']:g} | {x['train_steps']:,} | {x['noise_scale']:g} | "
              + " | ".join(f"{100 * x[c]:.1f}" if x.get(c) is not None else "-" for c in cols)
              + (f" | {x['val_mse']:.4f}" if "val_mse" in x else " | -"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
