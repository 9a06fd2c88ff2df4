"""Growing molecules around fragments cut from QM9 test molecules (inpainting), with and without
RePaint resampling.

For each fragment (a ring, a chain, a functional group: heavy atoms matched by a SMARTS in a QM9 test
molecule, with their hydrogens except where a removed neighbour was attached) the model generates
``--n`` molecules of the source molecule's size and they are scored: fraction keeping the fragment's
coordinates (within 1e-3 Å), validity and molecule stability (lookup bonds on the geometry; for models
that write bonds also the model-bond view), fraction of valid outputs that contain the fragment's
heavy-atom graph as a substructure (with the bond types its source molecule has after aromaticity
perception, so a piece of a benzene is looked for as aromatic bonds), and unique SMILES. A second set, ``--random-cuts`` K, takes K
QM9 test molecules drawn at random (seed 0), keeps a random connected piece of each (as in training a
fragment-conditioned model, :func:`molediff.molecular.random_fragments`, at least two atoms) and regrows
the rest to the source's size, one molecule each, scored the same way as one row. Writes
``benchmarks/results/inpainting.json`` and a PNG grid of examples to ``docs/inpainting.png``.

    python benchmarks/inpainting.py --model qm9-frag --n 20 --resample 1 --random-cuts 100
    python benchmarks/inpainting.py --model qm9-joint --n 20 --resample 1,5 --random-cuts 100
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
        return piece(data, k, keep), mol.GetNumAtoms(), Chem.MolFromSmarts(smarts)
    raise RuntimeError(f"no QM9 test molecule matches {smarts}")


def piece(data, k: int, keep) -> Fragment:
    """Atoms ``keep`` (indices, ascending) of QM9 molecule ``k`` as a fragment: their elements,
    coordinates, charges and the bonds among them."""
    keep = [int(i) for i in keep]
    sym, pos = data.molecule(k)
    src, dst, order, charge = data.bonds(k)
    index = {old: new for new, old in enumerate(keep)}
    inside = [(index[i], index[j], o) for i, j, o in zip(src.tolist(), dst.tolist(), order.tolist()) if i in index and j in index]
    bonds = tuple(np.array(x, dtype=np.int64) for x in zip(*inside)) if inside else (np.zeros(0, np.int64),) * 3
    return Fragment([sym[i] for i in keep], pos[keep], charge[keep], bonds, f"QM9 {data.names[k]}")


def random_cut(data, k: int, rng: np.random.Generator, whole_hydrogens: bool = False) -> tuple[Fragment, int, Chem.Mol]:
    """A random connected piece (≥ 2 atoms, fewer than all) of test molecule ``k``, the source's size,
    and the piece's heavy-atom graph as the containment query (the whole piece when it is all H).
    ``whole_hydrogens`` (heavy-atom models, whose fragment atoms keep their hydrogen counts): the piece's
    heavy atoms with all their hydrogens, as the pieces such a model trains on."""
    from molediff.molecular import random_fragments

    batch = data.collate([k])
    sym = np.array(data.molecule(k)[0])
    src, dst, _, _ = data.bonds(k)
    while True:
        fixed = random_fragments(batch, 1.0, torch.Generator().manual_seed(int(rng.integers(2**31)))).numpy()
        if whole_hydrogens:
            fixed &= sym != "H"
            for a, b in ((src, dst), (dst, src)):  # hydrogens of fixed heavy atoms join the piece
                fixed[b[(sym[b] == "H") & fixed[a]]] = True
        if (fixed & (sym != "H")).sum() >= 2 and not fixed.all():
            break
    frag = piece(data, k, np.flatnonzero(fixed))
    return frag, int(batch.ptr[-1]), piece_query(data, k, fixed)


def piece_query(data, k: int, fixed: np.ndarray) -> Chem.Mol:
    """The containment query of a piece of test molecule ``k`` (``fixed`` [n] bool): its heavy-atom graph
    (the whole piece when it is all H) with the bond types the *source molecule* has after RDKit's
    aromaticity perception. The piece's own bonds are Kekulé (single/double) as the file writes them; a
    generated molecule is sanitized before the match, so a piece of a benzene must be matched as
    aromatic bonds, as the source has them (a Kekulé query misses every aromatic piece: an earlier
    version of this benchmark reported 13–19% containment on drug-like cuts for that reason)."""
    source = qm9_mol(data, k)
    Chem.SanitizeMol(source)
    sub = Chem.RWMol(source)
    for i in sorted(np.flatnonzero(~fixed).tolist(), reverse=True):
        sub.RemoveAtom(int(i))
    sub = sub.GetMol()
    if any(a.GetSymbol() != "H" for a in sub.GetAtoms()):
        sub = Chem.RemoveHs(sub, sanitize=False)
    return Chem.MolFromSmarts(Chem.MolToSmarts(sub))


def _heavy_with_hydrogens(data, k: int, heavy: np.ndarray) -> np.ndarray:
    """[n] bool: the heavy atoms ``heavy`` (indices) of molecule ``k`` and every hydrogen bonded to them."""
    sym = np.array(data.molecule(k)[0])
    src, dst, _, _ = data.bonds(k)
    keep = np.zeros(len(sym), dtype=bool)
    keep[np.asarray(heavy, dtype=np.int64)] = True
    for a, b in ((src, dst), (dst, src)):
        keep[b[(sym[b] == "H") & keep[a] & (sym[a] != "H")]] = True
    return keep


def scaffold_cut(data, k: int) -> tuple[Fragment, int, Chem.Mol] | None:
    """Murcko-scaffold decoration: the ring systems and linkers of molecule ``k`` (Bemis–Murcko
    scaffold) with their hydrogens, in place; the side chains are regrown. Each scaffold atom keeps
    its hydrogen count, so it is open exactly where the source had a side chain. None when the
    molecule has no ring or is all scaffold."""
    from rdkit.Chem.Scaffolds import MurckoScaffold

    source = qm9_mol(data, k)
    Chem.SanitizeMol(source)
    heavy = Chem.RemoveHs(source)  # RemoveHs keeps heavy-atom order: indices carry over to `source`
    core = MurckoScaffold.GetScaffoldForMol(heavy)
    match = heavy.GetSubstructMatch(core) if core.GetNumAtoms() else ()
    n_heavy = heavy.GetNumAtoms()
    if not match or len(match) >= n_heavy:
        return None
    heavy_index = [a.GetIdx() for a in source.GetAtoms() if a.GetAtomicNum() > 1]
    fixed = _heavy_with_hydrogens(data, k, [heavy_index[i] for i in match])
    return piece(data, k, np.flatnonzero(fixed)), source.GetNumAtoms(), piece_query(data, k, fixed)


def linker_cut(data, k: int, rng: np.random.Generator, max_linker: int = 6, min_end: int = 3
               ) -> tuple[Fragment, int, Chem.Mol] | None:
    """Two-fragment linking: molecule ``k`` cut at two acyclic bonds into three pieces; the two ends
    (each ≥ ``min_end`` heavy atoms, with their hydrogens) are kept in place as one two-piece fragment
    and the middle (1 to ``max_linker`` heavy atoms) is regrown. A random pair of cut bonds among
    those that qualify; None when there is none."""
    source = qm9_mol(data, k)
    Chem.SanitizeMol(source)
    heavy = Chem.RemoveHs(source)
    heavy_index = [a.GetIdx() for a in source.GetAtoms() if a.GetAtomicNum() > 1]
    acyclic = [b.GetIdx() for b in heavy.GetBonds() if not b.IsInRing()]
    options = []
    for x in range(len(acyclic)):
        for y in range(x + 1, len(acyclic)):
            cut = Chem.FragmentOnBonds(heavy, [acyclic[x], acyclic[y]], addDummies=False)
            pieces = Chem.GetMolFrags(cut)
            if len(pieces) != 3:
                continue
            ends = [set(pc) for pc in pieces]
            bx, by = heavy.GetBondWithIdx(acyclic[x]), heavy.GetBondWithIdx(acyclic[y])
            touch = [sum(len({b.GetBeginAtomIdx(), b.GetEndAtomIdx()} & pc) for b in (bx, by)) for pc in ends]
            middle = int(np.argmax(touch))  # the middle piece holds an atom of both cut bonds
            if touch[middle] != 2 or len(ends[middle]) > max_linker:
                continue
            kept = [pc for i, pc in enumerate(ends) if i != middle]
            if min(len(pc) for pc in kept) < min_end:
                continue
            options.append(sorted(kept[0] | kept[1]))
    if not options:
        return None
    keep = options[int(rng.integers(len(options)))]
    fixed = _heavy_with_hydrogens(data, k, [heavy_index[i] for i in keep])
    return piece(data, k, np.flatnonzero(fixed)), source.GetNumAtoms(), piece_query(data, k, fixed)


def score_one(s, p, info, frag: Fragment, query: Chem.Mol, joint: bool) -> dict:
    """One molecule's scores: kept exactly, lookup validity and stability, model-bond connected validity
    and stability (joint models), contains the fragment, and its SMILES (valid molecules, else None).
    A heavy-atom model's output holds the fragment's heavy atoms first (its hydrogens are placed anew)."""
    if "hydrogens" in info:
        frag = frag.heavy()
    kept = float(np.abs(p[: len(frag)] - frag.pos).max()) < 1e-3 and list(s[: len(frag)]) == frag.symbols
    types = np.array([SYMBOL_TO_INDEX[x] for x in s])
    ptr = np.array([0, len(s)])
    out = {"kept": kept, "lookup_stable": bool(stability(types, ptr, lookup_bonds_stacked(types, p, ptr))[1][0])}
    r = check_validity(build_molecule(list(s), p))
    out["lookup_valid"] = r.valid
    mol = r.mol if r.valid else None
    if joint:
        sc = model_bond_scores(types, info["charges"], ptr, *info["bonds"])
        out["model_valid"], out["model_stable"] = bool(sc.valid[0]), bool(sc.molecule_stable[0])
        mol = None
        if sc.valid[0]:
            mol = written_molecule(list(s), *info["bonds"], info["charges"], p)
            Chem.SanitizeMol(mol)
    out["contains"] = mol.HasSubstructMatch(query) if mol is not None else None
    out["smiles"] = Chem.MolToSmiles(Chem.RemoveHs(mol)) if mol is not None else None
    return out


def summarise(scores: list[dict], joint: bool) -> dict:
    contains = [x["contains"] for x in scores if x["contains"] is not None]
    out = {"kept_exactly": float(np.mean([x["kept"] for x in scores])),
           "lookup_validity": float(np.mean([x["lookup_valid"] for x in scores])),
           "lookup_molecule_stability": float(np.mean([x["lookup_stable"] for x in scores])),
           "contains_fragment": float(np.mean(contains)) if contains else 0.0,
           "unique_smiles": len({x["smiles"] for x in scores if x["smiles"]})}
    if joint:
        out.update(model_connected_validity=float(np.mean([x["model_valid"] for x in scores])),
                   model_molecule_stability=float(np.mean([x["model_stable"] for x in scores])))
    return out


def score(records, frag: Fragment, query: Chem.Mol, joint: bool) -> dict:
    return summarise([score_one(s, p, info, frag, query, joint) for s, p, info in records], joint)


def pick_cuts(test, kind: str, count: int, heavy_model: bool) -> tuple[list[int], list]:
    """``count`` test molecules and their fragments of one kind ("random cuts", "scaffolds", "linkers").
    Each kind has its own seed, so adding one leaves the others' rows unchanged; the random cuts are
    drawn as they always were (their rows stay comparable with earlier ones); scaffolds and linkers
    take molecules in a random order, skipping those without such a cut."""
    if kind == "random cuts":
        rng = np.random.default_rng(0)
        picks = [int(k) for k in rng.choice(len(test), size=min(count, len(test)), replace=False)]
        return picks, [random_cut(test, k, rng, whole_hydrogens=heavy_model) for k in picks]
    rng = np.random.default_rng({"scaffolds": 1, "linkers": 2}[kind])
    picks, cuts = [], []
    for k in rng.permutation(len(test)).tolist():
        if len(cuts) == count:
            break
        made = scaffold_cut(test, k) if kind == "scaffolds" else linker_cut(test, k, rng)
        if made is not None:
            picks.append(k)
            cuts.append(made)
    return picks, cuts


def regrow(gen, test, kind: str, picks: list[int], cuts: list, args, heavy_model: bool, noise: dict) -> list[dict]:
    """One row per RePaint setting: each cut regrown once (seed = its index) to its source's size."""
    rows = []
    for r in (int(x) for x in args.resample.split(",")):
        t0, scores, atoms = time.time(), [], []
        for k, (frag, size, query) in enumerate(cuts):
            # a heavy-atom model's size counts heavy atoms: the source's
            grow_to = sum(x != "H" for x in test.molecule(picks[k])[0]) if heavy_model else size
            (s, p, info), = gen.sample_arrays(1, steps=args.steps, seed=k, fragment=frag, n_atoms=grow_to, resample=r, **noise)
            scores.append(score_one(s, p, info, frag, query, gen.writes_bonds))
            atoms.append((len(frag), size))
        row = {"fragment": f"{kind} of {len(cuts)} test molecules", "source": args.data or "QM9 test", "resample": r,
               "fragment_atoms": round(float(np.mean([a for a, _ in atoms])), 1),
               "size": round(float(np.mean([b for _, b in atoms])), 1), "steps": args.steps, "n": len(cuts),
               "seconds": round(time.time() - t0, 1), **summarise(scores, gen.writes_bonds)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name (default {DEFAULT_MODEL}; qm9, qm9-joint, qm9-frag)")
    ap.add_argument("--checkpoint", default=None, help="a model file instead")
    ap.add_argument("--n", type=int, default=20, help="molecules per fragment and setting")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--resample", default="1,5", help="RePaint rounds to compare")
    ap.add_argument("--random-cuts", type=int, default=0, help="also regrow random pieces of this many QM9 test molecules (one each)")
    ap.add_argument("--scaffolds", type=int, default=0, help="also decorate the Murcko scaffolds of this many test molecules "
                    "(scaffold kept in place with its hydrogens, side chains regrown to the source's size; one each)")
    ap.add_argument("--linkers", type=int, default=0, help="also link the two ends of this many test molecules cut at two "
                    "acyclic bonds (ends of >= 3 heavy atoms kept in place as one two-piece fragment, a middle of 1-6 "
                    "heavy atoms regrown; connected validity then says they were joined; one each)")
    ap.add_argument("--data", default=None, help="take the random cuts from the molecules of this SDF file or folder instead "
                    "of QM9's test split (e.g. held-out MOSES-3D molecules for a drug-like model); the QM9 named fragments "
                    "are then skipped")
    ap.add_argument("--noise-scale", type=float, default=None, help="sampler noise scale (default: the sampler's)")
    ap.add_argument("--restarts", type=int, default=None,
                    help="rounds of local restarts (fragment-conditioned models; default: the model's own)")
    ap.add_argument("--restart-rings", action=argparse.BooleanOptionalAction, default=None,
                    help="restarts redraw odd rings of valid molecules too (default: the model's own)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inpainting.json"))
    ap.add_argument("--grid", default=str(ROOT / "docs" / "inpainting.png"))
    args = ap.parse_args()
    RDLogger.DisableLog("rdApp.*")
    torch.set_num_threads(args.threads)
    gen = load_pretrained(args.checkpoint, model=args.model)
    if args.data:  # explicit-H molecules with bonds; a heavy-atom model turns a cut's hydrogens into counts
        from molediff.data.files import read_molecule_files

        test, _ = read_molecule_files([args.data], bonds=True, implicit_hydrogens="refuse")
    else:
        test = load_qm9("test", progress=False)
    heavy_model = gen.diffusion.vocab.heavy_atom
    rows, examples = [], []
    noise = {} if args.noise_scale is None else {"noise_scale": args.noise_scale}
    if args.restarts is not None:  # sampler settings passed with the noise scale to every request
        noise["restarts"] = args.restarts
    if args.restart_rings is not None:
        noise["restart_rings"] = args.restart_rings
    for name, smarts in FRAGMENTS if not args.data else ():
        frag, size, query = cut(test, smarts)
        for r in (int(x) for x in args.resample.split(",")):
            t0 = time.time()
            recs = list(gen.sample_arrays(args.n, steps=args.steps, seed=0, fragment=frag, n_atoms=size, resample=r, **noise))
            row = {"fragment": name, "source": frag.name, "fragment_atoms": len(frag), "size": size, "resample": r,
                   "steps": args.steps, "n": args.n, "seconds": round(time.time() - t0, 1), **score(recs, frag, query, gen.writes_bonds)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if r == max(int(x) for x in args.resample.split(",")):
                examples += [((list(s), p), name.split(":")[0]) for s, p, _ in recs[:4]]
    for kind, count in (("random cuts", args.random_cuts), ("scaffolds", args.scaffolds), ("linkers", args.linkers)):
        if count:
            picks, cuts = pick_cuts(test, kind, count, heavy_model)
            rows += regrow(gen, test, kind, picks, cuts, args, heavy_model, noise)
    meta = {"date": time.strftime("%Y-%m-%d"), "model": gen.source, "step": gen.meta.get("step"),
            "noise_scale": args.noise_scale or "sampler default"}
    atomic_write(args.out, json.dumps({"meta": meta, "rows": rows}, indent=2))
    from molediff.chem import draw_grid

    if examples:
        draw_grid([m for m, _ in examples], args.grid, legends=[lab for _, lab in examples], per_row=4)  # lookup bonds drawn
    print(f"wrote {args.out} and {args.grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
