"""Growing molecules around fragments cut from QM9 test molecules (inpainting), with and without
RePaint resampling.

For each fragment (a ring, a chain, a functional group: heavy atoms matched by a SMARTS in a QM9 test
molecule, with their hydrogens except where a removed neighbour was attached) the model generates
``--n`` molecules of the source molecule's size and they are scored: fraction keeping the fragment's
coordinates (within 1e-3 Å), validity and molecule stability (lookup bonds on the geometry; for models
that write bonds also the model-bond view), fraction of valid outputs that contain the fragment's
heavy-atom graph as a substructure, and unique SMILES. Writes ``benchmarks/results/inpainting.json``
and a PNG grid of examples to ``docs/inpainting.png``.

    python benchmarks/inpainting.py --model qm9-joint --n 20 --resample 1,5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem, RDLogger

from molediff.atomic import atomic_write
from molediff.chem import build_molecule, check_validity
from molediff.chem.model_bonds import model_bond_scores, written_molecule
from molediff.data.qm9 import load_qm9
from molediff.elements import SYMBOL_TO_INDEX
from molediff.inpainting import Fragment
from molediff.metrics import stability
from molediff.chem.bonds import lookup_bonds_stacked
from molediff.sampling import DEFAULT_MODEL, load_pretrained

ROOT = Path(__file__).resolve().parents[1]
#: (name, SMARTS of the heavy atoms kept, which test molecule: the first whose graph matches)
FRAGMENTS = (
    ("ring: cyclohexane-like C6", "[C;R1]1[C;R1][C;R1][C;R1][C;R1][C;R1]1"),
    ("chain: C-C-C", "[CH2;!R][CH2;!R][CH3;!R]"),
    ("group: amide C(=O)N", "[CX3;!R](=O)[NX3;!R]"),
)


def qm9_mol(data, k: int) -> Chem.Mol:
    sym, pos = data.molecule(k)
    src, dst, order, charge = data.bonds(k)
    return written_molecule(list(sym), src, dst, order, charge, pos)


def cut(data, smarts: str) -> tuple[Fragment, int, Chem.Mol]:
    """The fragment (kept heavy atoms + their H, in the source's coordinates), the source's size, and
    the query for containment."""
    query = Chem.MolFromSmarts(smarts)
    for k in range(len(data)):
        mol = qm9_mol(data, k)
        work = Chem.Mol(mol)
        Chem.SanitizeMol(work)
        match = work.GetSubstructMatch(query)
        if not match or len(match) == mol.GetNumAtoms():
            continue
        heavy = set(match)
        keep = sorted(heavy | {n.GetIdx() for i in heavy for n in mol.GetAtomWithIdx(i).GetNeighbors() if n.GetSymbol() == "H"})
        if len(keep) >= mol.GetNumAtoms() - 1:
            continue
        sub = Chem.RWMol(mol)
        for i in sorted(set(range(mol.GetNumAtoms())) - set(keep), reverse=True):
            sub.RemoveAtom(i)
        sym, pos = data.molecule(k)
        src, dst, order, charge = data.bonds(k)
        index = {old: new for new, old in enumerate(keep)}
        inside = [(index[i], index[j], o) for i, j, o in zip(src.tolist(), dst.tolist(), order.tolist()) if i in index and j in index]
        bonds = tuple(np.array(x, dtype=np.int64) for x in zip(*inside))
        frag = Fragment([sym[i] for i in keep], pos[keep], charge[keep], bonds, f"QM9 {data.names[k]}")
        return frag, mol.GetNumAtoms(), Chem.MolFromSmarts(smarts)
    raise RuntimeError(f"no QM9 test molecule matches {smarts}")


def score(records, frag: Fragment, query: Chem.Mol, joint: bool) -> dict:
    kept = [float(np.abs(p[: len(frag)] - frag.pos).max()) < 1e-3 and list(s[: len(frag)]) == frag.symbols for s, p, _ in records]
    lookup_valid, lookup_stable, model_valid, model_stable, contains, smiles = [], [], [], [], [], set()
    for s, p, info in records:
        types = np.array([SYMBOL_TO_INDEX[x] for x in s])
        ptr = np.array([0, len(s)])
        lookup_stable.append(bool(stability(types, ptr, lookup_bonds_stacked(types, p, ptr))[1][0]))
        r = check_validity(build_molecule(list(s), p))
        lookup_valid.append(r.valid)
        mol = r.mol if r.valid else None
        if joint:
            sc = model_bond_scores(types, info["charges"], ptr, *info["bonds"])
            model_valid.append(bool(sc.valid[0]))
            model_stable.append(bool(sc.molecule_stable[0]))
            mol = None
            if sc.valid[0]:
                mol = written_molecule(list(s), *info["bonds"], info["charges"], p)
                Chem.SanitizeMol(mol)
        if mol is not None:
            contains.append(mol.HasSubstructMatch(query))
            smiles.add(Chem.MolToSmiles(Chem.RemoveHs(mol)))
    out = {"kept_exactly": float(np.mean(kept)), "lookup_validity": float(np.mean(lookup_valid)),
           "lookup_molecule_stability": float(np.mean(lookup_stable)),
           "contains_fragment": float(np.mean(contains)) if contains else 0.0, "unique_smiles": len(smiles)}
    if joint:
        out.update(model_connected_validity=float(np.mean(model_valid)), model_molecule_stability=float(np.mean(model_stable)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name (default {DEFAULT_MODEL}; qm9, qm9-joint, qm9-cond)")
    ap.add_argument("--checkpoint", default=None, help="a model file instead")
    ap.add_argument("--n", type=int, default=20, help="molecules per fragment and setting")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--resample", default="1,5", help="RePaint rounds to compare")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inpainting.json"))
    ap.add_argument("--grid", default=str(ROOT / "docs" / "inpainting.png"))
    args = ap.parse_args()
    RDLogger.DisableLog("rdApp.*")
    torch.set_num_threads(args.threads)
    gen = load_pretrained(args.checkpoint, model=args.model)
    test = load_qm9("test", progress=False)
    rows, examples = [], []
    for name, smarts in FRAGMENTS:
        frag, size, query = cut(test, smarts)
        for r in (int(x) for x in args.resample.split(",")):
            t0 = time.time()
            recs = list(gen.sample_arrays(args.n, steps=args.steps, seed=0, fragment=frag, n_atoms=size, resample=r))
            row = {"fragment": name, "source": frag.name, "fragment_atoms": len(frag), "size": size, "resample": r,
                   "steps": args.steps, "n": args.n, "seconds": round(time.time() - t0, 1), **score(recs, frag, query, gen.writes_bonds)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if r == max(int(x) for x in args.resample.split(",")):
                examples += [((list(s), p), name.split(":")[0]) for s, p, _ in recs[:4]]
    meta = {"date": time.strftime("%Y-%m-%d"), "model": gen.source, "step": gen.meta.get("step")}
    atomic_write(args.out, json.dumps({"meta": meta, "rows": rows}, indent=2))
    from molediff.chem import draw_grid

    draw_grid([m for m, _ in examples], args.grid, legends=[lab for _, lab in examples], per_row=4)  # lookup bonds drawn
    print(f"wrote {args.out} and {args.grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
