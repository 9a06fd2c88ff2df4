"""Training: determinism, exact resume, checkpoint integrity, interrupts and the CLI."""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from molediff.checkpoint import load_model_file, safe_torch_load, save_model_file
from molediff.cli import main
from molediff.config import ModelConfig, TrainConfig
from molediff.errors import UserError
from molediff.commands.train import add_arguments, config_from_args
from molediff.training import CHECKPOINT, EMA_MODEL, LOG, Trainer, train
from tests.children import child, finish


def tiny(**kw) -> TrainConfig:
    base = dict(model=ModelConfig(hidden=16, layers=2), batch_size=16, valid_molecules=64, eval_every_steps=0,
                eval_samples=0, threads=1, checkpoint_minutes=100.0)
    base.update(kw)
    return TrainConfig(**base)


def _weights(run_dir):
    return safe_torch_load(Path(run_dir) / CHECKPOINT)


def test_same_seed_same_weights(tmp_path):
    train(tiny(max_steps=12), tmp_path / "a", progress=False)
    train(tiny(max_steps=12), tmp_path / "b", progress=False)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    c = tiny(max_steps=12, seed=1)
    train(c, tmp_path / "c", progress=False)
    assert any(not torch.equal(a["model"][k], _weights(tmp_path / "c")["model"][k]) for k in a["model"])


def test_resume_continues_exactly(tmp_path):
    train(tiny(max_steps=16), tmp_path / "straight", progress=False)
    train(tiny(max_steps=9), tmp_path / "split", progress=False)
    train(tiny(max_steps=16), tmp_path / "split", resume=True, progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a["step"] == b["step"] == 16
    for part in ("model", "ema"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], atol=0, rtol=0, msg=f"{part}.{k}")
    log = [json.loads(x) for x in (tmp_path / "split" / LOG).read_text().splitlines()]
    assert [r["step"] for r in log if r["event"] == "eval"] == [9, 16]


def test_existing_run_needs_resume_and_missing_run_cannot_resume(tmp_path):
    train(tiny(max_steps=2), tmp_path / "r", progress=False)
    with pytest.raises(UserError, match="--resume"):
        Trainer(tiny(max_steps=4), tmp_path / "r")
    with pytest.raises(UserError, match="no checkpoint"):
        Trainer(tiny(), tmp_path / "nothing", resume=True)


def test_corrupted_checkpoint_is_reported_not_loaded(tmp_path):
    train(tiny(max_steps=2), tmp_path / "r", progress=False)
    ckpt = tmp_path / "r" / CHECKPOINT
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupted"):
        Trainer(tiny(max_steps=4), tmp_path / "r", resume=True)
    # the shippable EMA file carries a checksum of its weights
    blob = torch.load(tmp_path / "r" / EMA_MODEL, weights_only=False)
    key = next(iter(blob["state_dict"]))
    blob["state_dict"][key] = blob["state_dict"][key] + 1.0
    torch.save(blob, tmp_path / "tampered.pt")
    with pytest.raises(UserError, match="integrity"):
        load_model_file(tmp_path / "tampered.pt")
    state, cfg, meta = load_model_file(tmp_path / "r" / EMA_MODEL)
    assert cfg.model.hidden == 16 and meta["step"] == 2


def test_config_json_round_trip_and_unknown_fields(tmp_path):
    cfg = tiny(lr=1e-3)
    cfg.diffusion.parametrization = "eps"
    cfg.save_json(tmp_path / "c.json")
    assert TrainConfig.load_json(tmp_path / "c.json") == cfg
    (tmp_path / "bad.json").write_text(json.dumps({"learning_rate": 1}))
    with pytest.raises(UserError, match="unknown"):
        TrainConfig.load_json(tmp_path / "bad.json")


