"""`molediff sample` and load_pretrained: small N, reproducible seeds, clear errors, safe output.

A tiny untrained model is enough here: what is tested is the sampling machinery (seeds, batching,
streaming, error handling), not sample quality (benchmarks/qm9_quality.py measures that).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from rdkit import Chem

from molediff import sampling
from molediff.checkpoint import load_model_file, save_model_file
from molediff.cli import main
from molediff.config import ModelConfig, TrainConfig
from molediff.errors import UserError
from molediff.models import build_network
from molediff.molecular import MolecularDiffusion

# a size histogram of small molecules (3..6 atoms) keeps the test fast
HISTOGRAM = [0, 0, 0, 1, 2, 2, 1]


def _tiny(tmp_path_factory, joint: bool) -> Path:
    torch.manual_seed(0)
    config = TrainConfig(model=ModelConfig(hidden=16, layers=2, pair_hidden=8))
    config.diffusion.timesteps = 50  # keeps full-length ancestral sampling cheap
    config.diffusion.charges = config.diffusion.bonds = joint
    net = build_network(config.model, MolecularDiffusion(config.diffusion))
    path = tmp_path_factory.mktemp("model") / ("joint.pt" if joint else "tiny.pt")
    save_model_file(path, net.state_dict(), config, {"step": 0, "size_histogram": HISTOGRAM})
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return _tiny(tmp_path_factory, joint=False)


@pytest.fixture(scope="module")
def joint_model(tmp_path_factory) -> Path:
    return _tiny(tmp_path_factory, joint=True)


def sdf_records(path: Path) -> list[str]:
    text = path.read_text()
    return [r for r in text.split("$$$$\n") if r.strip()]


def run_cli(*args: str) -> int:
    return main(["sample", "--no-progress", "--threads", "1", *args])


def test_small_n_writes_exactly_n_readable_records(tiny_model, tmp_path, capsys):
    out = tmp_path / "s.sdf"
    assert run_cli("--checkpoint", str(tiny_model), "-n", "7", "--steps", "10", "--batch-size", "3", "--out", str(out)) == 0
    records = sdf_records(out)
    assert len(records) == 7
    supplier = Chem.SDMolSupplier(str(out), sanitize=False, removeHs=False)
    mols = [m for m in supplier]
    assert len(mols) == 7 and all(m is not None and m.GetNumConformers() == 1 for m in mols)
    assert all(3 <= m.GetNumAtoms() <= 6 for m in mols)  # sizes come from the model's histogram
    text = capsys.readouterr().out
    assert "wrote 7 molecules" in text
    # the summary says what the run cost: 10 steps a molecule (more only if one diverged and was drawn again)
    evaluations = float(re.search(r"([\d.]+) network evaluations a molecule", text).group(1))
    assert evaluations == 10.0 or ("diverged" in text and evaluations > 10.0)


def test_same_seed_same_molecules_other_seed_differs(tiny_model, tmp_path):
    a, b, c = (tmp_path / f"{x}.sdf" for x in "abc")
    common = ["--checkpoint", str(tiny_model), "-n", "5", "--steps", "8", "--batch-size", "2"]
    assert run_cli(*common, "--seed", "3", "--out", str(a)) == 0
    assert run_cli(*common, "--seed", "3", "--out", str(b)) == 0
    assert run_cli(*common, "--seed", "4", "--out", str(c)) == 0
    assert a.read_text() == b.read_text()
    assert a.read_text() != c.read_text()


def test_fixed_atom_count_and_xyz_format(tiny_model, tmp_path):
    out = tmp_path / "s.xyz"
    assert run_cli("--checkpoint", str(tiny_model), "-n", "3", "--steps", "5", "--n-atoms", "4", "--out", str(out)) == 0
    lines = out.read_text().splitlines()
    assert lines.count("4") == 3 and len(lines) == 3 * (4 + 2)


def test_full_ancestral_sampling_with_the_ddpm_sampler(tiny_model, tmp_path):
    out = tmp_path / "s.sdf"
    assert run_cli("--checkpoint", str(tiny_model), "-n", "2", "--sampler", "ddpm", "--out", str(out)) == 0
    assert "ddpm_noise0.8" in out.read_text()  # the sampler is recorded per record
    # DDIM asked for all T steps stays DDIM (with its eta), and says so
    assert run_cli("--checkpoint", str(tiny_model), "-n", "2", "--steps", "50", "--out", str(out)) == 0
    assert "ddim50_eta1_noise0.8" in out.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["-n", "0"], "--n must be"),
        (["-n", "2", "--batch-size", "0"], "--batch-size must be"),
        (["-n", "2", "--steps", "0"], "--steps must be between 1 and 50"),
        (["-n", "2", "--steps", "51"], "--steps must be between 1 and 50"),
        (["-n", "2", "--n-atoms", "0"], "--n-atoms must be"),
        (["-n", "2", "--eta", "1.5"], "--eta must be between 0 and 1"),
        (["-n", "2", "--noise-scale", "-0.5"], "--noise-scale must be between 0 and 2"),
    ],
)
def test_bad_arguments_are_rejected_clearly(tiny_model, tmp_path, capsys, args, message):
    out = tmp_path / "s.sdf"
    assert run_cli("--checkpoint", str(tiny_model), "--out", str(out), *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_non_numeric_argument_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli("-n", "lots")
    assert exc.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_missing_checkpoint_and_missing_folder_are_reported(tiny_model, tmp_path, capsys):
    assert run_cli("--checkpoint", str(tmp_path / "nope.pt"), "-n", "1", "--out", str(tmp_path / "s.sdf")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_cli("--checkpoint", str(tiny_model), "-n", "1", "--out", str(tmp_path / "no" / "such" / "s.sdf")) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder_is_reported(tiny_model, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert run_cli("--checkpoint", str(tiny_model), "-n", "1", "--out", str(locked / "s.sdf")) == 2
        assert "cannot write" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_output_that_is_not_writable_as_a_file_is_reported(tiny_model, tmp_path, capsys):
    # works as root too: a path below an existing *file* cannot be created by anyone
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert run_cli("--checkpoint", str(tiny_model), "-n", "1", "--out", str(blocker / "s.sdf")) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


def test_interrupted_run_keeps_only_complete_records(tiny_model, tmp_path, monkeypatch, capsys):
    real = sampling.MoleculeGenerator.run  # what the CLI runs, once its request is checked

    def interrupted(self, req, *args, **kwargs):
        for i, item in enumerate(real(self, req, *args, **kwargs)):
            if i == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(sampling.MoleculeGenerator, "run", interrupted)
    out = tmp_path / "s.sdf"
    assert run_cli("--checkpoint", str(tiny_model), "-n", "10", "--steps", "5", "--out", str(out)) == 130
    assert "interrupted after 3 of 10" in capsys.readouterr().err
    records = sdf_records(out)
    assert len(records) == 3 and out.read_text().endswith("$$$$\n")
    assert all(m is not None for m in Chem.SDMolSupplier(str(out), sanitize=False, removeHs=False))
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_crash_publishes_no_file(tiny_model, tmp_path, monkeypatch):
    def broken(self, req, *args, **kwargs):
        yield from ()
        raise RuntimeError("boom")

    monkeypatch.setattr(sampling.MoleculeGenerator, "run", broken)
    out = tmp_path / "s.sdf"
    with pytest.raises(RuntimeError, match="boom"):
        run_cli("--checkpoint", str(tiny_model), "-n", "4", "--out", str(out))
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_diverged_molecules_are_replaced_not_written(tiny_model, monkeypatch):
    gen = sampling.load_pretrained(tiny_model)
    real = sampling.finite_molecules
    calls = {"n": 0}

    def first_molecule_diverges(pos, ptr):
        ok = real(pos, ptr)
        if calls["n"] == 0:
            ok = ok.clone()
            ok[0] = False
        calls["n"] += 1
        return ok

    monkeypatch.setattr(sampling, "finite_molecules", first_molecule_diverges)
    stats = sampling.SampleStats()
    got = list(gen.sample_arrays(4, steps=4, batch_size=4, stats=stats))
    assert len(got) == 4 and stats.diverged == 1 and stats.batches == 2
    # the sampler counts network evaluations in molecules: 4 molecules × 4 steps, then the retried one's 4
    assert stats.evaluations == 20 and stats.evaluations_per_molecule == 5.0


def test_python_api_returns_rdkit_molecules(tiny_model):
    gen = sampling.load_pretrained(tiny_model)
    mols = gen.sample(3, steps=4, seed=1)
    assert len(mols) == 3 and all(isinstance(m, Chem.Mol) and m.GetNumConformers() == 1 for m in mols)


def test_tampered_model_file_is_rejected(tiny_model, tmp_path):
    state, config, meta = load_model_file(tiny_model)
    blob = torch.load(tiny_model, weights_only=False)
    key = next(k for k, v in blob["state_dict"].items() if v.is_floating_point())
    blob["state_dict"][key] = blob["state_dict"][key] + 1.0
    bad = tmp_path / "bad.pt"
    torch.save(blob, bad)
    with pytest.raises(UserError, match="integrity"):
        sampling.load_pretrained(bad)
    blob["format"] = 999
    torch.save(blob, bad)
    with pytest.raises(UserError, match="format"):
        sampling.load_pretrained(bad)


@pytest.mark.skipif(not sampling.bundled_model_path().exists(), reason="no bundled model in this checkout")
def test_bundled_model_loads_and_samples():
    gen = sampling.load_pretrained()
    assert gen.config.model.layers >= 1 and len(gen.histogram) > 1
    got = list(gen.sample_arrays(2, steps=5, batch_size=2))
    assert len(got) == 2 and all(p.shape[1] == 3 for _, p, _ in got)


def test_bundled_druglike_model_loads_and_writes_complete_molecules():
    gen = sampling.load_pretrained(model="druglike")
    assert gen.diffusion.vocab.heavy_atom and {"S", "Cl", "Br"} <= set(gen.diffusion.vocab.elements)
    got = list(gen.sample_arrays(2, steps=5, batch_size=2, seed=0))
    assert len(got) == 2
    for symbols, pos, info in got:
        heavy = len(info["hydrogens"])
        assert list(symbols[heavy:]) == ["H"] * int(info["hydrogens"].sum()) and len(pos) == len(symbols)
        assert "bonds" in info and "charges" in info


@pytest.mark.slow
def test_compiled_sampling_gives_the_same_molecules(tiny_model, tmp_path):
    gen = sampling.load_pretrained(tiny_model)
    eager = list(gen.sample_arrays(6, steps=8, seed=5, batch_size=4))
    compiled = list(gen.compile().sample_arrays(6, steps=8, seed=5, batch_size=4))
    assert len(eager) == len(compiled) == 6
    for (s1, p1, _), (s2, p2, _) in zip(eager, compiled):
        assert list(s1) == list(s2)
        assert abs(p1 - p2).max() < 1e-3  # float rounding only
    out = tmp_path / "c.sdf"
    assert run_cli("--checkpoint", str(tiny_model), "-n", "3", "--steps", "5", "--compile", "--out", str(out)) == 0
    assert len(sdf_records(out)) == 3


def test_compile_default_follows_the_work_and_the_compiler(tiny_model, monkeypatch, tmp_path):
    """Compiling is on by default where it repays its warm-up (COMPILE_MIN_MOLECULE_STEPS) and a compiler
    is found; --compile and --no-compile decide otherwise. (A Ctrl-C during compilation is handled:
    tests/test_reliability_findings.py.)"""
    calls = []
    monkeypatch.setattr(sampling.MoleculeGenerator, "compile", lambda self: calls.append(1) or self)
    monkeypatch.setattr(sampling, "compiler_available", lambda device="cpu": True)
    monkeypatch.setattr(sampling, "COMPILE_MIN_MOLECULE_STEPS", 20)  # the rule, at a size a test affords
    model = ["--checkpoint", str(tiny_model), "--steps", "2", "--no-progress"]
    big, small = ["-n", "10"], ["-n", "9"]
    assert run_cli(*model, *small, "--out", str(tmp_path / "a.sdf")) == 0 and calls == []
    assert run_cli(*model, *big, "--out", str(tmp_path / "b.sdf")) == 0 and calls == [1]
    assert run_cli(*model, *big, "--no-compile", "--out", str(tmp_path / "c.sdf")) == 0 and calls == [1]
    assert run_cli(*model, "-n", "3", "--compile", "--out", str(tmp_path / "d.sdf")) == 0 and calls == [1, 1]
    monkeypatch.setattr(sampling, "compiler_available", lambda device="cpu": False)
    assert run_cli(*model, *big, "--out", str(tmp_path / "e.sdf")) == 0 and calls == [1, 1]


def test_compiler_available_reads_cxx_and_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    assert not sampling.compiler_available("cpu")
    fake = tmp_path / "g++"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert sampling.compiler_available("cpu")
    fake.unlink()
    mine = tmp_path / "my-cxx"
    mine.write_text("#!/bin/sh\n")
    mine.chmod(0o755)
    monkeypatch.setenv("CXX", "my-cxx")
    assert sampling.compiler_available("cpu")


def test_a_failing_compiler_leaves_sampling_eager_with_a_warning(tiny_model, monkeypatch):
    gen = sampling.load_pretrained(tiny_model)
    want = list(gen.sample_arrays(3, steps=4, seed=2))

    def broken(fn, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\n(long compiler output)")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    gen.compile()
    with pytest.warns(RuntimeWarning, match="torch.compile failed") as record:
        got = list(gen.sample_arrays(3, steps=4, seed=2))
    assert len(record) == 1  # once, at the first call; the rest of the run is eager
    assert str(record[0].message) == ("torch.compile failed (RuntimeError: InductorError: CppCompileError: C++ compile "
                                      "error); running without it")
    for (s1, p1, _), (s2, p2, _) in zip(want, got):
        assert list(s1) == list(s2) and (p1 == p2).all()


def test_a_model_file_may_name_its_default_noise_scale(tiny_model, tmp_path):
    state, config, meta = load_model_file(tiny_model)
    own = tmp_path / "own.pt"
    save_model_file(own, state, config, {**meta, "default_noise_scale": 1.0})
    gen, plain = sampling.load_pretrained(own), sampling.load_pretrained(tiny_model)
    assert gen.default_noise_scale == 1.0 and plain.default_noise_scale == sampling.DEFAULT_NOISE_SCALE
    a = list(gen.sample_arrays(2, steps=4, seed=3))
    b = list(plain.sample_arrays(2, steps=4, seed=3, noise_scale=1.0))
    c = list(gen.sample_arrays(2, steps=4, seed=3, noise_scale=0.8))
    assert all((p1 == p2).all() for (_, p1, _), (_, p2, _) in zip(a, b))
    assert any(not (p1 == p2).all() for (_, p1, _), (_, p2, _) in zip(a, c))
    out = tmp_path / "o.sdf"
    assert run_cli("--checkpoint", str(own), "-n", "2", "--steps", "4", "--out", str(out)) == 0
    assert "ddim4_eta1_noise1" in out.read_text()


def test_noise_scale_changes_molecules_and_is_recorded(tiny_model, tmp_path):
    a, b = tmp_path / "a.sdf", tmp_path / "b.sdf"
    common = ["--checkpoint", str(tiny_model), "-n", "3", "--steps", "6", "--seed", "1"]
    assert run_cli(*common, "--noise-scale", "1", "--out", str(a)) == 0
    assert run_cli(*common, "--noise-scale", "0.5", "--out", str(b)) == 0
    assert a.read_text() != b.read_text()
    assert "ddim6_eta1_noise0.5" in b.read_text() and "ddim6_eta1_noise1" in a.read_text()
    gen = sampling.load_pretrained(tiny_model)
    with pytest.raises(UserError, match="noise_scale must be between"):
        next(gen.sample_arrays(2, steps=4, noise_scale=3.0))
    with pytest.raises(UserError, match="self_condition_feedback must be one of guided, conditional, per-branch"):
        next(gen.sample_arrays(2, steps=4, self_condition_feedback="mean"))


def test_joint_model_writes_its_own_bonds_and_charges(joint_model, tmp_path, capsys):
    out = tmp_path / "j.sdf"
    assert run_cli("--checkpoint", str(joint_model), "-n", "6", "--steps", "5", "--seed", "3", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "model bonds (written)" in printed and "lookup bonds (published convention)" in printed
    gen = sampling.load_pretrained(joint_model)
    assert gen.writes_bonds
    want = list(gen.sample_arrays(6, steps=5, seed=3))
    mols = list(Chem.SDMolSupplier(str(out), sanitize=False, removeHs=False))
    assert len(mols) == 6
    for mol, (symbols, pos, info) in zip(mols, want):
        src, dst, order = info["bonds"]
        written = {(min(b.GetBeginAtomIdx(), b.GetEndAtomIdx()), max(b.GetBeginAtomIdx(), b.GetEndAtomIdx())): int(b.GetBondTypeAsDouble())
                   for b in mol.GetBonds()}
        assert written == {(int(i), int(j)): int(o) for i, j, o in zip(src, dst, order)}
        assert [a.GetFormalCharge() for a in mol.GetAtoms()] == info["charges"].tolist()
        assert mol.HasProp("molediff_model_valid") and mol.GetProp("molediff_bonds") == "model"
    # --bonds lookup writes perceived bonds instead
    lk = tmp_path / "l.sdf"
    assert run_cli("--checkpoint", str(joint_model), "-n", "2", "--steps", "5", "--bonds", "lookup", "--out", str(lk)) == 0
    assert "molediff_model_valid" not in lk.read_text()


def test_checkpoint_with_a_pickle_payload_runs_nothing(tmp_path, capsys):
    """A model file carrying a pickled object whose unpickling runs code must be refused before it runs."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt"
    torch.save({"format": 2, "state_dict": {}, "config": {}, "x": Payload()}, bad)
    with pytest.raises(UserError, match="refused"):
        sampling.load_pretrained(bad)
    assert run_cli("--checkpoint", str(bad), "-n", "1", "--out", str(tmp_path / "o.sdf")) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_bundled_model_names_and_conflicts(tiny_model, tmp_path, capsys, monkeypatch):
    for name in ("qm9-joint", "qm9"):  # the default's name given explicitly conflicts too
        assert run_cli("--model", name, "--checkpoint", str(tiny_model), "-n", "1", "--out", str(tmp_path / "a.sdf")) == 2
        assert "not both" in capsys.readouterr().err
    assert sampling.DEFAULT_MODEL == "qm9-joint"
    with pytest.raises(UserError, match="unknown bundled model"):
        sampling.bundled_model_path("nope")
    monkeypatch.setitem(sampling.BUNDLED_MODELS, "qm9-joint", "no_such_file.pt")
    with pytest.raises(UserError, match="no bundled model 'qm9-joint'"):
        sampling.load_pretrained(model="qm9-joint")


@pytest.mark.skipif(not sampling.bundled_model_path("qm9-joint").exists(), reason="no bundled joint model in this checkout")
def test_bundled_joint_model_writes_bonds():
    gen = sampling.load_pretrained(model="qm9-joint")
    assert gen.writes_bonds and sampling.load_pretrained().writes_bonds  # the default model
    got = list(gen.sample_arrays(2, steps=3, batch_size=2))
    assert len(got) == 2 and all("bonds" in info and "charges" in info for _, _, info in got)
