"""Quality of a drug-like model (or of a drug-like data set, the "data row"), the table of issue 29.

Samples ``--n`` molecules (complete: hydrogens placed for heavy-atom models) and scores them with the
same code as the data: honest model-bond molecule stability and connected validity (Kekulé valences
with formal charges, no implicit H, one fragment), uniqueness and novelty (against the model's own
training molecules), the MOSES suite against the MOSES test set (FCD/Test with MOSES's shipped ChemNet
statistics, SNN, Frag, Scaf, IntDiv, Filters), QED / SA / logP / MW against it, ring-system realism
beside 2,000 MOSES test molecules, PoseBusters' fast molecule checks, the MMFF94 relaxation test and
the strain against RDKit's ETKDGv3 on every molecule (one that is not connected-valid counts as failing;
PoseBusters is also given among the valid ones), and each element's share of molecules against the
training data's. Sampling seconds are wall time on this machine.

    python benchmarks/druglike_quality.py --checkpoint RUN/ema_model.pt --train DATA_DIR --n 1000
    python benchmarks/druglike_quality.py --data HELD_OUT.sdf --train DATA_DIR      # the data row
    python benchmarks/druglike_quality.py --model druglike-cond --condition logp=3.05:3.81 --train DATA_DIR

For the data row take molecules of the same source the model never saw (e.g. a chunk of the MOSES train
split beyond those trained on: MOSES's own "Train" row compares train molecules with the test set; the
test molecules themselves would score SNN 1 against the test set trivially). FCD depends on the sample
size (it is biased upward for small n): compare rows of equal n only.

The MOSES test reference (fingerprints, fragments, scaffolds, properties of 176k molecules) takes ~7
minutes to build once; ``--reference-cache`` keeps it (an .npz, no pickles).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from molediff.atomic import atomic_write
from molediff.config import PRECISIONS, RESTART_FROM

RESULTS = Path(__file__).resolve().parent / "results"
ELEMENTS_OF_INTEREST = ("S", "Cl", "Br", "F", "P", "I")


def _training_smiles(folder: str) -> tuple[set[str], Counter, int]:
    """Canonical SMILES of the training molecules (the builder's SD property, else RDKit's), the number
    of molecules holding each element, and the molecule count."""
    from rdkit import Chem

    from molediff.chem.rdkit_mol import canonical_smiles

    smiles, holding, count = set(), Counter(), 0
    for path in sorted(Path(folder).rglob("*.sdf")):
        for mol in Chem.SDMolSupplier(str(path), removeHs=False):
            if mol is None:
                continue
            count += 1
            smi = canonical_smiles(mol)
            if smi:
                smiles.add(smi)
            symbols = {a.GetSymbol() for a in mol.GetAtoms()}
            holding.update(symbols)
            holding["S|Cl|Br"] += bool(symbols & {"S", "Cl", "Br"})
    return smiles, holding, count


def _score(mols: list, seconds: float | None, args, train: set[str] | None, train_holding: Counter, train_count: int,
           hashes: np.ndarray | None = None) -> dict:
    """One row's figures. ``train`` None (no --train): novelty against ``hashes`` (the model file's
    training molecules) and no data shares of the elements."""
    from rdkit import Chem, rdBase

    from molediff.chem.rdkit_mol import kekule_bonds
    from molediff.chem.model_bonds import model_bond_scores
    from molediff.chem.rdkit_mol import canonical_smiles
    from molediff.elements import SYMBOL_TO_INDEX
    from molediff.metrics.druglike import evaluate_druglike
    from molediff.metrics.moses import hashed_novelty
    from molediff.metrics.moses_data import load_moses_filters

    from molediff.data.reference import moses_test_reference

    n = len(mols)
    stable, valid, smiles, mols_3d = [], [], [], []
    holding = Counter()
    for mol in mols:
        (src, dst, order), charges, _ = kekule_bonds(mol)
        types = np.array([SYMBOL_TO_INDEX[a.GetSymbol()] for a in mol.GetAtoms()])
        s = model_bond_scores(types, charges, np.array([0, len(types)]), src, dst, order)
        stable.append(bool(s.molecule_stable[0]))
        valid.append(bool(s.valid[0]))
        smiles.append(s.smiles[0])
        holding.update({a.GetSymbol() for a in mol.GetAtoms()})
        clean = None
        if s.valid[0]:
            clean = Chem.Mol(mol)
            with rdBase.BlockLogs():
                Chem.SanitizeMol(clean)
        mols_3d.append(clean)
    reference = moses_test_reference(cache=args.reference_cache, n_jobs=args.jobs)  # features loaded, or built once there
    # in the training set's form (canonical heavy-atom SMILES without stereo): the model-bond SMILES
    # spell hydrogens out, so compared as they are no molecule would ever be found in the training set
    distinct = {c for c in (canonical_smiles(s) for s in smiles if s) if c}
    # the 3D checks (PoseBusters, relaxation, strain against ETKDG) run on every molecule, or on a random
    # --posebusters of them; a molecule that is not connected-valid stays as None and counts as failing
    rng = np.random.default_rng(0)
    pick = sorted(rng.choice(n, size=args.posebusters, replace=False).tolist()) if 0 < args.posebusters < n else range(n)
    result = evaluate_druglike([s for s in smiles], reference, train=train, mols_3d=[mols_3d[i] for i in pick],
                               posebusters_config="mol_fast", filters=load_moses_filters(), n_jobs=args.jobs)
    share = {e: holding[e] / max(n, 1) for e in ELEMENTS_OF_INTEREST}
    data_share = {e: train_holding[e] / train_count for e in ELEMENTS_OF_INTEREST} if train_count else None
    if train is not None:
        novelty = len(distinct - train) / max(len(distinct), 1)
    else:
        novelty = hashed_novelty(distinct, hashes) if hashes is not None else None
    scl = sum(any(a.GetSymbol() in ("S", "Cl", "Br") for a in m.GetAtoms()) for m in mols) / max(n, 1)
    return {
        "n": n, "model_molecule_stability": float(np.mean(stable)), "model_connected_validity": float(np.mean(valid)),
        "uniqueness_among_valid": len(distinct) / max(sum(valid), 1),
        "novelty_among_unique": novelty,
        "share_holding_S_Cl_Br": scl, "share_holding_S_Cl_Br_data": train_holding["S|Cl|Br"] / train_count if train_count else None,
        "element_share": share, "element_share_data": data_share,
        "sampling_seconds": seconds, "druglike": result,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="a model file (a run's ema_model.pt) to sample")
    what.add_argument("--model", help="a bundled model by name")
    what.add_argument("--data", help="score these molecules (SDF file or folder) instead: the data row")
    ap.add_argument("--train", help="the model's training data (SDF folder): novelty and element shares; for a model row "
                                    "it may be left out: novelty is then against the training molecules' hashes its "
                                    "file carries, without the data's element shares")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=None, help="reverse steps (default: the model's own, as molediff sample)")
    ap.add_argument("--eta", type=float, default=None, help="DDIM's eta (default: the model's own; 0 for a distilled student)")
    ap.add_argument("--noise-scale", type=float, nargs="+", default=[None],
                    help="one row per noise scale (default: the model's own; none for a deterministic sampler)")
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--restarts", type=int, default=None,
                    help="rounds of local restarts (molediff.restarts; default: the model's own, 0 unless its file says)")
    ap.add_argument("--restart-from", default=None, choices=RESTART_FROM,
                    help="what a restart draws again (default: the model's own; a few-step student's is 'noise')")
    ap.add_argument("--restart-rings", action=argparse.BooleanOptionalAction, default=None,
                    help="restarts redraw odd rings of valid molecules too (default: the model's own)")
    ap.add_argument("--condition", action="append", default=[], metavar="NAME=VALUE|NAME=LO:HI",
                    help="sample a conditional model with this target, as molediff sample --condition (repeatable; its "
                         "steering and restart rules the model's defaults): the strain and ring figures of a request")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--posebusters", type=int, default=0,
                    help="molecules given the 3D checks (PoseBusters mol_fast, MMFF relaxation, strain against ETKDGv3), "
                         "picked at random; 0 (default): all of them. Molecules that are not connected-valid count as failing")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="torch.compile the network (as molediff sample does for 1,000 molecules)")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="the network's arithmetic while sampling (molediff sample --precision; default auto, as molediff sample)")
    ap.add_argument("--reference-cache", default=str(RESULTS / ".." / ".." / "data" / "cache" / "moses_test_reference.npz"))
    ap.add_argument("--out", default=str(RESULTS / "druglike_quality.json"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows already in --out (a row of the same name is replaced) instead of replacing the file")
    ap.add_argument("--label", default=None, help="row name prefix (default: the checkpoint or model)")
    args = ap.parse_args()
    Path(args.reference_cache).parent.mkdir(parents=True, exist_ok=True)
    if args.data and not args.train:
        ap.error("--data needs --train (the training molecules its novelty is scored against)")
    train, train_holding, train_count = _training_smiles(args.train) if args.train else (None, Counter(), 0)
    rows = []
    if args.data:
        from rdkit import Chem

        files = sorted(Path(args.data).rglob("*.sdf")) if Path(args.data).is_dir() else [Path(args.data)]
        read = [m for f in files for m in Chem.SDMolSupplier(str(f), removeHs=False)][: args.n]
        mols = [m for m in read if m is not None]
        # records RDKit cannot read (a model's invalid molecules, in a sample file) are not scored: the row
        # says how many, so its figures are read as shares of the readable ones
        unreadable = len(read) - len(mols)
        if unreadable:
            print(f"{unreadable} of {len(read)} records could not be read by RDKit: the figures are of the {len(mols)} others")
        rows.append({"row": f"data: {args.label or args.data}", "records": len(read), "unreadable": unreadable,
                     **_score(mols, None, args, train, train_holding, train_count)})
    else:
        from molediff.conditioning import Range, parse_conditions
        from molediff.sampling import SampleStats, load_pretrained

        from molediff.errors import UserError

        try:
            conditions = parse_conditions(args.condition)
        except UserError as e:
            ap.error(str(e))

        gen = load_pretrained(args.checkpoint, model=args.model) if args.checkpoint else load_pretrained(model=args.model)
        if args.compile:
            gen.compile()  # its warm-up falls in the first row's seconds
        gen.set_precision(args.precision)
        prec = "" if gen.precision == "float32" else f" {gen.precision}"
        for noise in args.noise_scale:
            t0 = time.time()
            stats = SampleStats()  # counts network evaluations (restarts count the molecules they redraw)
            kw = dict(steps=args.steps, seed=args.seed, eta=args.eta, noise_scale=noise, sampler=args.sampler,
                      restarts=args.restarts, restart_rings=args.restart_rings, restart_from=args.restart_from)
            if conditions:
                kw.update(conditions=conditions)
            try:
                req = gen.request(args.n, **kw)  # what the library resolves (the model's defaults), for the row's name
            except UserError as e:  # e.g. --condition for a model without conditions
                ap.error(str(e))
            mols = gen.sample(args.n, stats=stats, **kw)
            seconds = time.time() - t0
            tail = (f" restarts {req.restarts}" + (" from noise" if req.restart_from == "noise" else "")
                    + (" rings" if req.restart_rings else "")
                    + (" ranges" if req.restart_ranges else "")) if req.restarts else ""
            how = "eta 0" if args.sampler == "ddim" and req.eta == 0 else f"noise {req.noise_scale:g}"
            asked = "".join(f" {k}={v[0]:g}:{v[1]:g}" if isinstance(v, Range) else f" {k}={v:g}" for k, v in conditions.items())
            steer = f" steer {req.steer:g}" if req.steer else ""
            hashes = gen.meta.get("training_smiles_hashes")
            rows.append({"row": f"{args.label or args.checkpoint or args.model}{asked} {args.sampler}{req.steps} {how}{tail}{steer}{prec}",
                         "network_evaluations": round(stats.evaluations_per_molecule, 2),
                         **_score(mols, seconds, args, train, train_holding, train_count,
                                  None if hashes is None else np.asarray(hashes, dtype=np.int64))})
    for r in rows:
        _print_row(r)
    if args.merge and Path(args.out).exists():
        names = {r["row"] for r in rows}
        rows = [r for r in json.loads(Path(args.out).read_text())["rows"] if r["row"] not in names] + rows
    atomic_write(args.out, json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


def _print_row(r: dict) -> None:
    m = r["druglike"]["moses"]
    pb, rx, props = r["druglike"].get("posebusters"), r["druglike"].get("relaxation"), r["druglike"].get("properties") or {}
    share = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    print(f"{r['row']}: n {r['n']}, stable {100 * r['model_molecule_stability']:.1f}%, connected valid "
          f"{100 * r['model_connected_validity']:.1f}%, unique {100 * r['uniqueness_among_valid']:.1f}%, novel "
          f"{share(r['novelty_among_unique'])}, FCD {m.get('fcd')}, SNN {m.get('snn')}, Frag {m.get('frag')}, "
          f"Scaf {m.get('scaf')}, IntDiv {m.get('int_div')}, Filters {m.get('filters')}, "
          f"QED {props.get('qed', {}).get('mean')}, SA {props.get('sa', {}).get('mean')}, "
          f"PB-valid {pb and pb.get('all_pass')}, MMFF drop median {rx and rx.get('energy_drop_median_kcal_mol')} kcal/mol, "
          f"S/Cl/Br share {share(r['share_holding_S_Cl_Br'])} (data {share(r['share_holding_S_Cl_Br_data'])}), "
          f"seconds {r['sampling_seconds'] and round(r['sampling_seconds'], 1)}, evaluations per molecule "
          f"{r.get('network_evaluations')}")
    rings, ref, st = r["druglike"].get("rings") or {}, r["druglike"].get("rings_reference") or {}, r["druglike"].get("strain") or {}
    pct = lambda d, k: "n/a" if d.get(k) is None else f"{100 * d[k]:.1f}%"  # noqa: E731
    print(f"  rings: aromatic/molecule {rings.get('aromatic_rings_per_molecule')} (data {ref.get('aromatic_rings_per_molecule')}), "
          f"no aromatic ring {pct(rings, 'without_aromatic_ring')} ({pct(ref, 'without_aromatic_ring')}), odd ring "
          f"{pct(rings, 'odd_ring')} ({pct(ref, 'odd_ring')}), 3/4-ring {pct(rings, 'small_ring')} ({pct(ref, 'small_ring')})")
    print(f"  strain: MMFF drop median {st.get('model_drop_median_kcal_mol')} as written vs {st.get('etkdg_drop_median_kcal_mol')} "
          f"ETKDGv3 ({st.get('num_paired')} paired), terms {st.get('model_term_drop_median_kcal_mol')}")


if __name__ == "__main__":
    raise SystemExit(main())