def test_cli_trains_and_rejects_bad_options(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--max-steps", "3", "--batch-size", "8", "--model-hidden", "16", "--model-layers", "1",
            "--valid-molecules", "32", "--eval-samples", "0", "--no-progress", "--diffusion-parametrization", "eps"]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["diffusion"]["parametrization"] == "eps" and cfg["model"]["hidden"] == 16
    assert (out / EMA_MODEL).exists()
    assert main(["train", "--out", str(tmp_path / "x"), "--diffusion-parametrization", "v-pred"]) == 2
    assert "parametrization" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "y"), "--lr", "-1"]) == 2
    assert main(["train", "--out", str(tmp_path / "y"), "--seed", "-1"]) == 2
    assert "--seed must be ≥ 0" in capsys.readouterr().err
    # a fresh run into a folder holding another run's log (but no checkpoint) is refused, nothing appended
    log_before = (out / LOG).read_text()
    (out / CHECKPOINT).unlink()
    assert main(args) == 2
    assert "already holds a run's log" in capsys.readouterr().err and (out / LOG).read_text() == log_before


def test_interrupt_saves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "molediff", "train", "--out", str(out), "--batch-size", "8", "--model-hidden", "16",
           "--model-layers", "1", "--valid-molecules", "32", "--eval-samples", "0", "--eval-every-steps", "0",
           "--no-progress", "--threads", "1"]
    with child(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        deadline = time.time() + 120
        while time.time() < deadline and not ((out / LOG).exists() and (out / LOG).read_text().strip()):
            time.sleep(0.5)  # wait for the first 50 steps to be logged
        proc.send_signal(signal.SIGINT)
        output, _ = finish(proc)
    assert proc.returncode == 130, output  # interrupted: non-zero, as `molediff sample`
    assert "continue with --resume" in output
    step = _weights(out)["step"]
    assert step >= 50
    assert main(["train", "--out", str(out), "--resume", "--max-steps", str(step + 2), "--no-progress", "--eval-samples", "0"]) == 0
    assert _weights(out)["step"] == step + 2


def test_resume_may_change_the_learning_rate_and_otherwise_keeps_the_runs(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--out", str(out), "--batch-size", "8", "--model-hidden", "16", "--model-layers", "1", "--valid-molecules", "32",
              "--eval-samples", "0", "--eval-every-steps", "0", "--no-progress", "--threads", "1"]
    assert main(["train", *common, "--max-steps", "3", "--lr", "1e-3"]) == 0
    # resumed without --lr: the run's own rate, not the default
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "5", "--no-progress"]) == 0
    state = _weights(out)
    assert state["step"] == 5 and state["config"]["lr"] == 1e-3
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [1e-3]
    # a lower rate for a final annealing phase reaches the optimiser and is logged
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "7", "--lr", "2e-4", "--no-progress"]) == 0
    state = _weights(out)
    assert state["step"] == 7 and state["config"]["lr"] == 2e-4
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [2e-4]
    events = [json.loads(x) for x in (out / LOG).read_text().splitlines()]
    assert [e for e in events if e["event"] == "lr"] == [{"event": "lr", "step": 5, "from": 1e-3, "to": 2e-4}]
    # the recipe cannot change on resume: a different width is refused, naming the field
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "8", "--model-hidden", "32", "--no-progress"]) == 2
    assert _weights(out)["step"] == 7 and _weights(out)["config"]["model"]["hidden"] == 16
    assert "fixed by this run: model.hidden" in capsys.readouterr().err


def test_compile_option_parses_and_round_trips(tmp_path):
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert config_from_args(p.parse_args(["--compile"])).compile is True
    assert config_from_args(p.parse_args(["--no-compile"])).compile is False
    assert config_from_args(p.parse_args([])).compile is False
    cfg = tiny(compile=True)
    cfg.save_json(tmp_path / "c.json")
    assert TrainConfig.load_json(tmp_path / "c.json").compile is True
    # configs written before the option existed still load (off)
    d = tiny().to_dict()
    del d["compile"]
    assert TrainConfig.from_dict(d).compile is False


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_plain_names(tmp_path):
    train(tiny(max_steps=4), tmp_path / "eager", progress=False)
    train(tiny(max_steps=4, compile=True), tmp_path / "compiled", progress=False)
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "compiled")
    assert list(a["model"]) == list(b["model"])  # no "_orig_mod." prefixes: checkpoints interchange
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=1e-4, rtol=1e-3, msg=k)
    load_model_file(tmp_path / "compiled" / EMA_MODEL)


