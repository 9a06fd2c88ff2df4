"""Steering towards property targets (issue 41, molediff.steering): a step lowers the property model's error
and touches only the features of molecules with targets; the property model trains, saves and is refused
for another model; sampling with --steer runs end to end and its mistakes are refused with the reason."""

from __future__ import annotations

import pytest
import torch

from molediff.config import DiffusionConfig, ModelConfig, TrainConfig
from molediff.errors import UserError
from molediff.state import MolState
from tests.test_druglike_conditions import drug_file  # noqa: F401 - a pytest fixture


@pytest.fixture(scope="module")
def cond_model(drug_file, tmp_path_factory):  # noqa: F811
    from molediff.runstate import EMA_MODEL
    from molediff.training import train

    out = tmp_path_factory.mktemp("steer")
    cfg = TrainConfig(data=str(drug_file), model=ModelConfig(hidden=16, layers=2, pair_hidden=8), batch_size=3, valid_molecules=2,
                      max_steps=2, eval_every_steps=0, eval_samples=0, threads=1, checkpoint_minutes=100.0,
                      diffusion=DiffusionConfig(charges=True, bonds=True, max_hydrogens=4, conditions=["logp", "mw"],
                                                elements=["C", "N", "O", "F", "S", "Cl"]))
    train(cfg, out / "run", progress=False)
    return out / "run" / EMA_MODEL


def _molecules(gen, drug_file):  # noqa: F811
    from molediff.data.files import read_molecule_files, with_condition_properties

    mols, _ = read_molecule_files([drug_file], bonds=True, implicit_hydrogens="count", overlapping="refuse")
    mols, _ = mols.heavy_atoms()
    return with_condition_properties(mols, gen.config.diffusion.conditions)


def test_a_steering_step_lowers_the_error_and_leaves_positions_and_untargeted_molecules(cond_model, drug_file):  # noqa: F811
    from molediff.sampling import MoleculeGenerator
    from molediff.steering import PropertyModel, steer

    gen = MoleculeGenerator.from_file(cond_model)
    d = gen.diffusion
    torch.manual_seed(0)
    model = PropertyModel(PropertyModel.build(d, hidden=16, layers=2), list(d.cfg.conditions), d.cfg.condition_stats, {})
    mols = _molecules(gen, drug_file)
    x = d.encode(mols.collate(list(range(3))))
    cond = torch.tensor([[4.0, float("nan")], [float("nan"), 400.0], [float("nan"), float("nan")]], dtype=torch.float64)

    def error(state: MolState) -> torch.Tensor:  # per molecule, standardised, given targets only
        from molediff.conditioning import normalise

        z, given = normalise(cond, d.cfg.conditions, d.cfg.condition_stats)
        with torch.no_grad():
            return (((model.predict(state) - torch.nan_to_num(z).float()) ** 2) * given.float()).sum(1)

    moved = steer(x, cond, model, 1e-3)
    before, after = error(x), error(moved)
    assert bool((after[:2] < before[:2]).all())
    torch.testing.assert_close(moved.node[:, :3], x.node[:, :3])  # positions are not steered
    last = slice(int(x.graph.ptr[2]), int(x.graph.ptr[3]))
    torch.testing.assert_close(moved.node[last], x.node[last])  # no target, no change
    assert not torch.equal(moved.node[: int(x.graph.ptr[1])], x.node[: int(x.graph.ptr[1])])


def test_the_property_model_trains_saves_and_is_refused_for_another_model(cond_model, drug_file, tmp_path):  # noqa: F811
    from molediff.sampling import MoleculeGenerator
    from molediff.steering import PropertyModel, train_property_model

    gen = MoleculeGenerator.from_file(cond_model)
    mols = _molecules(gen, drug_file)
    lines = []
    model = train_property_model(gen.diffusion, mols, mols, minutes=0.02, batch_size=4, hidden=16, layers=2, report=lines.append)
    assert model.info["steps"] >= 1 and set(model.info["valid_mae"]) == {"logp", "mw"} and lines[-1].startswith("done")
    model.save(tmp_path / "p.pt")
    again = PropertyModel.load(tmp_path / "p.pt", gen.diffusion)
    x = gen.diffusion.encode(mols.collate([0, 1]))
    torch.testing.assert_close(again.predict(x), model.predict(x))
    other = gen.diffusion.__class__(DiffusionConfig(charges=True, bonds=True, max_hydrogens=4, conditions=["logp"],
                                                    condition_stats={"logp": [1.0, 1.0, -2.0, 5.0]},
                                                    elements=["C", "N", "O", "F", "S", "Cl"]))
    with pytest.raises(UserError, match="trained for another model's conditions"):
        PropertyModel.load(tmp_path / "p.pt", other)
    with pytest.raises(UserError, match="not a property model"):
        PropertyModel.load(cond_model, gen.diffusion)


