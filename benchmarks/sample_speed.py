"""End-to-end sampling speed of ``molediff sample`` (molecules per second, SDF writing included).

Runs the real CLI in-process at the default number of steps and at 1,000 (ancestral DDPM), on CPU
with ``--threads`` threads, and on CUDA when available. Prints a table and writes
``benchmarks/results/sample_speed.json``.

    python benchmarks/sample_speed.py --n 200
    python benchmarks/sample_speed.py --n 200 --compile    # eager and ``--compile`` rows (warm-up included)
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from molediff.atomic import atomic_write
from molediff.cli import main as cli
from molediff.sampling import DEFAULT_MODEL
from molediff.config import DEFAULT_STEPS

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="molecules per measurement (default 200)")
    ap.add_argument("--steps", default=f"{DEFAULT_STEPS},1000", help=f"step counts (default {DEFAULT_STEPS},1000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default=None, help="a model file (default: the bundled model named by --model)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name (default {DEFAULT_MODEL}; qm9, qm9-joint, qm9-cond)")
    ap.add_argument("--compile", action="store_true", help="also time 'molediff sample --compile' (its warm-up counted)")
    ap.add_argument("--out", default=str(RESULTS / "sample_speed.json"))
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            for steps, compiled in [(int(s), c) for s in args.steps.split(",") for c in ((False, True) if args.compile else (False,))]:
                cmd = ["sample", "--n", str(args.n), "--steps", str(steps), "--out", f"{tmp}/s.sdf", "--device", device,
                       "--threads", str(args.threads), "--no-progress"] + (["--compile"] if compiled else [])
                cmd += ["--checkpoint", args.checkpoint] if args.checkpoint else ["--model", args.model]
                t0 = time.perf_counter()
                rc = cli(cmd)
                dt = time.perf_counter() - t0
                if rc != 0:
                    raise SystemExit(f"molediff sample failed with exit code {rc}")
                rows.append({"model": args.checkpoint or args.model, "device": device, "threads": args.threads, "steps": steps, "compile": compiled, "n": args.n,
                             "seconds": round(dt, 2), "mol_per_s": round(args.n / dt, 3)})
    meta = {"date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine(), "torch": torch.__version__}
    print(meta)
    print("device | threads | steps | compile | n | seconds | mol/s")
    for r in rows:
        print(f"{r['device']} | {r['threads']} | {r['steps']} | {'yes' if r['compile'] else 'no'} | {r['n']} | {r['seconds']} | {r['mol_per_s']}")
    atomic_write(args.out, json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