def test_init_from_model_file_continues_step_and_weights(tmp_path):
    train(tiny(max_steps=6), tmp_path / "src", progress=False)
    src_weights, _, meta = load_model_file(tmp_path / "src" / EMA_MODEL)
    # a fresh run started from the EMA weights continues the source's step count and clock
    t = Trainer(tiny(max_steps=9, init_from=str(tmp_path / "src" / EMA_MODEL)), tmp_path / "dst", progress=False)
    assert t.step == meta["step"] == 6 and t.elapsed == pytest.approx(meta["train_seconds"], abs=0.1)
    for k, v in src_weights.items():
        assert torch.equal(t.net.state_dict()[k], v) and torch.equal(t.ema.model.state_dict()[k], v), k
    t.run()
    assert _weights(tmp_path / "dst")["step"] == 9
    # a model file that carries its learning curve (as bundled models do) opens the new run's log with it
    save_model_file(tmp_path / "curve.pt", src_weights, TrainConfig.from_dict(_weights(tmp_path / "src")["config"]),
                    {**meta, "learning_curve": [{"step": 6, "minutes": 0.1, "val_loss": 0.5}]})
    train(tiny(max_steps=8, init_from=str(tmp_path / "curve.pt")), tmp_path / "dst2", progress=False)
    evals = [json.loads(x) for x in (tmp_path / "dst2" / LOG).read_text().splitlines() if '"eval"' in x]
    assert [e["step"] for e in evals] == [6, 8] and evals[0]["inherited_from"].endswith("curve.pt")
    assert _weights(tmp_path / "dst")["config"]["init_from"].endswith(EMA_MODEL)
    # a joint model (charges and bonds) may start from an atoms-only model: shared weights copied, the
    # new input columns at zero (so it first computes what the source did), the pair parts fresh
    from molediff.config import DiffusionConfig

    t3 = Trainer(tiny(init_from=str(tmp_path / "src" / EMA_MODEL), diffusion=DiffusionConfig(charges=True, bonds=True)),
                 tmp_path / "dst3", progress=False)
    assert t3.config.diffusion.bonds and t3.config.model.hidden == 16
    own = t3.net.state_dict()
    for k, v in src_weights.items():
        if own[k].shape == v.shape:
            assert torch.equal(own[k], v), k
    labels = t3.diffusion.input_labels()
    assert torch.equal(own["embed.weight"][:, labels.index("atom:C")], src_weights["embed.weight"][:, 1])
    assert float(own["embed.weight"][:, labels.index("charge:+1")].abs().max()) == 0.0
    assert "pair_embed.weight" in t3.fresh_parameters
    # the source fixes the architecture: asking for another one is refused, not silently ignored
    with pytest.raises(UserError, match="hidden"):
        Trainer(tiny(max_steps=9, init_from=str(tmp_path / "src" / EMA_MODEL), model=ModelConfig(hidden=32, layers=2)),
                tmp_path / "other", progress=False)


def test_every_train_option_is_explained(capsys):
    from dataclasses import fields

    from molediff.config import HELP, DiffusionConfig

    keys = [f.name for f in fields(TrainConfig) if f.name not in ("model", "diffusion")]
    keys += [f"model.{f.name}" for f in fields(ModelConfig)] + [f"diffusion.{f.name}" for f in fields(DiffusionConfig)]
    assert [k for k in keys if not HELP.get(k)] == []
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--diffusion-bonds" in out and "joint model" in out and "--init-from" in out


