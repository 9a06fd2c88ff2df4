"""benchmarks/learning_curves.py: the steps-per-CPU-hour reading and the snapshot lookup it scores."""

import json
import sys
from pathlib import Path

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def curves():
    return load_script("benchmarks/learning_curves.py")


def _log(run: Path, records: list[dict]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_rate_leaves_out_the_warm_up(curves, tmp_path):
    # slow compiled first steps, then 100 steps per CPU-minute: 6,000 per CPU-hour
    recs = [{"event": "train", "step": 50, "minutes": 2.0}, {"event": "train", "step": 300, "minutes": 4.0},
            {"event": "eval", "step": 400, "minutes": 5.0, "val_loss": 1.0},
            {"event": "train", "step": 1300, "minutes": 14.0}]
    _log(tmp_path / "run", recs)
    first, last, rate = curves.rate_from_log(tmp_path / "run")
    assert (first, last) == (300, 1300) and rate == pytest.approx(6000)
    _log(tmp_path / "short", recs[:1])
    with pytest.raises(SystemExit, match="too few"):
        curves.rate_from_log(tmp_path / "short")


def test_score_names_the_missing_snapshots_before_sampling(curves, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _log(run, [{"event": "eval", "step": 1000, "val_mse": 0.2, "val_loss": 0.2, "val_loss_raw": 0.3}])
    (run / "snapshots").mkdir()
    (run / "snapshots" / "ema_step0001000.pt").write_bytes(b"")
    assert curves.validation_at(run, 1000) == {"val_mse": 0.2, "val_loss": 0.2}
    monkeypatch.setattr(sys, "argv", ["learning_curves.py", "score", "--hours", "0.5,1", "--run", f"a={run}:1000",
                                      "--out", str(tmp_path / "out.json")])
    with pytest.raises(SystemExit, match="ema_step0000500.pt") as err:
        curves.main()
    assert "ema_step0001000.pt" not in str(err.value)  # only the absent one is named
    assert not (tmp_path / "out.json").exists()
