"""Drug-like property targets: does a conditional drug-like model give the properties it is asked for?

For each property of the model (``molediff.conditioning.DRUGLIKE_PROPERTIES``: QED, logP, MolWt, TPSA,
H-bond donors/acceptors, rotatable bonds, aromatic rings) the benchmark asks for

* two **values**, the 15th and 85th percentiles of the model's training molecules (its
  ``condition_table``; rounded for the counts), and reports the MAE between the asked value and the
  property of each written molecule, measured with RDKit on the model's own bonds (molecules that
  sanitize as one fragment; their share is printed beside it);
* two **ranges**, the 5th-35th and 65th-95th percentiles (for the counts: exactly the low / high value,
  ``k-0.5:k+0.5`` inside the training range), and reports the share of written molecules whose property lies inside, of the
  valid ones and of all molecules;

plus one **three-property request** (logP high, MolWt low, TPSA low: each a range as above) scored by
the share inside all three ranges. Beside every figure stands the naive bound: the same model sampled
without conditions (``guidance`` 0 is the same thing), scored against the same targets and ranges -- a
generator that ignores the request. The issue's bar: MAE at least 50% below the naive bound, at least
80% inside an asked range, stability and connected validity within 2 points of the unconditional row.

Every row also gives honest molecule stability (model bonds, Kekule valences with formal charges, no
implicit hydrogens) and the ring figures of :mod:`molediff.metrics.rings`. Strain (MMFF) is not
measured here: ``benchmarks/druglike_quality.py`` on a written file does that.

    python benchmarks/druglike_conditioning.py --checkpoint RUN/ema_model.pt --n 200 --guidance 1,3
    python benchmarks/druglike_conditioning.py --checkpoint M.pt --properties logp,mw --n 1000

``--steer S --property-model FILE`` steers every conditional row (:mod:`molediff.steering`, ``molediff
property-model``) as ``molediff sample --steer`` does; a model file that carries its own property model
(``druglike-cond``) steers by its own default unless ``--steer`` says otherwise. Requests run with
range restarts wherever restarts run (a value checked as its band, ``molediff.conditioning.target_band``;
``--no-restart-ranges``: without them), as ``molediff sample``; each row records the rules the library
resolved for it.

Rows sample as ``molediff sample`` does with the same file (its local restarts, ``--precision auto``);
a training run's file carries no restarts, so give the bundled model's (``--restarts 6
--restart-rings``) to compare with it, and ``--compile`` for 1,000-molecule rows. To use both cores,
split the properties over two processes that share the unconditional row through ``--base FILE``
(the first to need it samples and writes it; the other waits for nothing and samples its own if it
finds none yet, so start one process first)::

    python benchmarks/druglike_conditioning.py --checkpoint M.pt --properties qed,logp,mw,tpsa --base B.json --json A.json ...
    python benchmarks/druglike_conditioning.py --checkpoint M.pt --properties hbd,hba,rotb,arom --no-triple --base B.json --json C.json ...

(each with its own ``--json``: two processes merging into one file at the same moment could lose rows).

Writes ``benchmarks/results/druglike_conditioning.json`` (``--json``; rows merge by label, guidance, steering,
restarts, range restarts and request so partial runs add up).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from molediff.atomic import atomic_write
from molediff.conditioning import BY_NAME, Range, target_band
from molediff.config import PRECISIONS

ROOT = Path(__file__).resolve().parents[1]
#: properties that are counts: their targets are integers and a "range" is one integer (k-0.5:k+0.5)
COUNTS = ("hbd", "hba", "rotb", "arom")
#: the three-property request: (property, "low" | "high") ranges
TRIPLE = (("logp", "high"), ("mw", "low"), ("tpsa", "low"))


def targets_of(values: np.ndarray, name: str) -> dict:
    """The asked values and ranges of one property from its training values (module docstring)."""
    q = lambda p: float(np.quantile(values, p))  # noqa: E731
    if name in COUNTS:
        lo, hi = round(q(0.15)), round(q(0.85))
        if lo == hi:
            hi = lo + 1
        one = lambda k: (max(k - 0.5, float(values.min())), min(k + 0.5, float(values.max())))  # noqa: E731
        return {"values": [float(lo), float(hi)], "ranges": {"low": one(lo), "high": one(hi)}}
    return {"values": [round(q(0.15), 3), round(q(0.85), 3)],
            "ranges": {"low": (round(q(0.05), 3), round(q(0.35), 3)), "high": (round(q(0.65), 3), round(q(0.95), 3))}}


def score_records(records: list, names: list[str]) -> dict:
    """Per-molecule properties (NaN where a molecule is not a valid single fragment), honest stability
    and the ring figures of written records ``(symbols, positions, info)``."""
    from rdkit import Chem

    from molediff.chem.analysis import CONDITION_DESCRIPTORS, descriptor_values
    from molediff.chem.model_bonds import model_bond_stability, written_molecule
    from molediff.chem.rdkit_mol import sanitize
    from molediff.elements import SYMBOL_TO_INDEX
    from molediff.metrics.rings import ring_statistics

    props = np.full((len(records), len(names)), np.nan)
    stable, mols = [], []
    for i, (symbols, _, info) in enumerate(records):
        src, dst, order = info["bonds"]
        types = np.array([SYMBOL_TO_INDEX[s] for s in symbols])
        _, mol_stable = model_bond_stability(types, info["charges"], np.array([0, len(types)]), src, dst, order)
        stable.append(bool(mol_stable[0]))
        mol = sanitize(written_molecule(list(symbols), src, dst, order, info["charges"]))
        if mol is not None and len(Chem.GetMolFrags(mol)) == 1:
            values = descriptor_values(mol, {c: CONDITION_DESCRIPTORS[c] for c in names})
            props[i] = [values[c] for c in names]
            mols.append(mol)
        else:
            mols.append(None)
    rings = ring_statistics([m for m in mols if m is not None], generated=len(records))
    return {"props": props, "stability": float(np.mean(stable)), "valid": float(np.mean([m is not None for m in mols])),
            "odd_ring": rings["odd_ring"], "without_aromatic_ring": rings["without_aromatic_ring"],
            "small_ring": rings["small_ring"], "yield": rings["clean_of_generated"]}


def sample(gen, n: int, args: argparse.Namespace, conditions: dict, guidance: float) -> tuple[dict, float]:
    """The scores of ``n`` molecules sampled as asked (:func:`score_records`), with ``"resolved"``: the
    steering step and restart rules the library resolved for the request (what the row measured)."""
    t = time.perf_counter()
    kw = dict(conditions=conditions, guidance=guidance) if conditions else {}
    if conditions:  # the unconditional row (the naive bound) is never steered nor checked against a band
        kw.update(steer=args.steer, property_model=args.property_model, restart_ranges=args.restart_ranges)
    kw.update(steps=args.steps, seed=args.seed, batch_size=args.batch_size, relax_hydrogens=False,
              restarts=args.restarts, restart_rings=args.restart_rings)
    req = gen.request(n, **kw)
    records = list(gen.sample_arrays(n, **kw))
    scores = score_records(records, gen.conditions)
    scores["resolved"] = {"steer": req.steer, "restarts": req.restarts, "restart_rings": req.restart_rings,
                          "restart_ranges": req.restart_ranges}
    return scores, time.perf_counter() - t


def unconditional(gen, args: argparse.Namespace, label: str) -> tuple[dict, float]:
    """The unconditional row (the naive bound), read from ``--base`` when that file holds the same request
    (so that runs split by ``--properties`` over several processes sample it once), else sampled (and
    saved there)."""
    key = {"label": label, "n": args.n, "seed": args.seed, "steps": args.steps, "restarts": args.restarts,
           "restart_rings": args.restart_rings, "precision": gen.precision}
    path = Path(args.base) if args.base else None
    if path is not None and path.exists():
        saved = json.loads(path.read_text())
        if saved["key"] == key:
            return {**saved["row"], "props": np.array(saved["props"], dtype=np.float64)}, saved["seconds"]
    base, sec = sample(gen, args.n, args, {}, 1.0)
    if path is not None:
        row = {k: v for k, v in base.items() if k != "props"}
        atomic_write(path, json.dumps({"key": key, "row": row, "props": np.where(np.isnan(base["props"]), None,
                                                                                   base["props"]).tolist(),
                                       "seconds": sec}) + "\n")
    return base, sec


def in_range(values: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """Share inside [lo, hi] of the valid molecules and of all (an invalid one is outside)."""
    inside = (values >= lo) & (values <= hi)
    ok = ~np.isnan(values)
    return (float(inside[ok].mean()) if ok.any() else float("nan")), float(inside.mean())


def quality(s: dict) -> dict:
    """The row's quality figures and the rules it was sampled under."""
    return {**{k: s[k] for k in ("stability", "valid", "odd_ring", "without_aromatic_ring", "small_ring", "yield")},
            **s.get("resolved", {})}


