"""bfloat16 sampling (molediff.models.precision): the choice, the wrapper's contract, the CLI's record of it."""

from __future__ import annotations

import pytest
import torch

from molediff.cli import main
from molediff.errors import UserError
from molediff.models import precision
from molediff.models.precision import Autocast, resolve_precision
from molediff.sampling import load_pretrained


def test_auto_takes_bfloat16_exactly_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": True)
    assert resolve_precision("auto") == "bfloat16"
    monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": False)
    assert resolve_precision("auto") == "float32"
    assert resolve_precision("bfloat16") == "bfloat16"  # asked by name: given, native or not
    assert resolve_precision("float32") == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half")


def test_native_bfloat16_is_false_off_the_cpu():
    assert precision.native_bfloat16("cuda") is False


def test_wrapper_returns_float32_close_to_the_float32_network():
    """The bundled drug-like network on noisy molecules at a middle level: bfloat16 matrix products move
    its outputs by far less than the noise it removes, and hand them back in float32."""
    from molediff.graph import MolGraph

    gen = load_pretrained(model="druglike")
    diffusion = gen.diffusion
    graph = MolGraph.from_ptr(torch.tensor([0, 12, 30, 51]))
    g = torch.Generator().manual_seed(0)
    x_t = diffusion.prior(graph, generator=g)
    x_t = type(x_t)(x_t.node * 0.6, x_t.pair * 0.6, x_t.graph, x_t.parts)
    inputs = diffusion.network_inputs(x_t, torch.full((3,), 400), None, None)
    with torch.no_grad():
        ref = inputs.apply(gen.net)
        low = inputs.apply(Autocast(gen.net))
    assert all(o.dtype == torch.float32 and bool(torch.isfinite(o).all()) for o in low)
    assert low[0].shape == ref[0].shape and low[1].shape == ref[1].shape and low[2].shape == ref[2].shape
    assert float((ref[0] - low[0]).abs().max()) < 0.05  # Å: positions
    for a, b in ((ref[1], low[1]), (ref[2], low[2])):  # atom and pair parts: x̂0 values of unit scale, and logits
        err = (a - b).abs() / (1 + a.abs())
        assert float(err.mean()) < 0.02 and float(err.max()) < 0.2  # seen: 0.003 / 0.035 (atoms), 0.008 / 0.07 (pairs)
    assert float((ref[0] - low[0]).abs().max()) > 0  # the wrapper did change the arithmetic


def test_generator_precision_choice_and_bad_name():
    gen = load_pretrained(model="qm9-joint")
    assert gen.precision == "float32"  # the Python API's default: unchanged results
    assert gen.set_precision("bfloat16").precision == "bfloat16"
    assert gen.set_precision("float32").precision == "float32"
    with pytest.raises(UserError, match="precision must be one of"):
        gen.set_precision("fp8")


def test_bfloat16_sampling_gives_valid_molecules_and_is_recorded(tmp_path):
    """Same seed under both precisions: the same number of complete records, each in the file with the
    precision it was made in; bfloat16 molecules are as valid as float32 ones on this small draw."""
    outs = {}
    for name in ("float32", "bfloat16"):
        out = tmp_path / f"{name}.sdf"
        assert main(["sample", "--no-progress", "--threads", "1", "--model", "qm9-joint", "-n", "8", "--steps", "30",
                     "--precision", name, "--out", str(out)]) == 0
        outs[name] = out.read_text()
        assert outs[name].count("$$$$") == 8
        assert outs[name].count(f"<molediff_precision>\n{name}") == 8
    valid = {k: v.count("<molediff_model_valid>\n1") for k, v in outs.items()}
    assert valid["bfloat16"] >= valid["float32"] - 2, valid


def test_cli_refuses_an_unknown_precision(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--precision", "half"])
    assert "invalid choice: 'half'" in capsys.readouterr().err


def test_sample_help_names_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--precision {auto,float32,bfloat16}" in text and "natively" in text
