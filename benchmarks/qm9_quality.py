"""Quality of the bundled QM9 model (or ``--checkpoint``): every evaluate metric at several step counts,
samplers, timestep spacings and noise scales.

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

The sampler axis (issue 30): every combination of ``--sampler``, ``--steps``, ``--spacing``,
``--noise-scale`` (and ``--eta`` for DDIM) is one row; lists are space- or comma-separated::

    python benchmarks/qm9_quality.py --threads 1 --sampler ddim dpm++2m dpm++2m-sde --steps 12 20 25 50 \\
        --noise-scale 1 0.8 --spacing trailing --n 1000 --out benchmarks/results/qm9_samplers.json

The deterministic DPM-Solver++ samplers (``dpm++2m``, ``dpm++3m``) use neither η nor the noise scale
(the starting noise is never scaled), so they run once per step count and spacing and their rows
record ``noise_scale`` and ``eta`` as null; ``dpm++2m-sde`` uses the noise scale but not η. All T
steps with ``ddim`` is ancestral DDPM (η = 1, spacing irrelevant). Each row also records the network
evaluations per molecule (counted), sampling and scoring seconds. Rows of an earlier call for the
same model are kept unless the same combination is run again, so a long sweep can be split.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from molediff.data.reference import model_bond_types, reference_statistics, training_smiles

from molediff.atomic import atomic_write
from molediff.data.molecules import MoleculeSet
from molediff.metrics import PUBLISHED_EDM_PERCENT, PUBLISHED_QM9_DATA_PERCENT, evaluate_molecules, model_bond_metrics
from molediff.config import DEFAULT_ETA, DEFAULT_NOISE_SCALE, RESTART_FROM
from molediff.sampling import DEFAULT_MODEL, SampleStats, load_pretrained

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ("atom_stability", "molecule_stability", "validity", "strict_validity", "uniqueness", "valid_x_unique", "novelty", "connected")
#: distances to the QM9 reference (total variation, lower is better): is a lower temperature distorting the data?
DISTRIBUTIONS = ("atom_type_tv", "ring_size_tv")
#: the model-bond view, for models that write bonds
MODEL_COLUMNS = ("model_atom_stability", "model_molecule_stability", "model_connected_validity", "model_uniqueness",
                 "model_valid_x_unique", "model_novelty")
#: the written bonds' types (C=O, C-N, ...) against QM9's own (total variation): does a sampler shift the chemistry?
MODEL_DISTRIBUTIONS = ("model_bond_type_tv",)


#: the samplers of :func:`molediff.diffusion.sample` that ``MoleculeGenerator.sample_arrays`` offers
from molediff.diffusion.sampler_table import SAMPLERS, SPACINGS  # noqa: E402 - the one list of each
#: deterministic solvers: η and the noise scale do not enter them
DETERMINISTIC = ("dpm++2m", "dpm++3m")


def score(gen, n: int, steps: int, eta: float | None, noise_scale: float | None, seed: int = 0, sampler: str = "ddim",
          spacing: str = "trailing", restarts: int | None = None, restart_from: str | None = None) -> dict:
    """Sample ``n`` molecules with ``gen`` (a :class:`molediff.sampling.MoleculeGenerator`) and score both
    views: the geometry under lookup bonds (:data:`COLUMNS`, :data:`DISTRIBUTIONS`) and, for models that
    write bonds, the model-bond view (:data:`MODEL_COLUMNS`). All T steps with "ddim": ancestral DDPM.
    ``eta`` / ``noise_scale`` None: not used by ``sampler`` (sampled with the library defaults, which
    it ignores). ``network_evaluations``: network evaluations per molecule, as the sampler counts them
    (:class:`~molediff.sampling.SampleStats`)."""
    T = gen.config.diffusion.timesteps
    stats = SampleStats()
    kw = {k: v for k, v in (("eta", eta), ("noise_scale", noise_scale), ("restarts", restarts), ("restart_from", restart_from))
          if v is not None}
    t0 = time.time()
    mols = list(gen.sample_arrays(n, steps=None if steps == T and sampler == "ddim" else steps, seed=seed,
                                  sampler=sampler, spacing=spacing, stats=stats, **kw))
    sample_s = time.time() - t0
    t1 = time.time()
    mset = MoleculeSet.from_records(mols)
    scores = evaluate_molecules(mset, bonds="lookup", reference=reference_statistics("lookup", progress=False), novelty=training_smiles("lookup", progress=False), progress=False)
    row = {"sampler": sampler, "spacing": None if steps == T and sampler == "ddim" else spacing, "steps": steps,
           "eta": eta, "noise_scale": noise_scale, "n": n, "seed": seed, "sample_seconds": round(sample_s, 1),
           **({"restarts": restarts} if restarts else {}),  # rounds of local restarts (molediff.restarts)
           **({"restart_from": restart_from} if restarts and restart_from else {}),
           "network_evaluations": round(stats.evaluations_per_molecule, 2),
           "diverged": stats.diverged,  # discarded (non-finite or collapsed) and replaced by fresh molecules
           **{c: scores.get(c) for c in COLUMNS}, **{d: scores["distributions"].get(d) for d in DISTRIBUTIONS}}
    if gen.writes_bonds:
        row.update({c: v for c, v in model_bond_metrics(mset, novelty=training_smiles("model", progress=False), progress=False,
                                                      bond_types=model_bond_types(progress=False))[0].items()
                    if c in MODEL_COLUMNS + MODEL_DISTRIBUTIONS})
    row["score_seconds"] = round(time.time() - t1, 1)
    return row


def _items(values: list[str] | None, kind=str) -> list:
    """A list option's values: space- and/or comma-separated (``--steps 50 100`` or ``--steps 50,100``)."""
    return [kind(v) for item in values or [] for v in str(item).split(",") if v.strip()]


