"""The image U-Net and the ``molediff image-demo`` pipeline built on the shared DDPM core."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from molediff.cli import main
from molediff.diffusion.schedule import NoiseSchedule
from molediff.image import demo
from molediff.image.unet import UNet, timestep_embedding


@pytest.fixture(autouse=True)
def _one_thread():
    """The tensors here are tiny, and on a busy shared machine two threads ran up to 50x slower than one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------ the network
@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({}, (3, 1, 8, 8)),
        ({"attention_at_lowest": False}, (2, 1, 8, 8)),
        ({"in_channels": 3, "base_channels": 16, "channel_mults": (1, 2, 2)}, (2, 3, 8, 8)),
        ({"base_channels": 8, "channel_mults": (1,), "num_res_blocks": 2}, (1, 1, 5, 7)),
        ({"base_channels": 8, "channel_mults": (1, 2)}, (2, 1, 16, 12)),
    ],
)
def test_unet_output_shape(kwargs, shape):
    torch.manual_seed(0)
    net = UNet(**kwargs)
    x = torch.randn(shape)
    out = net(x, torch.randint(0, 1000, (shape[0],)))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()


def test_unet_rejects_bad_shapes():
    net = UNet(base_channels=8, channel_mults=(1, 2))
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, 7, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(1, 2, 8, 8), torch.tensor([0]))


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 1, 999]), 32)
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb[0], torch.cat([torch.ones(16), torch.zeros(16)]))
    assert not torch.allclose(emb[1], emb[2])
    assert timestep_embedding(torch.tensor([5]), 7).shape == (1, 7)


def test_time_conditioning_changes_the_output():
    torch.manual_seed(0)
    net = UNet(base_channels=16).eval()
    x = torch.randn(1, 1, 8, 8).expand(4, 1, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    out = net(x, t)
    for i in range(1, 4):  # same image, different t: different predictions
        assert (out[i] - out[0]).abs().max() > 1e-3
    # same t: same prediction (rows are independent)
    torch.testing.assert_close(net(x, torch.full((4,), 10)), out[1:2].expand(4, 1, 8, 8))
    # a scalar t is broadcast to the batch
    torch.testing.assert_close(net(x, torch.tensor(500)), out[2:3].expand(4, 1, 8, 8))


def test_unet_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = UNet(base_channels=16)
    net(torch.randn(2, 1, 8, 8), torch.tensor([3, 700])).pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


# ------------------------------------------------------------------------------ demo pieces
def test_load_digits_tensor_range_and_pixels_roundtrip():
    x, y = demo.load_digits_tensor(return_labels=True)
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32 and y.shape == (1797,)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    from sklearn.datasets import load_digits

    np.testing.assert_allclose(demo.to_pixels(x).reshape(1797, 64).numpy(), load_digits().data, atol=1e-5)


def test_train_unet_is_deterministic_and_reduces_the_loss():
    data = demo.load_digits_tensor()[:256]
    schedule = NoiseSchedule.linear(1000)
    logs = []
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        net = UNet(base_channels=8, attention_at_lowest=False)
        log = []
        models.append(demo.train_unet(data, schedule, model=net, max_steps=30, batch_size=32, lr=3e-3,
                                      warmup_steps=5, seed=1, progress=False, log=log))
        logs.append(log)
    assert len(logs[0]) == 30 and models[0].train_steps == 30
    assert [v for _, v in logs[0]] == [v for _, v in logs[1]]
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    losses = [v for _, v in logs[0]]
    assert np.mean(losses[-10:]) < np.mean(losses[:5])
    assert not models[0].training  # the EMA copy comes back in eval mode


def test_train_unet_time_limit():
    data = demo.load_digits_tensor()[:64]
    net = UNet(base_channels=8, attention_at_lowest=False)
    t0 = time.perf_counter()
    m = demo.train_unet(data, NoiseSchedule.linear(100), model=net, max_seconds=1.0, max_steps=10**6,
                        batch_size=16, progress=False)
    assert time.perf_counter() - t0 < 10.0 and 1 <= m.train_steps < 10**6


def test_sample_digits_shape_range_and_seed():
    torch.manual_seed(0)
    net = UNet(base_channels=8, attention_at_lowest=False)
    schedule = NoiseSchedule.linear(50)
    a = demo.sample_digits(net, schedule, 5, num_steps=4, seed=3)
    b = demo.sample_digits(net, schedule, 5, num_steps=4, seed=3)
    c = demo.sample_digits(net, schedule, 5, num_steps=4, seed=4)
    d = demo.sample_digits(net, schedule, 2, sampler="ddpm", seed=3)
    assert a.shape == (5, 1, 8, 8) and d.shape == (2, 1, 8, 8)
    assert float(a.abs().max()) <= 1.0
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError):
        demo.sample_digits(net, schedule, 0)
    with pytest.raises(ValueError, match="sampler"):
        demo.sample_digits(net, schedule, 1, sampler="euler")


def test_make_grid_layout():
    imgs = torch.arange(5 * 4, dtype=torch.float32).reshape(5, 1, 2, 2)
    g = demo.make_grid(imgs, ncol=3, pad=1, pad_value=-7)
    assert g.shape == (2 * 3 + 1, 3 * 3 + 1)
    torch.testing.assert_close(g[1:3, 1:3], imgs[0, 0])
    torch.testing.assert_close(g[4:6, 4:6], imgs[4, 0])  # row 1, col 1
    assert torch.all(g[4:6, 7:9] == -7)  # the unused sixth cell stays padding


