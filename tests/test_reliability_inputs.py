"""Reliability for this round's inputs and long jobs (issue 31): a run killed before its first
checkpoint resumes, model files from a newer molediff or with an unknown vocabulary are refused by
name, the sampling API is as strict as the CLI, and a heavy-atom model takes an explicit-H fragment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.checkpoint import load_model_file, save_model_file
from molediff.config import DiffusionConfig, ModelConfig, TrainConfig
from molediff.errors import UserError
from molediff.models import build_network
from molediff.molecular import MolecularDiffusion
from molediff.sampling import MoleculeGenerator
from tests.children import child, finish

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _molecules(folder: Path, smiles: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    writer = Chem.SDWriter(str(folder / "m.sdf"))
    for k, smi in enumerate(smiles):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=k)
        writer.write(mol)
    writer.close()
    return folder


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(tmp_path):
    data = _molecules(tmp_path / "data", ["CCO", "CCN", "CC=O", "CCC", "OCO", "NCN"] * 4)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "molediff", "train", "--data", str(data), "--out", str(run), "--max-steps", "5",
           "--model-hidden", "16", "--model-layers", "2", "--batch-size", "4", "--eval-every-steps", "0",
           "--eval-samples", "0", "--no-progress", "--threads", "1"]
    with child(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV) as proc:
        deadline = time.time() + 120
        while not (run / "started.json").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # before the first checkpoint (written after a minute, or at the end)
        finish(proc, 60)
    assert (run / "started.json").exists() and not (run / "checkpoint.pt").exists()
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "no checkpoint yet" in again.stdout
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] == 5


def _model_file(tmp_path: Path, config: TrainConfig) -> Path:
    net = build_network(config.model, MolecularDiffusion(config.diffusion))
    path = tmp_path / "m.pt"
    save_model_file(path, net.state_dict(), config, {"size_histogram": [0, 0, 1, 1]})
    return path


def test_model_files_from_a_newer_molediff_or_with_an_unknown_vocabulary_are_refused_by_name(tmp_path):
    cfg = TrainConfig(model=ModelConfig(hidden=8, layers=1))
    path = _model_file(tmp_path, cfg)
    blob = torch.load(path, weights_only=True)
    blob["config"]["diffusion"]["quantum_spin"] = True
    blob["config"]["shiny_new_option"] = 3
    torch.save(blob, tmp_path / "newer.pt")
    with pytest.raises(UserError, match=r"newer\.pt: .*unknown fields: diffusion\.quantum_spin, shiny_new_option.*newer molediff"):
        load_model_file(tmp_path / "newer.pt")
    blob = torch.load(path, weights_only=True)
    blob["config"]["diffusion"]["elements"] = ["C", "Se"]
    torch.save(blob, tmp_path / "selenium.pt")
    with pytest.raises(UserError, match=r"selenium\.pt: the model's vocabulary .*Se"):
        load_model_file(tmp_path / "selenium.pt")


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> MoleculeGenerator:
    torch.manual_seed(0)
    cfg = TrainConfig(model=ModelConfig(hidden=8, layers=1, pair_hidden=8),
                      diffusion=DiffusionConfig(bonds=True, charges=True, timesteps=50))
    return MoleculeGenerator.from_file(_model_file(tmp_path_factory.mktemp("gen"), cfg))


@pytest.mark.parametrize("kwargs, message", [
    (dict(eta=1.5), "eta must be between 0 and 1"),
    (dict(steps=0), "steps must be between 1 and 50"),
    (dict(steps=51), "steps must be between 1 and 50"),
    (dict(n=0), "must be ≥ 1"),
    (dict(resample=3), "applies to growing a fragment"),
    (dict(sampler="euler"), "unknown sampler"),
    (dict(sampler="ddpm", steps=10), "runs all 50 steps"),
    (dict(sampler="dpm++2m", noise_scale=0.8), "has no effect with dpm"),
])
def test_the_sampling_api_refuses_what_the_cli_refuses(generator, kwargs, message):
    args = dict(n=2, steps=10, seed=0)
    args.update(kwargs)
    with pytest.raises(UserError, match=message):
        next(iter(generator.sample_arrays(**args)))


def test_the_solvers_sample_through_the_api(generator):
    for sampler in ("dpm++2m", "dpm++2m-sde", "dpm++3m"):
        out = list(generator.sample_arrays(3, steps=6, seed=0, sampler=sampler))
        assert len(out) == 3 and all(len(s) == len(p) for s, p, _ in out)


def test_sdf_with_implicit_hydrogens_is_refused_for_explicit_h_and_counted_for_heavy_atom_models(tmp_path):
    from molediff.data.files import IMPLICIT_H, read_molecule_files

    mols = []
    for k, smi in enumerate(["CCO", "c1ccccc1S(N)(=O)=O", "CCCl"]):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=k)
        mols.append(mol)
    path = tmp_path / "mixed.sdf"
    writer = Chem.SDWriter(str(path))
    writer.write(mols[0])
    writer.write(Chem.RemoveHs(mols[1]))  # written without its hydrogens
    writer.write(mols[2])
    writer.close()
    explicit, report = read_molecule_files(path, bonds=True, implicit_hydrogens="refuse")
    assert len(explicit) == 2 and report.skipped[IMPLICIT_H] == 1 and "mixed.sdf:1" in report.summary()
    counted, report = read_molecule_files(path, bonds=True, implicit_hydrogens="count")
    assert len(counted) == 3 and not report.skipped
    heavy, _ = counted.heavy_atoms()
    for i, mol in enumerate(mols):
        ref = Chem.RemoveHs(mol)
        a, b = int(heavy.ptr[i]), int(heavy.ptr[i + 1])
        assert heavy.hydrogens[a:b].tolist() == [atom.GetTotalNumHs() for atom in ref.GetAtoms()]


def test_an_eps_diffusion_with_categorical_parts_is_refused_where_it_is_built():
    for cfg in (DiffusionConfig(parametrization="eps", bonds=True), DiffusionConfig(parametrization="eps", charges=True),
                DiffusionConfig(parametrization="eps", max_hydrogens=3, elements=["C", "N"], bonds=True)):
        with pytest.raises(UserError, match="ε-parametrisation cannot generate"):
            MolecularDiffusion(cfg)
    MolecularDiffusion(DiffusionConfig(parametrization="eps"))  # atoms by ε-MSE: fine


def test_transfer_weights_reports_a_users_mismatch_as_a_user_error():
    from molediff.models import transfer_weights

    small = MolecularDiffusion(DiffusionConfig())
    net = build_network(ModelConfig(hidden=8, layers=1), small)
    other = build_network(ModelConfig(hidden=16, layers=1), small)
    labels = (small.input_labels(), small.output_labels())
    with pytest.raises(UserError, match="architectures differ"):
        transfer_weights(net, other.state_dict(), labels, labels)