def combinations(samplers: list[str], steps: list[int], spacings: list[str], etas: list[float], scales: list[float],
                 T: int) -> list[tuple]:
    """The rows to run, as (sampler, steps, spacing, eta, noise_scale); the arguments a sampler ignores
    are None and that combination is run once."""
    out = []
    for sampler in samplers:
        for s in steps:
            if sampler == "ddim" and s == T:  # ancestral DDPM (η = 1 by definition; no strided grid)
                out += [(sampler, s, "trailing", 1.0, scale) for scale in scales]
                continue
            for spacing in spacings:
                if sampler in DETERMINISTIC:
                    out.append((sampler, s, spacing, None, None))
                elif sampler == "ddim":  # at η = 0 DDIM injects no noise: one row, noise scale unused
                    out += sorted({(sampler, s, spacing, eta, scale if eta > 0 else None) for eta in etas for scale in scales},
                                  key=lambda r: (r[3], -(r[4] or 0.0)))
                else:  # the SDE solver: the noise scale counts, η does not
                    out += [(sampler, s, spacing, None, scale) for scale in scales]
    return out


def row_key(r: dict) -> tuple:
    """One row per combination (rows written before the sampler axis are DDIM, trailing)."""
    return (r.get("sampler", "ddim"), r.get("spacing", "trailing") or "trailing", r["steps"], r.get("eta"),
            r.get("noise_scale", 1.0), r.get("seed", 0), r.get("restarts", 0), r.get("restart_from", "region"))


