"""torchrun with Gloo on CPU, 2 processes: DDP training equals single-process training on the same
global batch, ranks stay identical, and sharded sampling writes exactly N reproducible molecules."""

import json
import os
import subprocess
import sys

import pytest
import torch

from molediff.checkpoint import safe_torch_load
from molediff.training import CHECKPOINT, EMA_MODEL, LOG

TINY = ["--model-hidden", "16", "--model-layers", "2", "--valid-molecules", "32", "--eval-samples", "0",
        "--eval-every-steps", "0", "--no-progress", "--threads", "1"]


def torchrun(*args, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "molediff", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def single(*args):
    from molediff.cli import main

    assert main(list(args)) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from molediff.data.qm9 import load_qm9_tensors

    load_qm9_tensors(progress=False)  # a fresh machine builds the QM9 cache here, outside the timed run
    root = tmp_path_factory.mktemp("ddp")
    out = torchrun("train", "--out", str(root / "ddp"), "--batch-size", "4", "--max-steps", "5", *TINY)
    single("train", "--out", str(root / "single"), "--batch-size", "8", "--max-steps", "5", *TINY)
    return root, out


def test_ddp_training_matches_single_process_on_the_global_batch(runs):
    root, out = runs
    assert "effective batch 8" in out
    a, b = safe_torch_load(root / "ddp" / CHECKPOINT), safe_torch_load(root / "single" / CHECKPOINT)
    assert a["step"] == b["step"] == 5 and a["molecules_seen"] == b["molecules_seen"] == 40
    moved = 0.0
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=1e-6, rtol=1e-5, msg=k)
        moved = max(moved, float((a["model"][k] - a["ema"][k]).abs().max()))
    assert moved > 0  # training really changed the weights


def test_ddp_ranks_hold_identical_parameters(runs):
    root, _ = runs
    events = [json.loads(line) for line in (root / "ddp" / LOG).read_text().splitlines()]
    sync = [e for e in events if e["event"] == "ranks_in_sync"]
    assert sync and sync[-1]["world_size"] == 2 and sync[-1]["step"] == 5


def test_ddp_resume(runs):
    root, _ = runs
    torchrun("train", "--out", str(root / "ddp"), "--resume", "--batch-size", "4", "--max-steps", "7", *TINY)
    assert safe_torch_load(root / "ddp" / CHECKPOINT)["step"] == 7


def _records(path):
    text = path.read_text()
    blocks = [b for b in text.split("$$$$\n") if b.strip()]
    return blocks


def test_distributed_sampling_writes_exactly_n_reproducibly(runs):
    root, _ = runs
    model = root / "single" / EMA_MODEL
    common = ["--steps", "5", "--batch-size", "3", "--checkpoint", str(model), "--no-progress", "--threads", "1"]
    torchrun("sample", "-n", "7", "--out", str(root / "a.sdf"), *common)
    torchrun("sample", "--num-molecules", "7", "--out", str(root / "b.sdf"), *common)
    a = _records(root / "a.sdf")
    assert len(a) == 7
    assert (root / "a.sdf").read_text() == (root / "b.sdf").read_text()
    coords = ["\n".join(block.splitlines()[4:8]) for block in a]
    assert len(set(coords)) == 7  # no duplicated molecules from colliding seeds
    assert not list(root.glob(".a.sdf.rank*"))  # shards merged and removed