def test_sampling_with_steer_runs_and_its_mistakes_are_refused(cond_model, drug_file, tmp_path, capsys, monkeypatch):  # noqa: F811
    from molediff.cli import main as cli
    from molediff.commands import property_model as command
    from molediff.sampling import MoleculeGenerator

    monkeypatch.setattr(command, "MIN_MOLECULES", 5)
    path = tmp_path / "p.pt"
    assert cli(["property-model", "--checkpoint", str(cond_model), "--data", str(drug_file), "--out", str(path),
                "--minutes", "0.01", "--molecules", "2000"]) == 0
    assert "wrote" in capsys.readouterr().out and path.exists()
    gen = MoleculeGenerator.from_file(cond_model)
    steps = 4  # trailing grid 999, 749, 499, 249: the last step is steered
    plain = list(gen.sample_arrays(2, steps=steps, seed=0, conditions={"logp": 3.0}, relax_hydrogens=False))
    steered = list(gen.sample_arrays(2, steps=steps, seed=0, conditions={"logp": 3.0}, relax_hydrogens=False,
                                     steer=5.0, property_model=str(path)))
    assert len(steered) == 2
    assert any(not (a[0].shape == b[0].shape and (a[1] == b[1]).all()) for a, b in zip(plain, steered))
    for kwargs, message in (({"steer": 0.05}, "needs a property model"),
                            ({"steer": -1.0, "property_model": str(path)}, "finite number ≥ 0"),
                            ({"property_model": str(path)}, "read only when steering"),
                            ({"steer": 0.05, "property_model": str(cond_model)}, "not a property model")):
        with pytest.raises(UserError, match=message):
            gen.request(2, conditions={"logp": 3.0}, **kwargs)
    with pytest.raises(UserError, match="give at least one condition"):
        gen.request(2, steer=0.05, property_model=str(path))
    from molediff.sampling import bundled_model_path

    assert cli(["property-model", "--checkpoint", str(bundled_model_path("qm9-cond")), "--out", str(tmp_path / "q.pt"),
                "--data", str(drug_file)]) == 2
    assert "conditioned on QM9's properties" in capsys.readouterr().err
    out = tmp_path / "s.sdf"
    assert cli(["sample", "--checkpoint", str(cond_model), "--n", "2", "--steps", "4", "--condition", "logp=3",
                "--steer", "0.05", "--property-model", str(path), "--out", str(out), "--no-progress"]) == 0
    assert out.exists()


def test_range_restarts_are_on_by_default_for_a_range_or_value_and_refused_without_one(cond_model, tmp_path, capsys):
    from molediff.cli import main as cli
    from molediff.conditioning import Range
    from molediff.sampling import MoleculeGenerator

    gen = MoleculeGenerator.from_file(cond_model)
    logp = gen.config.diffusion.condition_stats["logp"]
    inside = Range(logp[0] - 0.5 * logp[1], logp[0] + 0.5 * logp[1])
    assert gen.request(2, conditions={"logp": inside}, restarts=1).restart_ranges
    assert not gen.request(2, conditions={"logp": inside}, restarts=0).restart_ranges
    assert not gen.request(2, conditions={"logp": inside}, restarts=1, restart_ranges=False).restart_ranges
    # a value is checked as its band (value ± the property's tolerance; a count exactly), a range as itself;
    # per-molecule targets are not checked
    mw = gen.config.diffusion.condition_stats["mw"][0]
    req = gen.request(2, conditions={"logp": inside, "mw": mw}, restarts=1)
    assert req.restart_ranges
    assert MoleculeGenerator._ranges(req) == {"logp": tuple(inside), "mw": (mw - 10.0, mw + 10.0)}
    req = gen.request(2, conditions={"logp": [logp[0], logp[0]], "mw": mw}, restarts=1)
    assert MoleculeGenerator._ranges(req) == {"mw": (mw - 10.0, mw + 10.0)}
    assert not gen.request(2, conditions={"logp": [logp[0], logp[0]]}, restarts=1).restart_ranges
    assert not gen.request(2, restarts=1).restart_ranges
    with pytest.raises(UserError, match="needs local restarts"):
        gen.request(2, conditions={"logp": inside}, restarts=0, restart_ranges=True)
    with pytest.raises(UserError, match="NAME=VALUE or NAME=LO:HI"):
        gen.request(2, restarts=1, restart_ranges=True)
    records = list(gen.sample_arrays(2, steps=4, seed=0, conditions={"logp": inside}, restarts=2, relax_hydrogens=False))
    assert len(records) == 2 and all("restarts" in info for _, _, info in records)
    out = tmp_path / "r.sdf"
    assert cli(["sample", "--checkpoint", str(cond_model), "--n", "2", "--steps", "4", "--restarts", "1",
                "--condition", f"logp={inside[0]}:{inside[1]}", "--out", str(out), "--no-progress"]) == 0
    assert "properties outside their asked band" in capsys.readouterr().out
    assert cli(["sample", "--checkpoint", str(cond_model), "--n", "2", "--steps", "4", "--restarts", "0", "--restart-ranges",
                "--condition", f"logp={inside[0]}:{inside[1]}", "--out", str(tmp_path / "s.sdf"), "--no-progress"]) == 2
    assert "needs local restarts" in capsys.readouterr().err