def run_property(gen, name: str, spec: dict, base: dict, args: argparse.Namespace, guidance: float) -> Iterator[dict]:
    """The rows of one property's requests, each yielded as soon as it is sampled (so that the caller can write it)."""
    col = gen.conditions.index(name)
    for value in spec["values"] if "values" in args.kinds else []:
        s, sec = sample(gen, args.n, args, {name: value}, guidance)
        got, naive = s["props"][:, col], base["props"][:, col]
        mae, naive_mae = float(np.nanmean(np.abs(got - value))), float(np.nanmean(np.abs(naive - value)))
        # the MAE split: how far the molecules' mean is from the target (bias), and how widely they spread
        mean, sd = float(np.nanmean(got)), float(np.nanstd(got))
        band = target_band(name, value)  # the value's band: what range restarts check
        row = {"request": f"{name}={value:g}", "kind": "value", "mae": mae, "naive_mae": naive_mae,
               "reduction": 1 - mae / naive_mae if naive_mae else None, "mean": mean, "sd": sd,
               "naive_mean": float(np.nanmean(naive)), "naive_sd": float(np.nanstd(naive)),
               "band": list(band), "in_band": in_range(got, *band)[0], "naive_in_band": in_range(naive, *band)[0],
               **quality(s), "seconds": round(sec, 1)}
        print(f"  {row['request']:<22} MAE {mae:.3g} (naive {naive_mae:.3g}, {100 * row['reduction']:+.0f}% better)"
              f"  mean {mean:.3g} ± {sd:.2g} (naive {row['naive_mean']:.3g} ± {row['naive_sd']:.2g})"
              f"  within {band[0]:g}:{band[1]:g} {100 * row['in_band']:.1f}% (naive {100 * row['naive_in_band']:.1f}%)"
              f"  valid {100 * s['valid']:.1f}%  stable {100 * s['stability']:.1f}%  odd rings {_pct(s['odd_ring'])}", flush=True)
        yield row
    for side, (lo, hi) in spec["ranges"].items() if "ranges" in args.kinds else []:
        s, sec = sample(gen, args.n, args, {name: Range(lo, hi)}, guidance)
        share, share_all = in_range(s["props"][:, col], lo, hi)
        naive, naive_all = in_range(base["props"][:, col], lo, hi)
        row = {"request": f"{name}={lo:g}:{hi:g}", "kind": "range", "in_range": share, "in_range_of_all": share_all,
               "naive_in_range": naive, "naive_in_range_of_all": naive_all, **quality(s), "seconds": round(sec, 1)}
        print(f"  {row['request']:<22} inside {100 * share:.1f}% of valid, {100 * share_all:.1f}% of all (naive "
              f"{100 * naive:.1f}%)  valid {100 * s['valid']:.1f}%  stable {100 * s['stability']:.1f}%", flush=True)
        yield row


