"""Quality per CPU-hour: train recipe variants for the same budget, then sample and score them.

Every variant is a set of overrides of the one :class:`molediff.config.TrainConfig` used by
``molediff train`` (no forked training code). Each is trained for ``--minutes`` of *CPU* time per
thread (``clock="cpu"``, so contention from other processes does not shrink a variant's budget),
same seed and data; molecules seen are reported too, since variants differ in cost. Then ``--samples``
molecules are drawn with the EMA weights at each of ``--steps`` DDIM steps and scored with molediff's
own metrics (lookup bonds) plus the validation loss.

Phases are resumable: a variant whose run already reached the budget is not retrained, and scores are
cached per (variant, steps, samples). Results: ``benchmarks/results/recipe_study.json`` and a table;
``--plot`` draws the training-loss curves to ``benchmarks/results/recipe_study.png`` (and keeps them
in the JSON). ``val_eps_mse`` is the one loss comparable across recipes: plain ε-MSE at uniform
timesteps on the same validation molecules, noise and t; ``val_loss`` is each recipe's own weighted
loss.

    python benchmarks/recipe_study.py --minutes 10 --workers 2          # train + score all variants
    python benchmarks/recipe_study.py --only baseline,precond --phase score
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: the naive baseline, pinned here so the study keeps its meaning when the defaults of
#: `molediff train` move to the winning recipe; every variant starts from it
BASELINE: dict[str, object] = {"diffusion.parametrization": "eps"}

#: name -> overrides of BASELINE ("model.x" / "diffusion.x" for nested fields)
VARIANTS: dict[str, dict[str, object]] = {
    # 1. EDM's recipe scaled down: ε-prediction, uniform weighting and time, d² messages, 4×64
    "baseline": {},
    # 2. output parametrisation
    "x0": {"diffusion.parametrization": "x0"},
    # 3. width and depth at equal CPU time
    "w128_l6": {"model.hidden": 128, "model.layers": 6},
    "w128_l9": {"model.hidden": 128, "model.layers": 9},
    # 4. atom-type feature scale, learning rate, batch size
    "feat1": {"diffusion.feature_scale": 1.0},
    "lr1e-3": {"lr": 1e-3},
    "bs128": {"batch_size": 128},
    # round 2: does the learning-rate gain found on the ε baseline carry over to the x0 winner?
    "x0_lr1e-3": {"diffusion.parametrization": "x0", "lr": 1e-3},
}
#: variants of the study whose code left the core after they lost (preconditioning, Karras and
#: min-SNR weighting, log-normal time sampling, radial-basis distances): their rows stay in the results
#: JSON and in benchmarks/README.md; they can no longer be rerun
RETIRED = ("precond", "precond_karras", "min_snr", "lognormal_bonds", "x0_bonds_mix", "rbf")


def make_config(name: str, minutes: float, threads: int, seed: int):
    from molediff.config import TrainConfig

    cfg = TrainConfig(seed=seed, max_minutes=minutes, clock="cpu", threads=threads,
                      eval_every_steps=0, eval_samples=0, checkpoint_minutes=2.0, valid_molecules=2000)
    for key, value in {**BASELINE, **VARIANTS[name]}.items():
        target = cfg
        *path, leaf = key.split(".")
        for p in path:
            target = getattr(target, p)
        if not hasattr(target, leaf):
            raise KeyError(f"variant {name}: unknown config field {key}")
        setattr(target, leaf, value)
    return cfg


def run_dir(args, name: str) -> Path:
    return Path(args.runs) / name


def train_one(args, name: str) -> None:
    """Train (or finish training) one variant in this process."""
    from molediff.checkpoint import safe_torch_load
    from molediff.training import CHECKPOINT, train

    cfg = make_config(name, args.minutes, args.threads, args.seed)
    d = run_dir(args, name)
    ckpt = d / CHECKPOINT
    resume = ckpt.exists()
    if resume and safe_torch_load(ckpt)["elapsed"] >= args.minutes * 60:
        return
    train(cfg, d, resume=resume, progress=False)


def score_one(args, name: str, steps: int) -> dict:
    """Sample with the variant's EMA weights and score with molediff's metrics (cached)."""
    import torch

    from molediff.checkpoint import safe_torch_load
    from molediff.metrics import sample_metrics
    from molediff.molecular import MolecularDiffusion, sizes_from_histogram
    from molediff.training import CHECKPOINT, LOG

    d = run_dir(args, name)
    cache = d / f"score_steps{steps}_n{args.samples}.json"
    state = safe_torch_load(d / CHECKPOINT)
    from molediff.config import TrainConfig

    cfg = TrainConfig.from_dict(state["config"])
    model = MolecularDiffusion(cfg.model, cfg.diffusion)
    model.load_state_dict(state["ema"])
    model.eval()
    torch.set_num_threads(args.threads)
    if cache.exists():
        rec = json.loads(cache.read_text())
        if rec.get("val_eps_mse") is None:  # scored before the study recorded it
            rec["val_eps_mse"] = plain_validation_loss(cfg, model)
            cache.write_text(json.dumps(rec, indent=2))
        return rec
    g = torch.Generator().manual_seed(args.seed)
    sizes = sizes_from_histogram(state["histogram"], args.samples, generator=g)
    t0 = time.time()
    pos, types, ptr = [], [], [0]
    for start in range(0, args.samples, 250):
        p, t, pt = model.sample(sizes[start : start + 250], num_steps=steps, generator=g, eta=0.0)  # the study's protocol: DDIM, deterministic
        pos.append(p), types.append(t), ptr.extend((pt[1:] + ptr[-1]).tolist())
    metrics = sample_metrics(torch.cat(types), torch.cat(pos), torch.tensor(ptr))
    evals = [json.loads(line) for line in (d / LOG).read_text().splitlines() if '"eval"' in line]
    plain = evals[-1].get("val_eps_mse") if evals else None
    if plain is None:  # runs trained before the log carried it: same validation molecules, noise and t
        plain = plain_validation_loss(cfg, model)
    rec = {"variant": name, "steps": steps, "samples": args.samples, "overrides": VARIANTS[name],
           "train_minutes_cpu": round(state["elapsed"] / 60, 2), "train_steps": state["step"],
           "molecules_seen": state["molecules_seen"], "val_loss": evals[-1]["val_loss"] if evals else None,
           "val_eps_mse": plain,
           "sample_seconds": round(time.time() - t0, 1), **metrics}
    cache.write_text(json.dumps(rec, indent=2))
    return rec


def plain_validation_loss(cfg, model) -> float:
    """Unweighted ε-MSE at uniform timesteps on the run's validation molecules (the trainer's choice)."""
    import numpy as np

    from molediff.training import load_training_data, validation_loss

    _, valid = load_training_data(cfg, progress=False)
    if cfg.valid_molecules and len(valid) > cfg.valid_molecules:
        valid = valid.subset(np.arange(cfg.valid_molecules))
    return validation_loss(model, valid, plain=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="CPU minutes per thread for each variant (default 10)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per variant (default 1)")
    ap.add_argument("--workers", type=int, default=1, help="variants trained at once, each in its own process (default 1)")
    ap.add_argument("--samples", type=int, default=500, help="molecules sampled per variant and step count (default 500)")
    ap.add_argument("--steps", default="50,100", help="comma-separated DDIM step counts to score (default 50,100)")
    ap.add_argument("--only", help="comma-separated variant names (default: all)")
    ap.add_argument("--phase", choices=("all", "train", "score", "table"), default="all",
                    help="'table' prints the stored results as a markdown table, nothing else")
    ap.add_argument("--runs", default=os.environ.get("MOLEDIFF_STUDY_RUNS", str(ROOT / "runs" / "study")),
                    help="where variant runs live (default runs/study, or $MOLEDIFF_STUDY_RUNS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", action="store_true", help="also plot the training-loss curves")
    ap.add_argument("--_train-one", dest="train_one", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.train_one:
        train_one(args, args.train_one)
        return 0
    if args.phase == "table":
        print(markdown_table(json.loads((RESULTS / "recipe_study.json").read_text())["rows"]))
        return 0
    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")

    if args.phase in ("all", "train"):
        pending = list(names)
        running: list[tuple[str, subprocess.Popen]] = []
        while pending or running:
            while pending and len(running) < args.workers:
                name = pending.pop(0)
                cmd = [sys.executable, __file__, "--_train-one", name, "--minutes", str(args.minutes),
                       "--threads", str(args.threads), "--runs", args.runs, "--seed", str(args.seed)]
                print(f"[study] training {name} ({args.minutes} CPU-min)", flush=True)
                running.append((name, subprocess.Popen(cmd)))
            time.sleep(5)
            for item in list(running):
                if item[1].poll() is not None:
                    running.remove(item)
                    print(f"[study] {item[0]} finished with exit code {item[1].returncode}", flush=True)

    if args.phase in ("all", "score"):
        rows = []
        for name in names:
            if not (run_dir(args, name) / "checkpoint.pt").exists():
                print(f"[study] {name}: not trained, skipped")
                continue
            for steps in [int(s) for s in args.steps.split(",")]:
                rows.append(score_one(args, name, steps))
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / "recipe_study.json"
        # rows of variants not scored by this call (other --only sets, earlier machines) are kept
        scored = {(r["variant"], r["steps"]) for r in rows}
        previous = json.loads(out.read_text()) if out.exists() else {}
        kept = [r for r in previous.get("rows", []) if (r["variant"], r["steps"]) not in scored]
        rows = sorted(kept + rows, key=lambda r: (list(VARIANTS).index(r["variant"]) if r["variant"] in VARIANTS else 99, r["steps"]))
        out.write_text(json.dumps({"minutes_cpu": args.minutes, "threads": args.threads, "rows": rows,
                                   "curves": previous.get("curves", {})}, indent=2))
        cols = ("variant", "steps", "train_steps", "molecules_seen", "val_loss", "val_eps_mse", "atom_stability", "molecule_stability", "validity", "strict_validity", "valid_x_unique")
        print(" | ".join(cols))
        for r in rows:
            print(" | ".join(_fmt(c, r.get(c)) for c in cols))
        print(f"wrote {out}")
        if args.plot:
            plot_curves(args, names)
    return 0


PERCENT = ("atom_stability", "molecule_stability", "validity", "strict_validity", "valid_x_unique", "connected")


def _fmt(key: str, v) -> str:
    if v is None:
        return "-"
    if key in PERCENT:
        return f"{100 * v:.1f}"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def markdown_table(rows: list[dict]) -> str:
    """The study's rows as a markdown table (percentages; ε-MSE is the cross-recipe validation loss)."""
    head = ("variant", "steps", "train steps", "molecules seen", "val ε-MSE", "atom stab", "mol stab", "valid", "V×U", "connected")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], str(r["steps"]), f"{r['train_steps']:,}", f"{r['molecules_seen']:,}",
                 *(_fmt(k, r.get(k)) for k in ("val_eps_mse", "atom_stability", "molecule_stability", "validity", "valid_x_unique", "connected"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(args, names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # curves live in the results JSON too, so the plot survives the run folders (other machines)
    out = RESULTS / "recipe_study.json"
    results = json.loads(out.read_text()) if out.exists() else {"rows": []}
    curves = results.get("curves", {})
    for name in names:
        log = run_dir(args, name) / "log.jsonl"
        if log.exists():
            recs = [json.loads(x) for x in log.read_text().splitlines()]
            curves[name] = [[r["minutes"], round(r["loss"], 5)] for r in recs if r["event"] == "train"]
    results["curves"] = curves
    out.write_text(json.dumps(results, indent=2))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in VARIANTS:
        if name in curves:
            ax.plot(*zip(*curves[name]), label=name, lw=1)
    ax.set_xlabel("CPU minutes (per thread)")
    ax.set_ylabel("training loss, each recipe's own weighting\n(running mean of 50 steps)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / "recipe_study.png", dpi=120)
    print(f"wrote {RESULTS / 'recipe_study.png'}")


if __name__ == "__main__":
    raise SystemExit(main())
