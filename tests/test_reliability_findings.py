"""One test per reliability finding (issue: each finding has a test that fails before its fix): atomic
commits that fail, flock output locks, noise scale with deterministic samplers, the API's default step
count, implicit hydrogens of fragments, the hydrogen-placement fallback, training's signal handlers, a
reused SampleStats, Ctrl-C during torch.compile, and the evaluation report without a reference."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.checkpoint import save_model_file
from molediff.cli import main
from molediff.config import DiffusionConfig, ModelConfig, TrainConfig
from molediff.errors import UserError
from molediff.models import build_network
from molediff.molecular import MolecularDiffusion
from tests.children import child, finish

ROOT = Path(__file__).resolve().parents[1]
HISTOGRAM = [0, 0, 0, 1, 2, 2, 1]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
SHORT_T = 20


def _tiny_model(path: Path, timesteps: int) -> Path:
    torch.manual_seed(0)
    config = TrainConfig(model=ModelConfig(hidden=16, layers=2), diffusion=DiffusionConfig(timesteps=timesteps))
    net = build_network(config.model, MolecularDiffusion(config.diffusion))
    save_model_file(path, net.state_dict(), config, {"step": 0, "size_histogram": HISTOGRAM})
    return path


@pytest.fixture(scope="module")
def short_model(tmp_path_factory) -> Path:
    """A tiny untrained model whose diffusion has only T = 20 steps."""
    return _tiny_model(tmp_path_factory.mktemp("short") / "t20.pt", SHORT_T)


@pytest.fixture(scope="module")
def long_model(tmp_path_factory) -> Path:
    """A tiny untrained model with the default T = 1000."""
    return _tiny_model(tmp_path_factory.mktemp("long") / "t1000.pt", 1000)


def _temporaries(folder: Path, name: str) -> list[Path]:
    return list(folder.glob(f".{name}.*.tmp"))


def _sampler_tags(sdf: Path) -> set[str]:
    lines = sdf.read_text().splitlines()
    return {lines[i + 1] for i, line in enumerate(lines) if line.startswith("> ") and "<molediff_sampler>" in line}


def _positions(sdf: Path) -> np.ndarray:
    mols = [m for m in Chem.SDMolSupplier(str(sdf), sanitize=False, removeHs=False)]
    return np.concatenate([m.GetConformer().GetPositions() for m in mols])


# ------------------------------------------------------------------ 1. AtomicFile.commit cleans up


@pytest.mark.parametrize("where", ["fsync", "replace"])
@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
                         ids=["ENOSPC", "KeyboardInterrupt"])
def test_failed_or_interrupted_commit_removes_the_temporary_and_keeps_the_target(monkeypatch, tmp_path, where, error):
    from molediff.atomic import AtomicFile

    target = tmp_path / "out.sdf"
    target.write_text("earlier results\n")
    f = AtomicFile(target)
    f.write("new results\n")
    assert len(_temporaries(tmp_path, "out.sdf")) == 1

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(os, where, fail)
    with pytest.raises(type(error)):
        f.commit()
    monkeypatch.undo()
    assert not _temporaries(tmp_path, "out.sdf"), "the temporary file was left behind"
    assert target.read_text() == "earlier results\n"
    assert f.closed
    f.abort()  # nothing left to do, and no error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.sdf"]


# ------------------------------------------------------------------ 2. OutputLock is a flock


def test_output_lock_refuses_a_second_holder_and_takes_a_stale_one(tmp_path):
    from molediff.atomic import OutputLock, lock_owner

    out = tmp_path / "out.sdf"
    first = OutputLock(out).acquire()
    assert lock_owner(first.lock) == os.getpid()
    second = OutputLock(out)  # same process, another object: still refused
    with pytest.raises(UserError, match="another process"):
        second.acquire()
    second.release()  # it holds nothing: the first holder's lock file stays, and stays held
    assert first.lock.exists() and lock_owner(first.lock) == os.getpid()
    with pytest.raises(UserError):
        OutputLock(out).acquire()
    first.release()
    assert lock_owner(first.lock) == 0 and not first.lock.exists()

    # lock files nobody holds: left by a dead process, empty, or naming a live process that does not hold it
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for content in (f"{dead.pid}\n", "", f"{os.getppid()}\n", "garbage"):
        first.lock.write_text(content)
        assert lock_owner(first.lock) == 0
        with OutputLock(out) as lock:
            assert lock.held and lock_owner(lock.lock) == os.getpid()
        assert not first.lock.exists()


def test_output_lock_held_by_a_child_is_refused_and_freed_by_its_kill_9(tmp_path):
    from molediff.atomic import OutputLock, lock_owner

    out = tmp_path / "out.sdf"
    code = ("import sys, time\nfrom molediff.atomic import OutputLock\nOutputLock(sys.argv[1]).acquire()\n"
            "print('held', flush=True)\ntime.sleep(300)\n")
    lock = tmp_path / ".out.sdf.lock"
    with child([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, env=ENV, cwd=ROOT) as proc:
        assert proc.stdout.readline().strip() == "held"
        assert lock_owner(lock) == proc.pid
        with pytest.raises(UserError, match=f"pid {proc.pid}"):
            OutputLock(out).acquire()
        proc.send_signal(signal.SIGKILL)
        finish(proc, 30)
    assert lock.exists()  # what a kill -9 leaves: a file, but no lock
    assert lock_owner(lock) == 0
    with OutputLock(out) as taken:
        assert taken.held and lock_owner(lock) == os.getpid()
    assert not lock.exists()


# ------------------------------------------------------------------ 3. noise scale and the sampler table


@pytest.mark.parametrize("sampler, extra", [("dpm++2m", []), ("dpm++3m", []), ("ddim", ["--eta", "0"])])
def test_noise_scale_with_a_deterministic_sampler_is_refused(short_model, tmp_path, capsys, sampler, extra):
    from molediff.sampling import load_pretrained

    out = tmp_path / "a.sdf"
    argv = ["sample", "--checkpoint", str(short_model), "-n", "2", "--steps", "5", "--sampler", sampler, *extra,
            "--no-progress", "--out", str(out)]
    assert main([*argv, "--noise-scale", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--noise-scale" in err and sampler in err and "Traceback" not in err
    assert not out.exists()
    gen = load_pretrained(short_model)
    with pytest.raises(UserError, match="noise_scale"):
        gen.check_sampling(2, 5, 0, 0.0, 0.5, sampler)
    with pytest.raises(UserError, match="noise_scale"):
        next(gen.sample_arrays(2, steps=5, eta=0.0, noise_scale=0.5, sampler=sampler))
    # without --noise-scale they run, and the file does not claim a noise scale
    assert main(argv) == 0, capsys.readouterr().err
    tags = _sampler_tags(out)
    assert len(tags) == 1 and "_noise" not in tags.pop()


def test_ddim_at_all_t_steps_is_ddim_and_ddpm_is_a_sampler(short_model, tmp_path, capsys):
    base = ["sample", "--checkpoint", str(short_model), "-n", "3", "--seed", "1", "--no-progress"]
    eta0, eta1, eta05, ddpm = (tmp_path / f"{k}.sdf" for k in ("eta0", "eta1", "eta05", "ddpm"))
    assert main([*base, "--steps", str(SHORT_T), "--eta", "0", "--out", str(eta0)]) == 0
    assert main([*base, "--steps", str(SHORT_T), "--eta", "1", "--out", str(eta1)]) == 0
    assert main([*base, "--steps", str(SHORT_T), "--eta", "0.5", "--noise-scale", "0.9", "--out", str(eta05)]) == 0
    assert main([*base, "--sampler", "ddpm", "--out", str(ddpm)]) == 0, capsys.readouterr().err
    assert _sampler_tags(eta0) == {f"ddim{SHORT_T}_eta0"}
    assert _sampler_tags(eta1) == {f"ddim{SHORT_T}_eta1_noise{_default_noise(short_model):g}"}
    assert _sampler_tags(eta05) == {f"ddim{SHORT_T}_eta0.5_noise0.9"}
    assert _sampler_tags(ddpm) == {f"ddpm_noise{_default_noise(short_model):g}"}
    # --eta is honoured at --steps T (it used to run DDPM there, whatever --eta said)
    assert not np.allclose(_positions(eta0), _positions(eta1))
    import argparse

    from molediff.commands.sample import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert "ddpm" in next(a for a in parser._actions if a.dest == "sampler").choices


def _default_noise(model: Path) -> float:
    from molediff.sampling import load_pretrained

    return load_pretrained(model).default_noise_scale


# ------------------------------------------------------------------ 4. the API's default step count


def test_api_default_steps_fit_a_model_with_few_timesteps(short_model):
    from molediff.sampling import load_pretrained

    calls = []
    got = list(load_pretrained(short_model).sample_arrays(2, on_step=lambda i, s, k: calls.append((i, s))))
    assert len(got) == 2
    assert calls == [(i, SHORT_T) for i in range(SHORT_T)]


# ------------------------------------------------------------------ 5. implicit hydrogens of a fragment


def _embedded(smiles: str) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=7) == 0
    return mol


@pytest.mark.parametrize("smiles", ["Cc1ccccc1", "CCO", "CC(=O)[O-]"])
def test_fragment_without_explicit_hydrogens_keeps_them(tmp_path, smiles):
    from molediff.chem.io import molecule_from_mol, read_one_molecule
    from molediff.inpainting import Fragment

    full = _embedded(smiles)
    heavy = Chem.RemoveHs(full)
    implicit = sum(a.GetTotalNumHs() for a in heavy.GetAtoms())
    assert heavy.GetNumAtoms() < full.GetNumAtoms() and implicit == full.GetNumAtoms() - heavy.GetNumAtoms()
    (tmp_path / "heavy.sdf").write_text(Chem.MolToMolBlock(heavy) + "$$$$\n")
    (tmp_path / "full.sdf").write_text(Chem.MolToMolBlock(full) + "$$$$\n")
    explicit = read_one_molecule(tmp_path / "full.sdf")
    expected = Fragment(*explicit).heavy().hydrogens
    with pytest.warns(UserWarning, match="without hydrogen atoms"):
        from_file = read_one_molecule(tmp_path / "heavy.sdf")
    with pytest.warns(UserWarning, match="without hydrogen atoms"):
        from_mol = molecule_from_mol(heavy)
    for one in (from_file, from_mol):
        assert one.symbols.count("H") == implicit
        assert len(one.symbols) == full.GetNumAtoms()
        np.testing.assert_array_equal(Fragment(*one).heavy().hydrogens, expected)
        assert int(np.sum(one.charges)) == Chem.GetFormalCharge(full)
        # each new hydrogen is bonded to one heavy atom at a bond length's distance
        src, dst, _ = one.bonds
        h_bonds = [(s, d) for s, d in zip(src.tolist(), dst.tolist()) if "H" in (one.symbols[s], one.symbols[d])]
        assert len(h_bonds) == implicit
        lengths = [np.linalg.norm(one.pos[s] - one.pos[d]) for s, d in h_bonds]
        assert 0.9 < min(lengths) and max(lengths) < 1.2


def test_fragment_with_hydrogens_keeps_the_sites_the_user_opened(tmp_path):
    """Written with hydrogens, a fragment is taken as written: a removed hydrogen is a site to grow from."""
    from molediff.chem.io import read_one_molecule
    from molediff.inpainting import Fragment

    full = _embedded("CC(=O)O")
    rw = Chem.RWMol(full)
    rw.RemoveAtom(next(a.GetIdx() for a in rw.GetAtoms() if a.GetSymbol() == "H" and a.GetNeighbors()[0].GetSymbol() == "O"))
    (tmp_path / "open.sdf").write_text(Chem.MolToMolBlock(rw.GetMol()) + "$$$$\n")
    one = read_one_molecule(tmp_path / "open.sdf")
    assert one.symbols.count("H") == 3
    assert Fragment(*one).heavy().hydrogens.tolist() == [3, 0, 0, 0]


# ------------------------------------------------------------------ 6. the hydrogen-placement fallback


def _break_addhs_with_coords(monkeypatch):
    import molediff.chem.hydrogens as hydrogens

    real = hydrogens.Chem.AddHs

    def add_hs(mol, *args, **kwargs):
        if kwargs.get("addCoords"):
            raise RuntimeError("RDKit cannot place hydrogens here")
        return real(mol, *args, **kwargs)

    monkeypatch.setattr(hydrogens.Chem, "AddHs", add_hs)
    return hydrogens.place_hydrogens


def _hydrogen_distances(mol) -> np.ndarray:
    src, dst, _ = mol.bonds
    return np.array([np.linalg.norm(mol.pos[s] - mol.pos[d]) for s, d in zip(src.tolist(), dst.tolist())
                     if "H" in (mol.symbols[s], mol.symbols[d])])


@pytest.mark.parametrize("relax", [False, True])
def test_hydrogens_are_placed_when_rdkit_cannot(monkeypatch, relax):
    place_hydrogens = _break_addhs_with_coords(monkeypatch)
    # ethanol's heavy atoms and acetaldehyde-like carbonyl: counts 3, 2, 1 and 3, 1, 0
    for symbols, pos, bonds, counts in [
        (["C", "C", "O"], [[0, 0, 0], [1.52, 0, 0], [2.0, 1.4, 0.1]], ([0, 1], [1, 2], [1, 1]), [3, 2, 1]),
        (["C", "C", "O"], [[0, 0, 0], [1.50, 0, 0], [2.1, 1.05, 0.05]], ([0, 1], [1, 2], [1, 2]), [3, 1, 0]),
    ]:
        src, dst, order = (np.array(x) for x in bonds)
        got = place_hydrogens(symbols, np.array(pos, dtype=float), src, dst, order, np.zeros(3, dtype=int),
                              np.array(counts), relax=relax)
        assert got.symbols[:3] == symbols and got.symbols[3:] == ["H"] * sum(counts)
        assert np.isfinite(got.pos).all()
        heavy_h = np.zeros(3, dtype=int)
        s, d, _ = got.bonds
        for a, b in zip(s.tolist(), d.tolist()):
            if got.symbols[b] == "H":
                heavy_h[a] += 1
        np.testing.assert_array_equal(heavy_h, counts)
        lengths = _hydrogen_distances(got)
        assert len(lengths) == sum(counts)
        if relax:
            assert ((0.9 < lengths) & (lengths < 1.2)).all()
        else:
            np.testing.assert_allclose(lengths, 1.0, atol=1e-6)


def test_hydrogens_fallback_on_a_collinear_atom_is_finite(monkeypatch):
    """A degenerate geometry (the case the fallback exists for): the middle carbon of a straight C-C-C."""
    place_hydrogens = _break_addhs_with_coords(monkeypatch)
    got = place_hydrogens(["C", "C", "C"], np.array([[0, 0, 0], [1.5, 0, 0], [3.0, 0, 0]], dtype=float), np.array([0, 1]),
                          np.array([1, 2]), np.array([1, 1]), np.zeros(3, dtype=int), np.array([3, 2, 3]), relax=False)
    assert np.isfinite(got.pos).all()


# ------------------------------------------------------------------ 7. training's stop handlers


@pytest.fixture()
def _saved_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _trainer_stand_in(is_main: bool = False):
    from molediff.training import Trainer

    stub = types.SimpleNamespace(_stop=False, ctx=types.SimpleNamespace(is_main=is_main))
    stub._request_stop = types.MethodType(Trainer._request_stop, stub)
    stub._install_stop_handlers = types.MethodType(Trainer._install_stop_handlers, stub)
    return stub


def test_training_keeps_an_ignored_sigint_ignored(_saved_handlers):
    stub = _trainer_stand_in()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # nohup, a background job of a non-interactive shell
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    replaced = stub._install_stop_handlers()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) == stub._request_stop
    assert replaced == {signal.SIGTERM: signal.SIG_DFL}


def test_training_stop_handlers_from_a_thread_install_nothing(_saved_handlers):
    stub = _trainer_stand_in()
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    outcome = {}

    def run():
        try:
            outcome["replaced"] = stub._install_stop_handlers()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["replaced"] == {}
    assert {s: signal.getsignal(s) for s in before} == before


def test_training_second_stop_request_stops_at_once(capsys):
    stub = _trainer_stand_in(is_main=True)
    stub._request_stop(signal.SIGINT, None)
    assert stub._stop
    assert "SIGINT" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        stub._request_stop(signal.SIGINT, None)


# ------------------------------------------------------------------ 8. a reused SampleStats


def test_reused_sample_stats_yields_every_request(short_model):
    from molediff.sampling import SampleStats, load_pretrained

    gen = load_pretrained(short_model)
    stats = SampleStats()
    for n in (3, 2):
        got = list(gen.sample_arrays(n, steps=2, stats=stats))
        assert len(got) == n
        assert stats.requested == n and stats.delivered == n


# ------------------------------------------------------------------ 9. Ctrl-C while torch.compile compiles


def test_ctrl_c_while_compiling_publishes_nothing(long_model, tmp_path):
    from molediff.sampling import compiler_available

    if not compiler_available("cpu"):
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    out = tmp_path / "out.sdf"
    out.write_text("earlier results\n")
    cache = tmp_path / "inductor"  # a fresh cache: inductor compiles (and writes here) for many seconds
    cmd = [sys.executable, "-m", "molediff", "sample", "--checkpoint", str(long_model), "-n", "100000", "--batch-size",
           "2000", "--steps", "1000", "--threads", "1", "--no-progress", "--compile", "--out", str(out)]
    env = {**ENV, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    with child(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT) as proc:
        deadline = time.time() + 120
        # the output's temporary exists (sampling began) and inductor has started writing its code
        while not (_temporaries(tmp_path, "out.sdf") and cache.is_dir() and any(cache.rglob("*"))):
            if proc.poll() is not None:
                raise AssertionError(f"sampling ended before the signal: {finish(proc, 30)}")
            assert time.time() < deadline, "compilation did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = finish(proc, 120)
    assert proc.returncode == 130, err
    assert "nothing written" in err and "left as it was" in err, err
    assert "Traceback" not in err, err
    assert out.read_text() == "earlier results\n"
    assert not _temporaries(tmp_path, "out.sdf") and not (tmp_path / ".out.sdf.lock").exists()


# ------------------------------------------------------------------ B. the report without a reference


def test_report_without_reference_plots_the_samples(monkeypatch, tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sdf = tmp_path / "mols.sdf"
    with Chem.SDWriter(str(sdf)) as w:
        for smiles in ("Cc1ccccc1", "CCO", "c1ccncc1", "CC(=O)O", "OC1CCCCC1", "NC(=O)c1ccccc1"):
            w.write(_embedded(smiles))
    figures = []
    real_close = plt.close

    def close(fig=None):
        figures.append(fig)
        return real_close(fig)

    monkeypatch.setattr(plt, "close", close)
    report = tmp_path / "report"
    code = main(["evaluate", str(sdf), "--no-reference", "--report", str(report), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (report / "distributions.png").exists()
    fig = next(f for f in figures if f is not None and len(f.axes) == 12)
    for ax in fig.axes:
        title = ax.get_title()
        assert "(none" not in title and "not computed" not in title, title
        heights = [p.get_height() for p in ax.patches]
        assert heights and max(heights) > 0, f"panel {title!r} is empty"
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("bond length C") for t in titles) and any(t.startswith("angle ") for t in titles)
    assert {"qed", "logp", "mol_wt"} <= set(titles)


def test_report_panels_with_nothing_say_so(tmp_path):
    """Methane alone: no bonds between heavy atoms, one angle type, no rings, and properties not asked for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from molediff.data.files import read_molecule_files
    from molediff.commands.evaluate import write_report
    from molediff.metrics import evaluate_molecules_detailed

    sdf = tmp_path / "methane.sdf"
    with Chem.SDWriter(str(sdf)) as w:
        w.write(_embedded("C"))
    molecules, _ = read_molecule_files([str(sdf)])
    result, details = evaluate_molecules_detailed(molecules, progress=False)
    assert details.bond_lengths and details.bond_angles and not details.properties
    figures = []
    real_close = plt.close
    plt.close = lambda fig=None: (figures.append(fig), real_close(fig))[1]
    try:
        write_report(tmp_path / "report", molecules, result, details, "lookup")
    finally:
        plt.close = real_close
    fig = next(f for f in figures if f is not None and len(f.axes) == 12)
    for ax in fig.axes:
        title = ax.get_title()
        drawn = any(p.get_height() > 0 for p in ax.patches)
        assert drawn or "(none" in title or "not computed" in title, f"panel {title!r} is empty and does not say so"