def run_triple(gen, specs: dict, base: dict, args: argparse.Namespace, guidance: float) -> dict:
    ranges = {name: specs[name]["ranges"][side] for name, side in TRIPLE}
    s, sec = sample(gen, args.n, args, {k: Range(*v) for k, v in ranges.items()}, guidance)

    def inside(props: np.ndarray) -> tuple[float, float]:
        ok = np.ones(len(props), dtype=bool)
        for name, (lo, hi) in ranges.items():
            v = props[:, gen.conditions.index(name)]
            ok &= (v >= lo) & (v <= hi)
        valid = ~np.isnan(props).any(1)
        return (float(ok[valid].mean()) if valid.any() else float("nan")), float(ok.mean())

    share, share_all = inside(s["props"])
    naive, naive_all = inside(base["props"])
    request = " ".join(f"{k}={lo:g}:{hi:g}" for k, (lo, hi) in ranges.items())
    print(f"  {request}: inside all three {100 * share:.1f}% of valid, {100 * share_all:.1f}% of all (naive {100 * naive:.1f}%)"
          f"  valid {100 * s['valid']:.1f}%", flush=True)
    return {"request": request, "kind": "three ranges", "in_range": share, "in_range_of_all": share_all,
            "naive_in_range": naive, "naive_in_range_of_all": naive_all, **quality(s), "seconds": round(sec, 1)}


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def merge(path: Path, rows: list[dict]) -> None:
    old = json.loads(path.read_text()) if path.exists() else {"rows": []}
    key = lambda r: (r["label"], r["guidance"], r.get("steer", 0.0), r.get("restarts"), r.get("restart_ranges", False),  # noqa: E731
                     r["request"])
    fresh = {key(r) for r in rows}
    old["rows"] = [r for r in old["rows"] if key(r) not in fresh] + rows
    atomic_write(path, json.dumps(old, indent=1) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a conditional drug-like model file (or training checkpoint)")
    p.add_argument("--label", default=None, help="row label (default: the checkpoint's path and step)")
    p.add_argument("--properties", default="", help="comma-separated (default: all the model's conditions)")
    p.add_argument("--guidance", default="1", help="comma-separated classifier-free guidance weights")
    p.add_argument("--no-triple", action="store_true", help="skip the three-property request")
    p.add_argument("--kinds", default="values,ranges", type=lambda t: set(t.split(",")),
                   help="which requests of each property: values, ranges or both (default)")
    p.add_argument("--n", type=int, default=1000, help="molecules per request (the bar is read at 1,000)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--restarts", type=int, default=None,
                   help="rounds of local restarts (default: the model file's own, as molediff sample; a training "
                        "run's file has none: pass the bundled model's, e.g. 6 with --restart-rings)")
    p.add_argument("--restart-rings", action=argparse.BooleanOptionalAction, default=None,
                   help="restarts also redraw odd rings (default: the model file's own)")
    p.add_argument("--restart-ranges", action=argparse.BooleanOptionalAction, default=None,
                   help="restarts also redraw molecules outside an asked range or a value's band (default: as "
                        "molediff sample, on wherever restarts run)")
    p.add_argument("--base", default=None,
                   help="a JSON file for the unconditional row: read when it holds the same request, else written "
                        "(runs split by --properties share it)")
    p.add_argument("--steer", type=float, default=None,
                   help="steer the conditional rows at this step size (molediff.steering; 0: none; default: the model "
                        "file's own, as molediff sample)")
    p.add_argument("--property-model", default=None,
                   help="the property model file of --steer ('molediff property-model'; default: the model file's own)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (its warm-up falls in the first row)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="the network's arithmetic while sampling (default auto, as molediff sample)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "druglike_conditioning.json"))
    args = p.parse_args()
    if not args.kinds or not args.kinds <= {"values", "ranges"}:
        p.error(f"--kinds: values, ranges or both, got {','.join(sorted(args.kinds))}")
    torch.set_num_threads(args.threads)
    from molediff.sampling import MoleculeGenerator

    gen = MoleculeGenerator.from_file(args.checkpoint)
    if args.compile:
        gen.compile()
    gen.set_precision(args.precision)
    table = gen.meta.get("condition_table")
    if not gen.conditions or table is None or not all(c in BY_NAME for c in gen.conditions):
        raise SystemExit(f"{args.checkpoint} is not a conditional model with a condition table")
    names = [s for s in args.properties.split(",") if s] or list(gen.conditions)
    unknown = sorted(set(names) - set(gen.conditions))
    if unknown:
        raise SystemExit(f"not conditions of this model: {', '.join(unknown)} (it has {', '.join(gen.conditions)})")
    values = np.asarray(table["values"], dtype=np.float64)
    specs = {name: targets_of(values[:, gen.conditions.index(name)], name) for name in gen.conditions}
    label = args.label or f"{args.checkpoint} step {gen.meta.get('step')}"
    print(f"{label}: {args.n} molecules per request, seed {args.seed}, {gen.precision}")
    base, sec = unconditional(gen, args, label)
    print(f"  unconditional: valid {100 * base['valid']:.1f}%  stable {100 * base['stability']:.1f}%  odd rings "
          f"{_pct(base['odd_ring'])}  no aromatic ring {_pct(base['without_aromatic_ring'])} ({sec:.0f} s)", flush=True)
    common = {"label": label, "n": args.n, "seed": args.seed, "steps": args.steps or gen.default_steps,
              "restarts": gen.default_restarts if args.restarts is None else args.restarts,
              "restart_rings": gen.default_restart_rings if args.restart_rings is None else args.restart_rings,
              "precision": gen.precision, "steer": gen.default_steer if args.steer is None else args.steer}
    rows = [{**common, "steer": 0.0, "restart_ranges": False, "guidance": None, "request": "unconditional", "kind": "none", **quality(base), "seconds": round(sec, 1)}]
    for g in [float(x) for x in args.guidance.split(",")]:
        print(f"guidance {g:g}" + (f", steered at {common['steer']:g}" if common["steer"] else ""))
        for name in names:
            for r in run_property(gen, name, specs[name], base, args, g):
                rows.append({**common, "guidance": g, **r})
                merge(Path(args.json), rows)  # after every request: a stopped run keeps the rows it finished
        if not args.no_triple and all(name in gen.conditions for name, _ in TRIPLE):
            rows.append({**common, "guidance": g, **run_triple(gen, specs, base, args, g)})
    merge(Path(args.json), rows)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