def test_warm_start_shape_comes_from_the_architecture():
    """The generic run state names no network field: a warm start keeps those its architecture's block lists."""
    from molediff.runstate import MAY_CHANGE, STATE_SHAPE, model_shape

    assert not any(k.startswith("model.") for k in STATE_SHAPE + MAY_CHANGE["init_from"])
    assert model_shape(TrainConfig()) == STATE_SHAPE + tuple(f"model.{k}" for k in ModelConfig.SHAPE)
    assert "model.pair_hidden" in model_shape(TrainConfig())


def test_a_warm_start_appends_layers_that_start_as_the_identity(tmp_path):
    """``--init-from M --model-layers N`` (more than M's): the new layers start as the identity (the network
    first computes exactly what M did, per-layer position bound kept) and train; fewer layers are refused."""
    from molediff.config import DiffusionConfig
    from molediff.models import build_network
    from molediff.molecular import MolecularDiffusion
    from molediff.state import MolState, remove_mean
    from tests.test_molecular import _set

    joint = DiffusionConfig(charges=True, bonds=True, self_condition=True)
    train(tiny(max_steps=3, diffusion=joint), tmp_path / "src", progress=False)
    src_weights, src_cfg, _ = load_model_file(tmp_path / "src" / EMA_MODEL)
    t = Trainer(tiny(max_steps=5, init_from=str(tmp_path / "src" / EMA_MODEL), model=ModelConfig(hidden=16, layers=5)),
                tmp_path / "deep", progress=False)
    assert t.config.model.layers == 5 and t.config.model.coord_range == pytest.approx(2.5 * src_cfg.model.coord_range)
    assert "layers.4 (appended, starts as the identity)" in t.fresh_parameters
    d = MolecularDiffusion(t.config.diffusion)
    src = build_network(src_cfg.model, d).double()
    src.load_state_dict(src_weights)
    deep = t.net.double()
    x = d.encode(_set([6, 4]).collate([0, 1]))
    g = torch.Generator().manual_seed(3)
    node = torch.randn(x.node.shape, generator=g, dtype=torch.float64)
    node[:, :3] = remove_mean(node[:, :3], x.graph.batch, x.graph.num_graphs)
    noisy = MolState(node, torch.randn(x.pair.shape, generator=g, dtype=torch.float64), x.graph, x.parts)
    tt = torch.tensor([200, 700])
    want, _ = d.predict(src, noisy, tt, self_cond=x)
    got, _ = d.predict(deep, noisy, tt, self_cond=x)
    torch.testing.assert_close(got.node, want.node, atol=1e-12, rtol=0)
    torch.testing.assert_close(got.pair, want.pair, atol=1e-12, rtol=0)
    t.net.float()
    t.run()
    after = load_model_file(tmp_path / "deep" / EMA_MODEL)[0]
    assert float(after["layers.4.node.2.weight"].abs().max()) > 0  # the appended layers learn
    with pytest.raises(UserError, match="append layers"):
        Trainer(tiny(init_from=str(tmp_path / "deep" / EMA_MODEL), model=ModelConfig(hidden=16, layers=3)),
                tmp_path / "shallow", progress=False)


def test_a_joint_models_checks_log_its_bond_type_tv(tmp_path):
    """A model that writes bonds: every training check logs the total variation between its sampled molecules'
    written bond types and the validation molecules' (NaN when an untrained network wrote no bond at all;
    the figure itself is tested in test_model_bonds.py)."""
    from molediff.config import DiffusionConfig

    train(tiny(max_steps=2, diffusion=DiffusionConfig(charges=True, bonds=True), model=ModelConfig(hidden=16, layers=2, pair_hidden=8),
               eval_every_steps=2, eval_samples=4, eval_sample_steps=5), tmp_path / "r", progress=False)
    evals = [json.loads(line) for line in (tmp_path / "r" / LOG).read_text().splitlines() if '"eval"' in line]
    assert evals and all(math.isnan(e["model_bond_type_tv"]) or 0 <= e["model_bond_type_tv"] <= 1 for e in evals)
