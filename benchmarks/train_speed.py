"""Training and sampling throughput of the molecular diffusion model.

For each architecture size, on real QM9 training batches:
- training: molecules per second for forward + backward + AdamW step (batch ``--batch-size``);
- sampling: molecules per second per reverse step (one denoiser evaluation on a batch of
  ``--sample-batch`` molecules of QM9 sizes, no gradient); divide by the number of steps for
  end-to-end sampling speed.

    python benchmarks/train_speed.py                  # 2 threads, default size and 9x256
    python benchmarks/train_speed.py --sizes 4x64,4x64+bonds --threads 1   # atoms-only vs the joint model
    python benchmarks/train_speed.py --sizes 4x64,6x128,9x128,9x256 --device cuda

A size ``LxH+bonds`` is the joint model (formal charges and a bond type per atom pair, pair state of
``--pair-hidden``).

Prints a table and writes ``benchmarks/results/train_speed.json``.

Drug-sized molecules (``--atoms 20,40,80``): the drug-like recipe (4x64 joint model with charges,
self-conditioning) on molecules of exactly N atoms, explicit-H (the vocabulary holds H) against
heavy-atom (hydrogen counts generated; a molecule of N heavy atoms has about 2N atoms with its
hydrogens, so compare heavy-atom N with explicit-H 2N), each row in a fresh process so its peak memory
(max RSS) is its own; batches hold ``--pair-budget`` atom pairs (as ``molediff train --batch-pairs``):

    python benchmarks/train_speed.py --atoms 20,40,80 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from molediff.atomic import atomic_write
from molediff.config import DiffusionConfig, ModelConfig
from molediff.data import load_qm9
from molediff.models import build_network
from molediff.models.egnn import count_parameters
from molediff.molecular import MolecularDiffusion

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(size: str, data, args, device: torch.device) -> dict:
    joint = size.endswith("+bonds")
    layers, hidden = (int(v) for v in size.removesuffix("+bonds").split("x"))
    torch.manual_seed(0)
    diffusion = MolecularDiffusion(DiffusionConfig(charges=joint, bonds=joint))
    model = build_network(ModelConfig(hidden=hidden, layers=layers, pair_hidden=args.pair_hidden), diffusion).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    rng = np.random.default_rng(0)
    batches = [diffusion.encode(data.collate(rng.integers(0, len(data), args.batch_size)).to(device))
               for _ in range(args.warmup + args.iters)]
    g = torch.Generator().manual_seed(0)

    def train_step(x0):
        t = diffusion.sample_timesteps(x0.num_graphs, generator=g, device=device)
        loss = diffusion.training_losses(model, x0, t, x0.noise_like(g))["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in batches[: args.warmup]:
        train_step(b)
    _sync(device)
    t0 = time.perf_counter()
    for b in batches[args.warmup :]:
        train_step(b)
    _sync(device)
    train_s = (time.perf_counter() - t0) / args.iters

    x0 = diffusion.encode(data.collate(rng.integers(0, len(data), args.sample_batch)).to(device))
    model.eval()
    t = torch.full((x0.num_graphs,), 500, device=device)
    x = diffusion.add_noise(x0, x0.noise_like(g), t)
    with torch.no_grad():
        for _ in range(args.warmup):
            diffusion.predict(model, x, t)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.iters):
            diffusion.predict(model, x, t)
        _sync(device)
    step_s = (time.perf_counter() - t0) / args.iters
    return {
        "size": size, "layers": layers, "hidden": hidden, "joint": joint, "parameters": count_parameters(model),
        "train_batch": args.batch_size, "train_s_per_batch": round(train_s, 4),
        "train_mol_per_s": round(args.batch_size / train_s, 1),
        "epoch_minutes_100k": round(100_000 / (args.batch_size / train_s) / 60, 1),
        "sample_batch": args.sample_batch, "sample_mol_steps_per_s": round(args.sample_batch / step_s, 1),
        "sample_mol_per_s_at_100_steps": round(args.sample_batch / step_s / 100, 2),
    }


def _synthetic(n_atoms: int, count: int, heavy: bool, seed: int = 0):
    """``count`` molecules of ``n_atoms`` atoms: a random walk of 1.5 Å steps (a chain of single bonds,
    every fifth a double), drug-like elements; heavy-atom sets carry hydrogen counts."""
    from molediff.data.molecules import MoleculeSet, ptr_from_counts
    from molediff.elements import SYMBOL_TO_INDEX

    rng = np.random.default_rng(seed)
    elements = ["C", "N", "O", "F", "S", "Cl"] + ([] if heavy else ["H"])
    steps = rng.normal(size=(count, n_atoms, 3))
    pos = np.cumsum(1.5 * steps / np.linalg.norm(steps, axis=-1, keepdims=True), axis=1).reshape(-1, 3)
    types = np.array([SYMBOL_TO_INDEX[e] for e in elements])[rng.integers(0, len(elements), count * n_atoms)]
    src = np.tile(np.arange(n_atoms - 1), count)
    order = np.where(np.arange(len(src)) % 5 == 0, 2, 1)
    return MoleculeSet(torch.as_tensor(pos, dtype=torch.float32), torch.as_tensor(types), ptr_from_counts(torch.full((count,), n_atoms)),
                       bond_index=torch.as_tensor(np.stack([src, src + 1])), bond_order=torch.as_tensor(order),
                       bond_ptr=ptr_from_counts(torch.full((count,), n_atoms - 1)), has_bonds=torch.ones(count, dtype=torch.bool),
                       hydrogens=torch.as_tensor(rng.integers(0, 3, count * n_atoms)) if heavy else None)


def measure_atoms(mode: str, n_atoms: int, args) -> dict:
    """One drug-sized row (see the module docstring), in this process."""
    import resource

    heavy = mode == "heavy"
    torch.manual_seed(0)
    cfg = DiffusionConfig(charges=True, bonds=True, self_condition=True, max_hydrogens=4 if heavy else 0,
                          elements=["C", "N", "O", "F", "S", "Cl"] + ([] if heavy else ["H"]))
    diffusion = MolecularDiffusion(cfg)
    model = build_network(ModelConfig(hidden=64, layers=4, pair_hidden=args.pair_hidden), diffusion)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    batch = max(1, args.pair_budget // (n_atoms * (n_atoms - 1) // 2))
    data = _synthetic(n_atoms, batch * (args.warmup + args.iters), heavy)
    g = torch.Generator().manual_seed(0)
    times = []
    for k in range(args.warmup + args.iters):
        x0 = diffusion.encode(data.collate(np.arange(k * batch, (k + 1) * batch)))
        t0 = time.perf_counter()
        t = diffusion.sample_timesteps(batch, generator=g)
        loss = diffusion.training_losses(model, x0, t, x0.noise_like(g), generator=g)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    train_s = float(np.mean(times[args.warmup :]))
    model.eval()
    x0 = diffusion.encode(data.collate(np.arange(batch)))
    t = torch.full((batch,), 500)
    x = diffusion.add_noise(x0, x0.noise_like(g), t)
    with torch.no_grad():
        for _ in range(args.warmup):
            diffusion.predict(model, x, t, self_cond=x)
        t0 = time.perf_counter()
        for _ in range(args.iters):
            diffusion.predict(model, x, t, self_cond=x)
    step_s = (time.perf_counter() - t0) / args.iters
    return {"mode": mode, "atoms": n_atoms, "pairs_per_molecule": n_atoms * (n_atoms - 1) // 2, "batch": batch,
            "train_mol_per_s": round(batch / train_s, 1), "sample_mol_steps_per_s": round(batch / step_s, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4x64,9x256", help="LAYERSxHIDDEN list (default: the default config and EDM's 9x256)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sample-batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--pair-hidden", type=int, default=32, help="pair-state width of the +bonds sizes (default 32)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--atoms", default="", help="drug-sized rows: comma-separated atom counts (e.g. 20,40,80), "
                                                 "explicit-H and heavy-atom; see the module docstring")
    ap.add_argument("--pair-budget", type=int, default=20_000, help="atom pairs per batch of the --atoms rows (default 20,000)")
    ap.add_argument("--one-row", nargs=2, metavar=("MODE", "ATOMS"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="JSON output (default benchmarks/results/train_speed.json, "
                                                "train_speed_atoms.json with --atoms)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one_row:
        print(json.dumps(measure_atoms(args.one_row[0], int(args.one_row[1]), args)))
        return 0
    if args.atoms:
        return _atoms_table(args)
    args.out = args.out or str(RESULTS / "train_speed.json")
    device = torch.device(args.device)
    data = load_qm9("train", progress=False)
    rows = [measure(s, data, args, device) for s in args.sizes.split(",")]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent).stdout.strip()
    except OSError:
        commit = ""
    meta = {"date": time.strftime("%Y-%m-%d"), "device": args.device, "threads": args.threads,
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "commit": commit}
    cols = ["size", "parameters", "train_mol_per_s", "train_s_per_batch", "epoch_minutes_100k", "sample_mol_steps_per_s", "sample_mol_per_s_at_100_steps"]
    print(f"{meta}")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    atomic_write(args.out, json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


def _atoms_table(args) -> int:
    import sys

    rows = []
    for n in (int(v) for v in args.atoms.split(",")):
        for mode in ("explicit", "heavy"):
            cmd = [sys.executable, __file__, "--one-row", mode, str(n), "--threads", str(args.threads), "--iters", str(args.iters),
                   "--warmup", str(args.warmup), "--pair-budget", str(args.pair_budget), "--pair-hidden", str(args.pair_hidden)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "pair_budget": args.pair_budget, "model": "4x64 joint + charges + self-conditioning"}
    cols = ["mode", "atoms", "pairs_per_molecule", "batch", "train_mol_per_s", "sample_mol_steps_per_s", "peak_rss_mb"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    out = args.out or str(RESULTS / "train_speed_atoms.json")
    atomic_write(out, json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
