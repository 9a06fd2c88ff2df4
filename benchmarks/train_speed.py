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
    ap.add_argument("--out", default=str(RESULTS / "train_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
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


if __name__ == "__main__":
    raise SystemExit(main())