def test_a_model_file_may_carry_its_property_model_and_steering_default(cond_model, tmp_path):
    from molediff.checkpoint import load_model_file, save_model_file
    from molediff.sampling import MoleculeGenerator
    from molediff.steering import PropertyModel

    gen = MoleculeGenerator.from_file(cond_model)
    torch.manual_seed(0)
    model = PropertyModel(PropertyModel.build(gen.diffusion, hidden=16, layers=2), list(gen.conditions),
                          gen.config.diffusion.condition_stats, {"hidden": 16, "layers": 2})
    state, config, meta = load_model_file(cond_model)
    path = tmp_path / "with_steering.pt"
    save_model_file(path, state, config, {**meta, "property_model": model.to_dict(), "default_steer": 0.2})
    gen = MoleculeGenerator.from_file(path)
    assert gen.default_steer == 0.2
    req = gen.request(2, conditions={"logp": 3.0})
    assert (req.steer, req.property_model) == (0.2, "")  # the file's own property model
    assert gen.request(2).steer == 0.0  # nothing to steer towards
    assert gen.request(2, conditions={"logp": 3.0}, steer=0.0).steer == 0.0
    assert len(list(gen.sample_arrays(2, steps=4, seed=0, conditions={"logp": 3.0}, relax_hydrogens=False))) == 2
    # a model file without one steers only when given a property model
    assert MoleculeGenerator.from_file(cond_model).default_steer == 0.0
    with pytest.raises(UserError, match="needs a property model"):
        MoleculeGenerator.from_file(cond_model).request(2, conditions={"logp": 3.0}, steer=0.1)
    # tampered weights are refused
    bad = model.to_dict()
    bad["weights"] = {k: v + 1 for k, v in bad["weights"].items()}
    save_model_file(path, state, config, {**meta, "property_model": bad, "default_steer": 0.2})
    with pytest.raises(UserError, match="integrity"):
        MoleculeGenerator.from_file(path).request(2, conditions={"logp": 3.0})


def test_the_sampling_summary_says_how_the_valid_molecules_meet_their_targets():
    from molediff.commands.sample import _targets_met
    from molediff.conditioning import Range

    line = _targets_met({"logp": Range(1.0, 2.0), "mw": 46.0}, ["CCO", "CCCCCCO", "CCCCCCO"])
    # Crippen logP: ethanol -0.00, hexanol 1.56; MolWt 46.07 and 102.18
    assert line.startswith("properties of the 3 valid molecules (RDKit): ")
    assert "inside 1:2 66.7%" in line and "MAE to 46 " in line and "within 46 ± 10 33.3%" in line
    assert _targets_met({"gap": 0.25}, ["CCO"]) is None and _targets_met({"logp": 2.0}, []) is None


def test_the_bundled_conditional_drug_like_model_steers_and_checks_ranges_by_default():
    from molediff.conditioning import Range
    from molediff.sampling import load_pretrained

    gen = load_pretrained(model="druglike-cond")
    assert gen.default_steer > 0 and gen.default_restarts > 0 and gen.default_restart_rings
    req = gen.request(2, conditions={"logp": Range(2.0, 3.0)})
    assert req.steer == gen.default_steer and req.property_model == "" and req.restart_ranges and req.restart_rings
    assert gen.request(2).steer == 0.0 and not gen.request(2).restart_ranges  # unconditional: nothing to steer or check
    records = list(gen.sample_arrays(2, steps=4, seed=0, conditions={"logp": Range(2.0, 3.0)}, restarts=2,
                                     relax_hydrogens=False))
    assert len(records) == 2 and all(info["conditions"]["logp"] >= 2.0 for _, _, info in records)
