"""Nothing lost, nothing run: interrupts and kills driven by real signals on real subprocesses, bad
input, stale files, concurrent writers, progress, and a fast --help (issue: reliability)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from molediff.checkpoint import save_model_file
from molediff.cli import main
from molediff.config import ModelConfig, TrainConfig
from molediff.errors import UserError
from molediff.models import build_network
from molediff.molecular import MolecularDiffusion
from tests.children import child, finish

HISTOGRAM = [0, 0, 0, 1, 2, 2, 1]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = TrainConfig(model=ModelConfig(hidden=16, layers=2))
    net = build_network(config.model, MolecularDiffusion(config.diffusion))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model_file(path, net.state_dict(), config, {"step": 0, "size_histogram": HISTOGRAM})
    return path


def _start_sampling(model: Path, out: Path, n: int = 100_000):
    # many molecules per batch and all 1000 ancestral steps: the first batch takes many seconds
    cmd = [sys.executable, "-m", "molediff", "sample", "--checkpoint", str(model), "-n", str(n), "--batch-size", "2000",
           "--steps", "1000", "--threads", "1", "--no-progress", "--out", str(out)]
    return child(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {finish(proc, 30)}")
        time.sleep(0.2)
    raise AssertionError("timed out")


def _temporaries(folder: Path, name: str) -> list[Path]:
    return list(folder.glob(f".{name}.*.tmp"))


def test_ctrl_c_before_the_first_molecule_keeps_an_existing_file_and_publishes_nothing(model, tmp_path):
    out = tmp_path / "out.sdf"
    out.write_text("earlier results\n")
    with _start_sampling(model, out) as proc:
        _wait_for(lambda: bool(_temporaries(tmp_path, "out.sdf")), proc)  # sampling has begun
        proc.send_signal(signal.SIGINT)
        _, err = finish(proc)
    assert proc.returncode == 130, err
    assert "nothing written" in err and "left as it was" in err
    assert out.read_text() == "earlier results\n"
    assert not _temporaries(tmp_path, "out.sdf") and not (tmp_path / ".out.sdf.lock").exists()
    # the same with no earlier file: no empty SDF appears
    fresh = tmp_path / "fresh.sdf"
    with _start_sampling(model, fresh) as proc:
        _wait_for(lambda: bool(_temporaries(tmp_path, "fresh.sdf")), proc)
        proc.send_signal(signal.SIGINT)
        finish(proc)
    assert proc.returncode == 130 and not fresh.exists()


def test_kill_9_leftovers_are_cleaned_and_concurrent_writers_refused(model, tmp_path, capsys):
    out = tmp_path / "out.sdf"
    with _start_sampling(model, out) as proc:
        _wait_for(lambda: bool(_temporaries(tmp_path, "out.sdf")), proc)
        # a second run into the same output while the first is alive is refused, clearly
        assert main(["sample", "--checkpoint", str(model), "-n", "2", "--steps", "2", "--no-progress", "--out", str(out)]) == 2
        assert "another process" in capsys.readouterr().err
        proc.send_signal(signal.SIGKILL)
        finish(proc, 60)
    assert _temporaries(tmp_path, "out.sdf") and (tmp_path / ".out.sdf.lock").exists()  # what a kill -9 leaves
    # the next run cleans the dead process's leftovers and writes its file
    assert main(["sample", "--checkpoint", str(model), "-n", "3", "--steps", "2", "--no-progress", "--out", str(out)]) == 0
    assert not _temporaries(tmp_path, "out.sdf") and not (tmp_path / ".out.sdf.lock").exists()
    assert out.read_text().count("$$$$") == 3


def test_negative_seed_is_a_clear_error(model, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(model), "-n", "2", "--seed", "-1", "--out", str(tmp_path / "a.sdf")]) == 2
    assert "--seed must be ≥ 0" in capsys.readouterr().err and not (tmp_path / "a.sdf").exists()
    from molediff.sampling import load_pretrained

    with pytest.raises(UserError, match="seed"):
        next(load_pretrained(model).sample_arrays(2, steps=2, seed=-1))


def test_progress_moves_with_reverse_steps(model):
    from molediff.sampling import load_pretrained

    calls = []
    got = list(load_pretrained(model).sample_arrays(5, steps=7, batch_size=3, on_step=lambda i, s, k: calls.append((i, s, k))))
    assert len(got) == 5
    assert calls == [(i, 7, 3) for i in range(7)] + [(i, 7, 2) for i in range(7)]


def test_help_does_not_import_torch():
    code = ("import sys\nfrom molediff.cli import main\nfor c in ('sample', 'train', 'evaluate'):\n"
            "    try:\n        main([c, '--help'])\n    except SystemExit:\n        pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_killed_training_resumes_from_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "molediff", "train", "--out", str(out), "--batch-size", "8", "--model-hidden", "16",
           "--model-layers", "1", "--valid-molecules", "32", "--eval-samples", "0", "--eval-every-steps", "0",
           "--checkpoint-minutes", "0.02", "--no-progress", "--threads", "1"]
    with child(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV) as proc:
        _wait_for(lambda: (out / "checkpoint.pt").exists(), proc, timeout=180)
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        finish(proc, 60)
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "1000000", "--max-minutes", "0.05",
                 "--no-progress"]) == 0
    assert not list(out.glob(".*.tmp"))


def test_training_data_report_is_readable_and_size_outliers_are_named(tmp_path, capsys):
    from molediff.data.molecules import MoleculeSet, ptr_from_counts
    from molediff.training import warn_size_outliers

    sizes = [18] * 20 + [500]
    mols = MoleculeSet(torch.zeros(sum(sizes), 3), torch.zeros(sum(sizes), dtype=torch.long), ptr_from_counts(torch.tensor(sizes)),
                       [f"f.xyz:{i}" for i in range(21)])
    lines = warn_size_outliers(mols)
    assert len(lines) == 1 and "500 atoms (f.xyz:20)" in lines[0] and "atoms²" in lines[0]
    assert warn_size_outliers(mols.subset(np.arange(20))) == []
    # molediff train --data prints the readable report, not a repr
    xyz = tmp_path / "m.xyz"
    xyz.write_text("".join(f"3\nwater {i}\nO 0 0 0\nH 0.96 0 0.1\nH -0.24 0.93 0.2\n" for i in range(4)))
    assert main(["train", "--data", str(xyz), "--out", str(tmp_path / "run"), "--max-steps", "1", "--batch-size", "2",
                 "--model-hidden", "8", "--model-layers", "1", "--eval-samples", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "read 4 of 4 molecule record(s)" in out and "FileReadReport(" not in out
