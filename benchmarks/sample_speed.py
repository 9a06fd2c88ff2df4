"""End-to-end sampling speed of ``molediff sample`` (molecules per second, SDF writing included).

Runs the real CLI in-process at the default number of steps and at 1,000 (ancestral DDPM), on CPU
with ``--threads`` threads, and on CUDA when available. Prints a table and writes
``benchmarks/results/sample_speed.json``.

    python benchmarks/sample_speed.py --n 200
    python benchmarks/sample_speed.py --n 200 --compile    # eager and ``--compile`` rows (warm-up included)

Samplers (issue 30): ``--runs SAMPLER:STEPS ...`` times those instead of ``--steps`` (DDIM); with
``--subprocess`` each run is a fresh ``python -m molediff sample`` process (interpreter start, imports
and model load counted, as a user sees it; ``OMP_NUM_THREADS`` = ``--threads``), and its summary line
(model-bond and lookup quality) is kept in the JSON. The old default against a candidate new one::

    python benchmarks/sample_speed.py --n 1000 --threads 1 --subprocess --compile \\
        --runs ddim:100 dpm++2m-sde:25 --out benchmarks/results/sample_speed_samplers.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from molediff.atomic import atomic_write
from molediff.cli import main as cli
from molediff.sampling import DEFAULT_MODEL
from molediff.config import DEFAULT_STEPS

RESULTS = Path(__file__).resolve().parent / "results"
from molediff.diffusion.sampler_table import SAMPLERS  # noqa: E402 - the one list
from molediff.config import PRECISIONS  # noqa: E402 - the one list
from molediff.models.precision import native_bfloat16, resolve_precision  # noqa: E402


def parse_run(spec: str) -> tuple[str, int]:
    """``SAMPLER:STEPS`` (``dpm++2m:20``), or a bare step count (DDIM)."""
    sampler, _, steps = spec.rpartition(":")
    sampler = sampler or "ddim"
    if sampler not in SAMPLERS or not steps.isdigit():
        raise SystemExit(f"--runs: expected SAMPLER:STEPS with SAMPLER one of {', '.join(SAMPLERS)}, got {spec!r}")
    return sampler, int(steps)


def summary(text: str) -> dict:
    """The quality figures of ``molediff sample``'s summary lines (percent)."""
    out = {}
    for key, pattern in (("model_connected_valid", r"model bonds.*?connected valid ([\d.]+)%"),
                         ("model_molecule_stability", r"model bonds.*?molecule stability ([\d.]+)%"),
                         ("lookup_valid", r"lookup bonds.*?valid ([\d.]+)%"),
                         ("lookup_molecule_stability", r"lookup bonds.*?molecule stability ([\d.]+)%")):
        if m := re.search(pattern, text):
            out[key] = float(m.group(1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="molecules per measurement (default 200)")
    ap.add_argument("--steps", default=f"{DEFAULT_STEPS},1000", help=f"step counts (default {DEFAULT_STEPS},1000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default=None, help="a model file (default: the bundled model named by --model)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name (default {DEFAULT_MODEL}; qm9, qm9-joint, qm9-cond)")
    ap.add_argument("--compile", action="store_true", help="also time 'molediff sample --compile' (its warm-up counted)")
    ap.add_argument("--runs", nargs="+", default=None, metavar="SAMPLER:STEPS",
                    help="sampler and step count per run, e.g. ddim:100 dpm++2m:20 (instead of --steps, which are DDIM)")
    ap.add_argument("--subprocess", action="store_true",
                    help="run each measurement as a fresh 'python -m molediff sample' process (start-up and imports counted)")
    ap.add_argument("--precision", nargs="+", default=["auto"], choices=PRECISIONS,
                    help="one row per precision of the network's matrix products (molediff sample --precision; default auto, "
                         "its default: bfloat16 on a CPU with native bfloat16)")
    ap.add_argument("--workers", nargs="+", default=["auto"],
                    help="one row per worker count (molediff sample --workers; 'auto', the default, leaves the flag out: "
                         "one process per core for a large request)")
    ap.add_argument("--batch-size", nargs="+", default=["auto"],
                    help="one row per batch size (molediff sample --batch-size; 'auto', the default, leaves the flag out)")
    ap.add_argument("--repeat", type=int, default=1, help="run the whole list of rows this many times, interleaved (default 1)")
    ap.add_argument("--out", default=str(RESULTS / "sample_speed.json"))
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    runs = [parse_run(r) for spec in args.runs for r in spec.split(",")] if args.runs else \
        [("ddim", int(s)) for s in args.steps.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            for (sampler, steps), compiled, prec, workers, batch in [(r, c, p, w, b) for _ in range(args.repeat) for r in runs
                                                                     for c in ((False, True) if args.compile else (False,))
                                                                     for p in args.precision for w in args.workers
                                                                     for b in args.batch_size]:
                cmd = ["sample", "--n", str(args.n), "--steps", str(steps), "--out", f"{tmp}/s.sdf", "--device", device,
                       "--threads", str(args.threads), "--no-progress", "--precision", prec] + (["--compile"] if compiled else [])
                cmd += ["--workers", workers] if workers != "auto" and device == "cpu" else []
                cmd += ["--batch-size", batch] if batch != "auto" else []
                cmd += ["--sampler", sampler] if sampler != "ddim" else []
                cmd += ["--checkpoint", args.checkpoint] if args.checkpoint else ["--model", args.model]
                print("molediff " + " ".join(cmd), flush=True)
                t0 = time.perf_counter()
                if args.subprocess:
                    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                    proc = subprocess.run([sys.executable, "-m", "molediff", *cmd], env=env, capture_output=True, text=True)
                    rc, text = proc.returncode, proc.stdout + proc.stderr
                    print(proc.stdout, end="", flush=True)
                else:
                    buffer = io.StringIO()
                    with contextlib.redirect_stdout(buffer):
                        rc = cli(cmd)
                    text = buffer.getvalue()
                    print(text, end="", flush=True)
                dt = time.perf_counter() - t0
                if rc != 0:
                    raise SystemExit(f"molediff sample failed with exit code {rc}\n{text[-2000:]}")
                processes = re.search(r"(\d+) workers\)", text)
                rows.append({"model": args.checkpoint or args.model, "device": device, "threads": args.threads, "sampler": sampler,
                             "workers": int(processes.group(1)) if processes else 1, "batch_size": batch,
                             "steps": steps, "compile": compiled, "precision": resolve_precision(prec, device), "n": args.n, "subprocess": args.subprocess,
                             "seconds": round(dt, 2), "mol_per_s": round(args.n / dt, 3), **summary(text)})
    meta = {"date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "native_bfloat16": native_bfloat16("cpu"),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}
    print(meta)
    print("device | threads | workers | batch | sampler | steps | compile | precision | n | seconds | mol/s | model conn. valid | "
          "model mol stab | lookup mol stab")
    for r in rows:
        quality = " | ".join(f"{r[k]:.1f}" if k in r else "-" for k in ("model_connected_valid", "model_molecule_stability",
                                                                          "lookup_molecule_stability"))
        print(f"{r['device']} | {r['threads']} | {r['workers']} | {r['batch_size']} | {r['sampler']} | {r['steps']} | {'yes' if r['compile'] else 'no'} | {r['precision']} | {r['n']} | "
              f"{r['seconds']} | {r['mol_per_s']} | {quality}")
    atomic_write(args.out, json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