def row_label(r: dict, T: int) -> str:
    sampler = r.get("sampler", "ddim")
    if sampler == "ddim" and r["steps"] == T:
        return f"ancestral DDPM, {r['steps']} steps, noise {r.get('noise_scale', 1.0):g}"
    eta = f", η {r['eta']:g}" if r.get("eta") is not None else ""
    noise = f"noise {r['noise_scale']:g}" if r.get("noise_scale") is not None else "noise unused"
    restarts = (f", restarts {r['restarts']}" + (f" from {r['restart_from']}" if r.get("restart_from") else "")
                if r.get("restarts") else "")
    return f"{sampler} ({r.get('spacing') or 'trailing'}), {r['steps']} steps{eta}, {noise}{restarts}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="molecules per row (default 1000)")
    ap.add_argument("--sampler", nargs="+", default=["ddim"],
                    help=f"samplers, space- or comma-separated: {', '.join(SAMPLERS)} (default ddim)")
    ap.add_argument("--steps", nargs="+", default=["50,100,250,1000"], help="step counts (default 50,100,250,1000)")
    ap.add_argument("--spacing", nargs="+", default=["trailing"], help=f"timestep spacings: {', '.join(SPACINGS)} (default trailing)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eta", nargs="+", default=None,
                    help=f"DDIM η values for the strided step counts (default {DEFAULT_ETA:g}, the sampler's)")
    ap.add_argument("--noise-scale", "--noise-scales", dest="noise_scales", nargs="+", default=[f"1,{DEFAULT_NOISE_SCALE:g}"],
                    help=f"noise scales (default 1, the published protocol, and the sampler's default {DEFAULT_NOISE_SCALE:g})")
    ap.add_argument("--checkpoint", default=None, help="a model file (default: the bundled model named by --model)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name (default {DEFAULT_MODEL}; qm9, qm9-joint, qm9-cond)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network (faster; same molecules up to float rounding)")
    ap.add_argument("--restarts", type=int, default=None,
                    help="rounds of local restarts (models that write bonds; default: the model's own, none for the QM9 models)")
    ap.add_argument("--restart-from", default=None, choices=RESTART_FROM,
                    help="what a restart draws again (molediff sample --restart-from; default: the model's own)")
    ap.add_argument("--out", default=str(RESULTS / "qm9_quality.json"))
    args = ap.parse_args()
    samplers, spacings = _items(args.sampler), _items(args.spacing)
    for name, values, allowed in (("--sampler", samplers, SAMPLERS), ("--spacing", spacings, SPACINGS)):
        if bad := [v for v in values if v not in allowed]:
            ap.error(f"{name}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    torch.set_num_threads(args.threads)
    gen = load_pretrained(args.checkpoint, model=args.model)
    if args.compile:
        gen.compile()
    T = gen.config.diffusion.timesteps
    etas = _items(args.eta, float) or [DEFAULT_ETA]
    scales = sorted(set(_items(args.noise_scales, float)), reverse=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "model": gen.source, "threads": args.threads,
            "model_meta": {k: v for k, v in gen.meta.items() if k not in ("size_histogram", "learning_curve")}}
    out = Path(args.out)
    # rows of other combinations for the same model (an earlier call) are kept, so a long sweep can be
    # run in parts (a row run again replaces its earlier one); a different model starts a fresh file
    previous = []
    if out.exists():
        old = json.loads(out.read_text())
        if old.get("meta", {}).get("model_meta") == meta["model_meta"]:
            previous = old["rows"]
    rows = []

    def save() -> list[dict]:  # after every row: a long sweep keeps what it has measured
        done = {row_key(r) for r in rows}
        kept = sorted([r for r in previous if row_key(r) not in done] + rows,
                      key=lambda r: (SAMPLERS.index(r.get("sampler", "ddim")), r.get("spacing") or "", r["steps"],
                                     r.get("eta") or 0.0, -(r.get("noise_scale") or 0.0)))
        ns = {r["n"] for r in kept}
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, json.dumps({"meta": meta, "n": ns.pop() if len(ns) == 1 else None, "rows": kept}, indent=2))
        return kept

    for sampler, steps, spacing, eta, scale in combinations(samplers, _items(args.steps, int), spacings, etas, scales, T):
        row = score(gen, args.n, steps, eta, scale, args.seed, sampler=sampler, spacing=spacing, restarts=args.restarts,
                    restart_from=args.restart_from)
        row["compiled"] = args.compile
        rows.append(row)
        print(f"{row_label(row, T)}: "
              + ", ".join(f"{c} {100 * row[c]:.1f}" for c in MODEL_COLUMNS + COLUMNS if row.get(c) is not None)
              + ", " + ", ".join(f"{d} {row[d]:.3f}" for d in DISTRIBUTIONS + MODEL_DISTRIBUTIONS if row.get(d) is not None)
              + f", {row['network_evaluations']} network evaluations, {row['sample_seconds']} s", flush=True)
        save()
    rows = save()
    print()
    if gen.writes_bonds:
        print("model bonds: row | " + " | ".join(MODEL_COLUMNS + MODEL_DISTRIBUTIONS))
        for r in rows:
            print(f"molediff, {row_label(r, T)} | "
                  + " | ".join(f"{100 * r[c]:.1f}" if r.get(c) is not None else "-" for c in MODEL_COLUMNS)
                  + " | " + " | ".join(f"{r[d]:.3f}" if r.get(d) is not None else "-" for d in MODEL_DISTRIBUTIONS))
        print("geometry, lookup bonds:")
    print("row | " + " | ".join(COLUMNS + DISTRIBUTIONS) + " | network evaluations | sampling s | n")
    for name, ref in (("QM9 data (published)", PUBLISHED_QM9_DATA_PERCENT), ("EDM (published, 1000 steps)", PUBLISHED_EDM_PERCENT)):
        print(name + " | " + " | ".join(f"{ref[c]:.1f}" if c in ref else "-" for c in COLUMNS + DISTRIBUTIONS))
    for r in rows:
        print(f"molediff, {row_label(r, T)} | "
              + " | ".join(f"{100 * r[c]:.1f}" if r[c] is not None else "-" for c in COLUMNS)
              + " | " + " | ".join(f"{r[d]:.3f}" if r.get(d) is not None else "-" for d in DISTRIBUTIONS)
              + f" | {r.get('network_evaluations') or '-'} | {r['sample_seconds']} | {r['n']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
