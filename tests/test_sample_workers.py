"""``molediff sample --workers``: worker processes give the file one process gives on the same threads
per process (records, order and names), targets drawn in a range included; the drug-like summary adds
up what each worker checked; a stop keeps the complete records and leaves no worker file behind; bad
requests are refused before any worker starts."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.children import child, finish

QUICK = ["--steps", "6", "--no-progress", "--no-compile"]


def _sample(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "molediff", "sample", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".worker" in p.name)


@pytest.mark.parametrize("fmt", ["sdf", "xyz"])
def test_workers_write_what_one_process_writes(tmp_path, fmt):
    one, two = tmp_path / f"one.{fmt}", tmp_path / f"two.{fmt}"
    a = _sample("--n", "9", "--batch-size", "2", "--workers", "1", "--threads", "1", "--out", str(one), *QUICK)
    b = _sample("--n", "9", "--batch-size", "2", "--workers", "2", "--threads", "2", "--out", str(two), *QUICK)
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    assert "2 workers)" in b.stdout and "workers)" not in a.stdout
    assert one.read_text() == two.read_text()  # same molecules, batch order, records named 0..8
    if fmt == "sdf":
        assert re.findall(r"^molecule_(\d+)$", two.read_text(), flags=re.M) == [str(i) for i in range(9)]
    assert _leftovers(tmp_path) == []


def test_spawned_workers_write_what_one_process_on_their_threads_writes(tmp_path):
    # two threads per worker: started as fresh interpreters (spawn), each loading the model itself
    a = _sample("--n", "6", "--batch-size", "3", "--workers", "1", "--threads", "2", "--out", str(tmp_path / "one.sdf"), *QUICK)
    b = _sample("--n", "6", "--batch-size", "3", "--workers", "2", "--threads", "4", "--out", str(tmp_path / "two.sdf"), *QUICK)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert "2 workers)" in b.stdout
    assert (tmp_path / "one.sdf").read_text() == (tmp_path / "two.sdf").read_text()
    assert _leftovers(tmp_path) == []


def test_workers_draw_the_targets_of_a_range_as_one_process_does(tmp_path):
    common = ["--model", "qm9-cond", "--condition", "gap=0.2:0.3", "--n", "6", "--batch-size", "2", *QUICK]
    a = _sample(*common, "--workers", "1", "--threads", "1", "--out", str(tmp_path / "one.sdf"))
    b = _sample(*common, "--workers", "3", "--threads", "3", "--out", str(tmp_path / "three.sdf"))
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    text = (tmp_path / "three.sdf").read_text()
    assert text == (tmp_path / "one.sdf").read_text()
    targets = re.findall(r"<molediff_target_gap>\n(\S+)", text)
    assert len(targets) == 6 and len(set(targets)) == 6 and all(0.2 <= float(t) <= 0.3 for t in targets)


def test_druglike_summary_adds_up_the_workers_checks(tmp_path):
    out = tmp_path / "d.sdf"
    r = _sample("--model", "druglike", "--n", "6", "--batch-size", "3", "--workers", "2", "--restarts", "0",
                "--out", str(out), "--steps", "40", "--no-progress", "--no-compile")
    assert r.returncode == 0, r.stderr
    assert "wrote 6 molecules" in r.stdout and "2 workers)" in r.stdout
    assert "drug-likeness (distinct valid molecules)" in r.stdout and "ring systems" in r.stdout
    pb = re.search(r"PoseBusters-valid \((\d+) molecules: the first of each of 2 processes\)", r.stdout)
    if pb is None:  # without the optional package, or no valid molecule among six quick ones
        assert "PoseBusters" not in r.stdout or "pip install" in r.stdout
    else:
        assert int(pb.group(1)) == 6
    assert out.read_text().count("$$$$") == 6
    assert _leftovers(tmp_path) == []


def test_bad_worker_requests_are_refused_before_sampling(tmp_path):
    r = _sample("--n", "4", "--workers", "0", "--out", str(tmp_path / "x.sdf"), *QUICK)
    assert r.returncode != 0 and "--workers must be ≥ 1" in r.stderr and "Traceback" not in r.stderr
    r = _sample("--n", "4", "--workers", "2", "--device", "cuda", "--out", str(tmp_path / "x.sdf"), *QUICK)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    r = _sample("--n", "4", "--workers", "2", "--steps", "100000", "--out", str(tmp_path / "x.sdf"), "--no-progress")
    assert r.returncode != 0 and "Traceback" not in r.stderr  # the request is checked before any worker starts
    assert not (tmp_path / "x.sdf").exists() and _leftovers(tmp_path) == []


@contextlib.contextmanager
def _sampling_with_workers(out: Path):
    """A long two-worker run into ``out``, yielded once both workers have opened their files."""
    cmd = [sys.executable, "-m", "molediff", "sample", "--n", "400", "--batch-size", "1", "--workers", "2",
           "--steps", "40", "--no-compile", "--no-progress", "--out", str(out)]
    with child(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
               env={**os.environ, "OMP_NUM_THREADS": "1"}) as proc:
        deadline = time.time() + 120
        while time.time() < deadline and len(_leftovers(out.parent)) < 2:
            time.sleep(0.2)
        yield proc


def test_a_stop_keeps_the_complete_records_and_no_worker_files(tmp_path):
    out = tmp_path / "s.sdf"
    with _sampling_with_workers(out) as proc:
        time.sleep(4)
        proc.send_signal(signal.SIGTERM)
        _, err = finish(proc, timeout=120)
    assert proc.returncode == 130, err
    match = re.search(r"interrupted after (\d+) of 400 molecules", err)
    assert match, err
    done = int(match.group(1))
    assert 0 < done < 400
    text = out.read_text()
    assert text.count("$$$$") == done and text.endswith("$$$$\n")
    assert _leftovers(tmp_path) == []


def test_workers_end_when_the_main_process_is_killed_and_the_next_run_clears_their_files(tmp_path):
    out = tmp_path / "k.sdf"
    with _sampling_with_workers(out) as proc:
        workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()]
        assert workers, "no worker processes found"
        proc.kill()
        finish(proc, timeout=60)
    deadline = time.time() + 60  # each worker sees its parent gone at its next step and stops
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)
    assert not out.exists()
    r = _sample("--n", "2", "--out", str(out), *QUICK)
    assert r.returncode == 0, r.stderr
    assert _leftovers(tmp_path) == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def test_the_default_worker_count_follows_the_request_size(monkeypatch):
    """Without --workers: one worker per core (or per --threads) for a request of at least
    WORKERS_MIN_MOLECULE_STEPS molecule-steps, at most one per batch; one process below it, off the CPU
    and under torchrun."""
    from types import SimpleNamespace

    from molediff import distributed
    from molediff.commands.sample import _worker_count
    from molediff.config import WORKERS_MIN_MOLECULE_STEPS

    monkeypatch.setattr(distributed, "available_cores", lambda: 2)
    args = SimpleNamespace(device="cpu", workers=None, threads=0)
    ctx = SimpleNamespace(enabled=False)

    def req(n: int, steps: int, batch_size: int = 250):
        return SimpleNamespace(n=n, batch_size=batch_size, molecule_steps=n * steps)

    assert _worker_count(args, None, req(WORKERS_MIN_MOLECULE_STEPS // 10, 10), ctx) == 2  # qm9-fast's 500 at 10 steps
    assert _worker_count(args, None, req(WORKERS_MIN_MOLECULE_STEPS // 10 - 1, 10), ctx) == 1
    assert _worker_count(args, None, req(1000, 75, batch_size=1000), ctx) == 1  # one batch: one process
    assert _worker_count(SimpleNamespace(device="cpu", workers=None, threads=3), None, req(1000, 75), ctx) == 3
    assert _worker_count(SimpleNamespace(device="cpu", workers=5, threads=0), None, req(1000, 10), ctx) == 4  # one per batch
    assert _worker_count(args, None, req(1000, 75), SimpleNamespace(enabled=True)) == 1
    assert _worker_count(SimpleNamespace(device="cuda", workers=None, threads=0), None, req(1000, 75), ctx) == 1
