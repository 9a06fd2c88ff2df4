"""Property conditioning: values and their checks, dropping in training, classifier-free guidance
(w = 0 is the unconditional prediction exactly; the conditional pass receives the condition), sizes
from p(n | c), warm starts, and the CLI on a tiny conditional model trained on QM9 half B."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from molediff.conditioning import (PROPERTY_NAMES, check_conditions, condition_table, drop_conditions, normalise,
                                   parse_conditions, sizes_for_conditions)
from molediff.config import DiffusionConfig, ModelConfig
from molediff.errors import UserError
from molediff.models import build_network, transfer_weights
from molediff.molecular import MolecularDiffusion
from tests.test_molecular import _set

TINY = ModelConfig(hidden=16, layers=2, pair_hidden=8)
STATS = {"gap": [0.25, 0.05, 0.02, 0.62], "alpha": [75.0, 8.0, 13.0, 197.0]}
COND = DiffusionConfig(charges=True, bonds=True, conditions=["gap", "alpha"], condition_stats=STATS)


def test_parse_and_check_conditions_say_what_is_wrong():
    assert parse_conditions(["gap=0.25", " alpha = 70 "]) == {"gap": 0.25, "alpha": 70.0}
    for bad, match in [(["gap"], "NAME=VALUE"), (["gap=x"], "not a number"), (["=1"], "NAME=VALUE"),
                       (["gap=0.2", "gap=0.3"], "twice")]:
        with pytest.raises(UserError, match=match):
            parse_conditions(bad)
    names = ["gap", "alpha"]
    assert check_conditions({"gap": 0.3}, names, STATS) == {"gap": 0.3}
    for bad, match in [({"foo": 1}, "unknown property"), ({"mu": 1}, "conditioned on gap, alpha"),
                       ({"gap": 0.9}, r"outside the training range of gap, \[0.02, 0.62\] Hartree"),
                       ({"gap": float("nan")}, "finite"), ({"alpha": float("inf")}, "finite")]:
        with pytest.raises(UserError, match=match):
            check_conditions(bad, names, STATS)


def test_normalise_and_drop():
    values = torch.tensor([[0.30, float("nan")], [0.20, 83.0]], dtype=torch.float64)
    z, given = normalise(values, ["gap", "alpha"], STATS)
    torch.testing.assert_close(z, torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64))
    assert given.tolist() == [[1.0, 0.0], [1.0, 1.0]]
    many = torch.ones(20000, 2, dtype=torch.float64)
    dropped = drop_conditions(many, 0.3, torch.Generator().manual_seed(0))
    frac = torch.isnan(dropped).double().mean(0)
    assert torch.all((frac - 0.3).abs() < 0.02)  # each column independently ~p
    both = torch.isnan(dropped).all(1).double().mean()
    assert abs(float(both) - 0.09) < 0.015  # independent: p² drop both (the unconditional case is trained)
    assert torch.equal(drop_conditions(many, 0.0), many)


def _net(d):
    torch.manual_seed(0)
    net = build_network(TINY, d).double()
    with torch.no_grad():  # the condition read-in must matter for the test to see it
        net.embed.weight.normal_(0, 0.5)
    return net


def test_guidance_zero_is_the_unconditional_prediction_and_the_conditional_pass_gets_the_condition(monkeypatch):
    d = MolecularDiffusion(COND)
    net = _net(d)
    x0 = d.encode(_set([5, 7]).collate([0, 1]))
    x0 = type(x0)(x0.node.double(), x0.pair.double(), x0.graph, x0.parts)
    x_t = d.add_noise(x0, x0.noise_like(torch.Generator().manual_seed(0)), torch.tensor([400, 700]))
    t = torch.tensor([400, 700])
    cond = condition_table({"gap": 0.3}, ["gap", "alpha"], 2)
    u = d.predict(net, x_t, t)[0]
    c = d.predict(net, x_t, t, cond=cond)[0]
    assert float((u.node - c.node).abs().max()) > 1e-3  # the condition changes the prediction
    g0 = d.guided_predict(net, x_t, t, cond, 0.0)
    assert torch.equal(g0.node, u.node) and torch.equal(g0.pair, u.pair)
    g1 = d.guided_predict(net, x_t, t, cond, 1.0)
    assert torch.equal(g1.node, c.node)
    g3 = d.guided_predict(net, x_t, t, cond, 3.0)
    torch.testing.assert_close(g3.node, u.node + 3 * (c.node - u.node))
    torch.testing.assert_close(g3.pair, u.pair + 3 * (c.pair - u.pair))
    # what the network reads: the standardised target and "given" for gap, nothing for alpha
    seen = []
    forward = net.forward
    monkeypatch.setattr(net, "forward", lambda h, *a, **k: (seen.append(h.detach().clone()), forward(h, *a, **k))[1])
    d.guided_predict(net, x_t, t, cond, 2.0)
    labels = d.input_labels()
    cols = [labels.index(k) for k in ("cond:gap", "cond:alpha", "given:gap", "given:alpha")]
    conditional, unconditional = seen
    assert torch.allclose(conditional[:, cols], torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    assert float(unconditional[:, cols].abs().max()) == 0.0
    # whole sampling runs: w = 0 gives the unconditional molecules exactly
    monkeypatch.setattr(net, "forward", forward)
    net.float()
    kw = dict(num_steps=5)
    a = d.sample(net, [5, 6], generator=torch.Generator().manual_seed(3), **kw)
    b = d.sample(net, [5, 6], generator=torch.Generator().manual_seed(3), cond=cond, guidance=0.0, **kw)
    e = d.sample(net, [5, 6], generator=torch.Generator().manual_seed(3), cond=cond, guidance=2.0, **kw)
    assert torch.equal(a.pos, b.pos) and not torch.equal(a.pos, e.pos)


def test_sizes_follow_the_conditions():
    g = torch.Generator().manual_seed(0)
    table_sizes = torch.arange(5, 30).repeat(20)
    table_values = (table_sizes.double() * 5.0)[:, None]  # alpha grows with size
    stats = {"alpha": [85.0, 35.0, 25.0, 145.0]}
    small = sizes_for_conditions(condition_table({"alpha": 30.0}, ["alpha"], 50), table_sizes, table_values, ["alpha"], stats, g, k=40)
    large = sizes_for_conditions(condition_table({"alpha": 140.0}, ["alpha"], 50), table_sizes, table_values, ["alpha"], stats, g, k=40)
    assert small.max() <= 7 and large.min() >= 27
    free = sizes_for_conditions(condition_table({}, ["alpha"], 200), table_sizes, table_values, ["alpha"], stats, g)
    assert free.min() < 10 and free.max() > 25  # nothing given: the whole table


def test_warm_start_adds_conditions_at_zero():
    src_d, d = MolecularDiffusion(DiffusionConfig(charges=True, bonds=True)), MolecularDiffusion(COND)
    torch.manual_seed(0)
    src, net = build_network(TINY, src_d).double(), build_network(TINY, d).double()
    transfer_weights(net, src.state_dict(), (d.input_labels(), d.output_labels()), (src_d.input_labels(), src_d.output_labels()))
    x0 = d.encode(_set([5, 7]).collate([0, 1]))
    x0 = type(x0)(x0.node.double(), x0.pair.double(), x0.graph, x0.parts)
    t = torch.tensor([300, 800])
    want = src_d.predict(src, x0, t)[0]
    got = d.predict(net, x0, t, cond=condition_table({"gap": 0.3, "alpha": 90.0}, ["gap", "alpha"], 2))[0]
    torch.testing.assert_close(got.node, want.node, atol=1e-12, rtol=0)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "molediff", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def tiny_conditional_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "run"
    r = _cli("train", "--out", str(out), "--data", "qm9:train-b", "--diffusion-charges", "--diffusion-bonds",
             "--diffusion-conditions", "gap,alpha", "--max-steps", "3", "--batch-size", "8", "--model-hidden", "16",
             "--model-layers", "2", "--model-pair-hidden", "8", "--eval-samples", "0", "--valid-molecules", "20",
             "--no-progress")
    assert r.returncode == 0, r.stderr
    return out


def test_conditional_training_records_statistics_and_the_size_table(tiny_conditional_model):
    from molediff.checkpoint import load_model_file
    from molediff.data.qm9 import load_qm9

    cfg = json.loads((tiny_conditional_model / "config.json").read_text())
    stats = cfg["diffusion"]["condition_stats"]
    half_b = load_qm9("train-b", progress=False, properties=True)
    gap = half_b.props[half_b.has_bonds, PROPERTY_NAMES.index("gap")]  # a joint model's data: molecules with bonds
    assert stats["gap"][0] == pytest.approx(float(gap.mean())) and stats["gap"][3] == pytest.approx(float(gap.max()))
    _, _, meta = load_model_file(tiny_conditional_model / "ema_model.pt")
    table = meta["condition_table"]
    assert table["names"] == ["gap", "alpha"] and len(table["sizes"]) == len(table["values"]) == 10_000
    # the halves are disjoint and together the training split
    half_a = load_qm9("train-a", progress=False)
    assert not set(half_a.names) & set(half_b.names) and len(half_a) + len(half_b) == 100_000


def test_cli_samples_with_conditions_and_refuses_bad_ones(tiny_conditional_model, tmp_path):
    model = str(tiny_conditional_model / "ema_model.pt")
    out = tmp_path / "s.sdf"
    r = _cli("sample", "--checkpoint", model, "--condition", "gap=0.3", "--condition", "alpha=80", "--guidance", "2",
             "--n", "3", "--steps", "4", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "conditioned on gap=0.3 Hartree, alpha=80 Bohr^3 (guidance 2" in r.stdout
    text = out.read_text()
    assert text.count("<molediff_target_gap>") == 3 and "<molediff_target_alpha>" in text
    for args, message in [(["--condition", "gap=9"], "outside the training range"),
                          (["--condition", "homo=-0.2"], "conditioned on gap, alpha"),
                          (["--condition", "size=3"], "unknown property"),
                          (["--condition", "gap:0.3"], "NAME=VALUE"),
                          (["--condition", "gap=abc"], "not a number"),
                          (["--guidance", "3"], "give at least one condition")]:
        r = _cli("sample", "--checkpoint", model, *args, "--n", "1", "--steps", "2", "--out", str(tmp_path / "e.sdf"))
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert not (tmp_path / "e.sdf").exists()
    r = _cli("sample", "--model", "qm9", "--condition", "gap=0.3", "--n", "1", "--out", str(tmp_path / "e.sdf"))
    assert r.returncode == 2 and "not conditioned on properties" in r.stderr
    # same seed, same molecules
    again = tmp_path / "again.sdf"
    r = _cli("sample", "--checkpoint", model, "--condition", "gap=0.3", "--condition", "alpha=80", "--guidance", "2",
             "--n", "3", "--steps", "4", "--out", str(again), "--no-progress")
    assert np.array_equal(*(np.array([line for line in f.read_text().splitlines() if line.count(".") == 3])
                            for f in (out, again)))


def test_conditions_need_qm9_data():
    from molediff.config import TrainConfig

    with pytest.raises(UserError, match="QM9 properties need QM9 data"):
        TrainConfig(data="mols.sdf", diffusion=DiffusionConfig(conditions=["gap"])).validate()
    with pytest.raises(UserError, match="unknown property"):
        TrainConfig(diffusion=DiffusionConfig(conditions=["energy"])).validate()
    with pytest.raises(UserError, match="qm9:train-b"):
        TrainConfig(data="qm9:half").validate()


def test_api_takes_one_target_per_molecule(tiny_conditional_model):
    from molediff.sampling import load_pretrained

    gen = load_pretrained(tiny_conditional_model / "ema_model.pt")
    assert gen.conditions == ["gap", "alpha"]
    gaps = [0.1, 0.2, 0.3, 0.4, 0.5]
    out = list(gen.sample_arrays(5, steps=3, batch_size=2, conditions={"gap": gaps, "alpha": 80.0}, guidance=2.0))
    assert [r[2]["conditions"] for r in out] == [{"gap": g, "alpha": 80.0} for g in gaps]
    with pytest.raises(UserError, match="3 targets for 5 molecules"):
        list(gen.sample_arrays(5, steps=3, conditions={"gap": [0.1, 0.2, 0.3]}))
    with pytest.raises(UserError, match="outside the training range"):
        list(gen.sample_arrays(2, steps=3, conditions={"gap": [0.1, 5.0]}))


def test_property_cache_is_used_without_qm9pack_and_rebuilding_needs_it(tmp_path, monkeypatch):
    """A self-consistent property cache serves a machine without qm9pack (as the molecule cache does);
    a missing or corrupted one asks for qm9pack by name instead of failing obscurely."""
    from molediff.checkpoint import atomic_torch_save, state_dict_digest
    from molediff.data import qm9

    tensors = {"ids": torch.arange(3), "values": torch.rand(3, len(PROPERTY_NAMES), dtype=torch.float64)}
    monkeypatch.setenv("MOLEDIFF_DATA", str(tmp_path))
    monkeypatch.setattr(qm9, "qm9pack_dir", lambda: (_ for _ in ()).throw(UserError("QM9 needs the 'qm9pack' package")))
    cache = tmp_path / f"qm9_props_v{qm9.PROPERTY_CACHE_VERSION}.pt"
    atomic_torch_save({"source": "elsewhere", "tensors": tensors, "sha256": state_dict_digest(tensors)}, cache)
    ids, values = qm9.load_qm9_properties(progress=False)
    assert torch.equal(ids, tensors["ids"]) and torch.equal(values, tensors["values"])
    atomic_torch_save({"source": "elsewhere", "tensors": tensors, "sha256": "0" * 64}, cache)
    with pytest.raises(UserError, match="qm9pack"):
        qm9.load_qm9_properties(progress=False)