def test_save_and_load_model_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = UNet(base_channels=8, channel_mults=(1, 2, 2), attention_at_lowest=False).eval()
    schedule = NoiseSchedule.cosine(200)
    demo.save_model(net, schedule, tmp_path / "m.pt")
    net2, schedule2 = demo.load_model(tmp_path / "m.pt")
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 150])
    torch.testing.assert_close(net2(x, t), net(x, t))
    assert schedule2.name == "cosine" and schedule2.num_train_timesteps == 200
    torch.testing.assert_close(schedule2.betas, schedule.betas)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(demo.UserError, match="cannot load"):
        demo.load_model(tmp_path / "junk.pt")


# ------------------------------------------------------------------------------ CLI
def test_cli_image_demo_smoke(tmp_path, capsys):
    out = tmp_path / "grid.png"
    model_path = tmp_path / "unet.pt"
    rc = main(["image-demo", "--steps", "20", "--n", "4", "--sample-steps", "5", "--out", str(out),
               "--base-channels", "8", "--save-model", str(model_path), "--quiet", "--threads", "1"])
    assert rc == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert model_path.stat().st_size > 0
    assert "wrote 4 samples" in capsys.readouterr().out
    # sample again from the saved model, with ancestral DDPM this time (T = 1000 cheap steps on 2 images)
    out2 = tmp_path / "again.png"
    rc = main(["image-demo", "--load-model", str(model_path), "--n", "2", "--sampler", "ddpm", "--out", str(out2),
               "--quiet", "--threads", "1"])
    assert rc == 0 and out2.stat().st_size > 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n", "-3"], "--n must be at least 1"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--minutes", "-1"], "--minutes must be a positive number"),
        (["--sample-steps", "5000"], "--sample-steps must be between 1 and"),
        (["--out", "/nonexistent-dir/x/grid.png"], "does not exist"),
        (["--out", "grid.jpg"], "must be a .png file"),
        (["--load-model", "/nonexistent/model.pt"], "file not found"),
    ],
)
def test_cli_image_demo_bad_arguments(extra, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    rc = main(["image-demo", "--steps", "5", "--quiet", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert "molediff image-demo: error:" in err and message in err
    assert "Traceback" not in err
    assert time.perf_counter() - t0 < 5.0  # rejected before any training
    assert not list(tmp_path.iterdir())  # and nothing written


def test_cli_image_demo_unwritable_output(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    # chmod does not stop root, so pretend the directory is read-only the way os.access would report it
    monkeypatch.setattr(demo.os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    rc = main(["image-demo", "--steps", "5", "--quiet", "--out", str(ro / "g.png")])
    assert rc == 2 and "permission denied" in capsys.readouterr().err
    assert not list(ro.iterdir())


def test_cli_image_demo_output_is_a_directory(tmp_path, capsys):
    rc = main(["image-demo", "--steps", "5", "--quiet", "--out", str(tmp_path)])
    assert rc == 2 and "is a directory" in capsys.readouterr().err


# ------------------------------------------------------------------------------ recognisability
#: A digit counts as recognised when a logistic-regression classifier fitted on real digits gives its
#: top class probability >= 0.9. The classifier is strongly regularised (C = 0.01): an unregularised
#: one is over-confident on anything, pure noise included (with C = 1, ~66 % of noise images score
#: >= 0.9), while with C = 0.01 held-out real digits score >= 0.9 ~80 % of the time (97.6 % accuracy)
#: and noise images ~19 %. The rule: at least half the samples pass ("most samples", as the issue
#: asks), noise at most 30 %, real digits at least 70 % (the classifier itself is sound).
CONFIDENCE = 0.9
#: training budget: these many steps (~75 s on one busy core) or 100 s, whichever comes first; over 6
#: seeds ~0.65 of samples pass after 1000 steps and ~0.6 after 700
TRAIN_STEPS = 1200
MIN_SAMPLE_FRACTION = 0.5
MAX_NOISE_FRACTION = 0.3
MIN_REAL_FRACTION = 0.7


def _confident_fraction(clf, pixels: np.ndarray) -> float:
    return float((clf.predict_proba(pixels).max(axis=1) >= CONFIDENCE).mean())


@pytest.mark.slow
def test_trained_unet_samples_recognisable_digits():
    """Train the demo's U-Net for at most 100 s on 1 thread, sample 128 digits, and check that a classifier
    of real digits recognises most of them (and not pure noise)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.3, random_state=0, stratify=digits.target)
    clf = LogisticRegression(C=0.01, max_iter=5000).fit(X_train, y_train)

    schedule = NoiseSchedule.linear(1000)
    t0 = time.perf_counter()
    model = demo.train_unet(demo.load_digits_tensor(), schedule, max_steps=TRAIN_STEPS, max_seconds=100.0,
                            seed=0, progress=False)
    train_s = time.perf_counter() - t0
    samples = demo.sample_digits(model, schedule, 128, sampler="ddim", num_steps=100, eta=1.0, seed=0)
    sample_pixels = demo.to_pixels(samples).reshape(128, 64).numpy()
    noise = torch.randn(500, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # what sampling starts from

    real_frac = _confident_fraction(clf, X_test)
    sample_frac = _confident_fraction(clf, sample_pixels)
    noise_frac = _confident_fraction(clf, demo.to_pixels(noise).reshape(500, 64).numpy())
    classes = np.unique(clf.predict(sample_pixels))
    report = (f"{model.train_steps} steps in {train_s:.0f}s; fraction with top-class p >= {CONFIDENCE}: "
              f"samples {sample_frac:.3f}, real {real_frac:.3f}, noise {noise_frac:.3f}; classes {classes.tolist()}")
    print(report)
    assert clf.score(X_test, y_test) > 0.95 and real_frac >= MIN_REAL_FRACTION, report
    assert noise_frac <= MAX_NOISE_FRACTION, report
    assert sample_frac >= MIN_SAMPLE_FRACTION, report
    assert len(classes) >= 8, "samples should cover most digit classes: " + report
