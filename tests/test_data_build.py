"""molediff.data.build / ``molediff data``: SMILES → chunked 3D SDF training data (standardisation,
counted failures, resume after kill -9, locking, settings checks, shards, sources)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from molediff import cli
from molediff.chem.io import read_sdf
from molediff.data import build as build_mod
from molediff.data import chunks as chunks_mod
from molediff.data.build import BuildOptions, built_files
from molediff.errors import UserError
from tests.children import child

ROOT = Path(__file__).resolve().parents[1]

# a user's file: BOM, header, CRLF, an empty line, valid lines, bad lines of each kind
SMI_LINES = [
    "SMILES name",                 # 1 header (skipped)
    "CCO ethanol",                 # 2 -> index 0, written
    "",                            # 3 empty (skipped)
    "C1CC(C bad_ring",             # 4 -> 1 invalid SMILES
    "CC(=O)O.[Na+].[Cl-] salt",    # 5 -> 2 written, largest fragment kept
    "C[Se]C selenide",             # 6 -> 3 element outside table: Se
    "*CC dummy",                   # 7 -> 4 dummy atom
    "CCO ethanol_again",           # 8 -> 5 duplicate of line 2
    "CCN.Cl hydrochloride",        # 9 -> 6 written, largest fragment kept
    "CC[Sn](C)(C)C tin",           # 10 -> 7 element outside table: Sn
    "c1ccccc1O phenol",            # 11 -> 8 written
    "CC(=O)[O-] acetate",          # 12 -> 9 written, neutralised
]
EXPECTED_SMILES = ["CCO", "CC(=O)O", "CCN", "Oc1ccccc1", "CC(=O)O"]
EXPECTED_INDEX = [0, 2, 6, 8, 9]
DROPPED = {"line 4": "invalid SMILES", "line 6": "element outside table: Se", "line 7": "dummy atom",
           "line 8": "duplicate", "line 10": "element outside table: Sn"}

# drug-like molecules for the kill test (slow enough with 4 conformers to be caught mid-way)
DRUGS = [
    "CC(C)(C)C(=O)C(Oc1ccc(Cl)cc1)n1ccnc1", "CCCS(=O)c1ccc2[nH]c(=NC(=O)OC)[nH]c2c1",
    "O=C(C1CCCCC1)N1CC(=O)N2CCCc3ccccc3C2C1", "COc1ccccc1OC(=O)c1ccccc1OC(C)=O",
    "CC(=O)Oc1ccccc1C(=O)O", "CN1CCN(CC1)c1ccc(cc1)C(=O)Nc1ccccc1", "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "COc1cc2c(cc1OC)C(=O)C(CC1CCN(Cc3ccccc3)CC1)C2", "Cc1ccc(cc1Nc1nccc(n1)-c1cccnc1)NC(=O)c1ccc(CN2CCN(C)CC2)cc1",
    "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc12", "OC(=O)CCCc1ccc(N(CCCl)CCCl)cc1", "CCN(CC)CCNC(=O)c1ccc(N)cc1",
    "Clc1ccc2c(c1)C(=NCc1nncn12)c1ccccc1", "CC1=C(C(=O)Nc2ccccn2)N(C)S(=O)(=O)c2ccccc12",
]


def _write_smi(path: Path, lines=SMI_LINES) -> Path:
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    return path


def _run(argv, capsys=None) -> tuple[int, str, str]:
    rc = cli.main(["data", "--no-progress", *map(str, argv)])
    if capsys is None:
        return rc, "", ""
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_build_gives_expected_records_and_names_every_dropped_line(tmp_path, capsys):
    src = _write_smi(tmp_path / "in.smi")
    out = tmp_path / "out"
    rc, stdout, _ = _run(["--source", src, "--out", out, "--chunk-size", 4, "--workers", 1], capsys)
    assert rc == 0, stdout
    for line, reason in DROPPED.items():  # every dropped line is named with its reason
        assert f"in.smi:{line}" in stdout and reason in stdout
    assert "10 molecules in, 5 written, 5 failed" in stdout and "complete" in stdout

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total_molecules"] == 10 and manifest["written"] == 5 and manifest["num_chunks"] == 3
    assert manifest["failures"] == {"invalid SMILES": 1, "element outside table: Se": 1, "dummy atom": 1,
                                    "duplicate": 1, "element outside table: Sn": 1}
    assert manifest["standardised"] == {"largest fragment kept": 2, "charges neutralised": 1}
    assert manifest["source"]["sha256"] and manifest["source"]["size"] == src.stat().st_size
    assert manifest["seed"] == 0 and manifest["conformers"] == 1 and manifest["molediff_version"]

    files = built_files(out)
    assert [f.name for f in files] == ["chunk_000000.sdf", "chunk_000001.sdf", "chunk_000002.sdf"]
    records = [r for f in files for r in read_sdf(f).records]
    assert [r.props["SMILES"] for r in records] == EXPECTED_SMILES
    assert [int(r.props["molediff_source_index"]) for r in records] == EXPECTED_INDEX
    assert [r.props["_Name"] for r in records] == ["ethanol", "salt", "hydrochloride", "phenol", "acetate"]
    assert records[1].props["molediff_input_smiles"] == "CC(=O)O.[Na+].[Cl-]"
    assert records[1].props["molediff_standardisation"].startswith("largest fragment kept")
    assert "charges neutralised" in records[4].props["molediff_standardisation"]
    heavy = {"CCO": 3, "CC(=O)O": 4, "CCN": 3, "Oc1ccccc1": 7}
    for r in records:
        assert r.props["molediff_forcefield"] == "MMFF94" and np.isfinite(float(r.props["molediff_energy_kcal_mol"]))
        n_h = r.symbols.count("H")
        assert n_h > 0 and len(r.symbols) - n_h == heavy[r.props["SMILES"]]  # explicit hydrogens
        assert r.pos.shape == (len(r.symbols), 3) and np.ptp(r.pos[:, 2]) > 0.1  # 3D
        assert r.charges is not None and not r.charges.any()  # neutral after standardisation
        src_, dst, order = r.bonds
        assert len(src_) == len(r.symbols) - 1 + (1 if r.props["SMILES"] == "Oc1ccccc1" else 0)
    # the training reader takes the folder as it is
    from molediff.data.files import read_molecule_files

    molecules, report = read_molecule_files(out)
    assert len(molecules) == 5 and not report.skipped


def test_kill_mid_build_resumes_to_identical_files_and_second_builder_is_refused(tmp_path):
    src = tmp_path / "drugs.smi"
    src.write_text("\n".join(DRUGS) + "\n")
    args = ["--source", src, "--chunk-size", 2, "--conformers", 4, "--workers", 1]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with child([sys.executable, "-m", "molediff", "data", "--no-progress", "--out", str(killed), *map(str, args)],
               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        deadline = time.time() + 60
        while not (killed / "chunk_000000.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the builder wrote no chunk within 60 s"
            time.sleep(0.01)
        # a second builder of the same folder is refused while the first one runs
        with pytest.raises(UserError, match="another 'molediff data' build"):
            build_mod.build(BuildOptions(out=killed, source=str(src), chunk_size=2, conformers=4, workers=1, progress=False))
        assert proc.poll() is None, "the build finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    partial = _files(killed)
    assert "manifest.json" not in partial and len([n for n in partial if n.endswith(".json")]) < len(DRUGS) // 2

    assert _run(["--out", killed, *args])[0] == 0  # resume (takes over the stale lock)
    reference = tmp_path / "reference"
    assert _run(["--out", reference, *args])[0] == 0  # uninterrupted
    assert _files(killed) == _files(reference)
    assert {n for n in partial if n.startswith("chunk_")} <= set(_files(killed))
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]  # no temporary or lock file left


def test_other_settings_are_refused_unless_force(tmp_path, capsys):
    src = _write_smi(tmp_path / "in.smi", ["CCO", "CCN", "CCC"])
    out = tmp_path / "out"
    assert _run(["--source", src, "--out", out, "--chunk-size", 2, "--workers", 1], capsys)[0] == 0
    before = _files(out)
    rc, _, err = _run(["--source", src, "--out", out, "--chunk-size", 2, "--workers", 1, "--seed", 1], capsys)
    assert rc == 2 and "other settings" in err and "seed 0 → 1" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1 and _files(out) == before  # one line, nothing touched
    rc, _, err = _run(["--source", src, "--out", out, "--chunk-size", 3, "--workers", 1], capsys)
    assert rc == 2 and "chunk_size 2 → 3" in err
    rc, stdout, _ = _run(["--source", src, "--out", out, "--chunk-size", 2, "--workers", 1, "--seed", 1, "--force"], capsys)
    assert rc == 0 and json.loads((out / "manifest.json").read_text())["seed"] == 1
    assert _files(out) != before
    rc, stdout, _ = _run(["--source", src, "--out", out, "--chunk-size", 2, "--workers", 1, "--seed", 1], capsys)
    assert rc == 0 and "nothing to build: 2 chunk(s) already built and verified" in stdout


def test_corrupt_or_missing_chunks_are_rebuilt_identically(tmp_path, capsys):
    src = _write_smi(tmp_path / "in.smi", ["CCO", "CCN", "CCC", "CC=O", "C#N"])
    out = tmp_path / "out"
    args = ["--source", src, "--out", out, "--chunk-size", 2, "--workers", 1]
    assert _run(args, capsys)[0] == 0
    before = _files(out)
    sdf = out / "chunk_000000.sdf"
    data = bytearray(sdf.read_bytes())
    data[200] ^= 1
    sdf.write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum"):
        built_files(out)
    (out / "chunk_000002.json").unlink()
    (out / "chunk_000001.sdf").unlink()
    rc, _, err = _run(["--check", *args], capsys)
    assert rc == 1 and "3 of 3 chunk(s)" in err and "corrupt SDF" in err
    rc, stdout, _ = _run(args, capsys)
    assert rc == 0 and "built 3 chunk(s)" in stdout
    assert _files(out) == before


def test_write_error_keeps_earlier_chunks_and_says_so(tmp_path, monkeypatch):
    src = _write_smi(tmp_path / "in.smi", ["CCO", "CCN", "CCC", "CC=O"])
    out = tmp_path / "out"
    real = chunks_mod.atomic_write
    calls = []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) == 3:  # chunk 0's SDF and sidecar are written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(chunks_mod, "atomic_write", full_disk)
    opts = BuildOptions(out=out, source=str(src), chunk_size=2, workers=1, progress=False)
    with pytest.raises(UserError, match="No space left on device.*1 chunk.*intact"):
        build_mod.build(opts)
    monkeypatch.setattr(chunks_mod, "atomic_write", real)
    report = build_mod.check(BuildOptions(out=out, source=str(src), chunk_size=2))
    assert report.missing == {1: "missing"} and report.chunks_skipped == 1
    assert not (out / ".build.lock").exists()
    assert build_mod.build(opts).manifest_written


def test_shards_fill_one_folder_and_check_writes_the_manifest(tmp_path, capsys):
    src = _write_smi(tmp_path / "in.smi", ["CCO", "CCN", "CCC", "CC=O", "C#N", "CO", "CCO"])
    whole, shared = tmp_path / "whole", tmp_path / "shared"
    base = ["--source", src, "--chunk-size", 2, "--workers", 1]
    assert _run(["--out", whole, *base], capsys)[0] == 0
    rc, stdout, _ = _run(["--out", shared, *base, "--shard", "1/2"], capsys)
    assert rc == 0 and "shard 1/2" in stdout and "2 of 4 chunk(s) present" in stdout
    assert not (shared / "manifest.json").exists()
    rc, _, err = _run(["--out", shared, *base, "--check"], capsys)
    assert rc == 1 and "incomplete" in err
    rc, stdout, _ = _run(["--out", shared, *base, "--shard", "0/2"], capsys)
    assert rc == 0 and "complete" in stdout  # the last shard writes the manifest
    assert _files(shared) == _files(whole)
    (shared / "manifest.json").unlink()
    rc, stdout, _ = _run(["--out", shared, *base, "--check"], capsys)
    assert rc == 0 and _files(shared) == _files(whole)
    assert "duplicate" in stdout  # the last CCO repeats the first, found across shards


def test_workers_do_not_change_the_output(tmp_path):
    src = _write_smi(tmp_path / "in.smi", DRUGS[:6])
    one, two = tmp_path / "one", tmp_path / "two"
    assert _run(["--source", src, "--out", one, "--chunk-size", 4, "--workers", 1])[0] == 0
    assert _run(["--source", src, "--out", two, "--chunk-size", 4, "--workers", 2])[0] == 0
    assert _files(one) == _files(two)


def test_csv_sdf_and_moses_sources(tmp_path, capsys):
    csv_path = tmp_path / "mols.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfName,Smiles,pIC50\r\nethanol,CCO,5\r\nbroken,C1CC,4\r\n\r\nbenzene,c1ccccc1,3\r\n")
    rc, stdout, _ = _run(["--source", csv_path, "--out", tmp_path / "c", "--workers", 1], capsys)
    assert rc == 0 and "3 molecules in, 2 written" in stdout and "mols.csv:line 3 'C1CC'" in stdout
    names = [r.props["_Name"] for f in built_files(tmp_path / "c") for r in read_sdf(f).records]
    assert names == ["ethanol", "benzene"]

    bad = tmp_path / "nosmiles.csv"
    bad.write_text("name,structure\na,CCO\n")
    rc, _, err = _run(["--source", bad, "--out", tmp_path / "bad", "--workers", 1], capsys)
    assert rc == 2 and "no SMILES column" in err and "'structure'" in err

    # an SDF source: every record's molecule re-embedded (here our own output)
    sdf_src = built_files(tmp_path / "c")[0]
    rc, stdout, _ = _run(["--source", sdf_src, "--out", tmp_path / "s", "--workers", 1, "--seed", 3], capsys)
    assert rc == 0 and "2 molecules in, 2 written" in stdout
    recs = [r for f in built_files(tmp_path / "s") for r in read_sdf(f).records]
    assert [r.props["SMILES"] for r in recs] == ["CCO", "c1ccccc1"] and recs[0].props["_Name"] == "ethanol"

    rc, stdout, _ = _run(["--out", tmp_path / "m", "--split", "test", "--limit", 3, "--workers", 1], capsys)
    assert rc == 0 and "3 molecules in, 3 written" in stdout
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["split"] == "test" and manifest["limit"] == 3 and manifest["source"]["kind"] == "moses"
    recs = read_sdf(built_files(tmp_path / "m")[0]).records
    assert recs[0].props["_Name"] == "moses_test_0" and recs[0].props["molediff_input_smiles"] != "SMILES"


def test_sample_draws_a_random_subset_in_source_order_the_same_everywhere(tmp_path, capsys):
    """--sample N: N molecules drawn from the whole source, kept in source order, by --seed alone; a build
    of another draw is other settings."""
    from molediff.data.sources import resolve_source

    smiles = ["C" * k + "O" for k in range(1, 13)]
    src = _write_smi(tmp_path / "in.smi", smiles)
    source = resolve_source(str(src), None)
    picks = {seed: [i.text for i in source.subset(4, seed).items()] for seed in range(6)}
    for seed, got in picks.items():
        assert len(got) == 4 and got == sorted(got, key=smiles.index)  # 4 of them, in the file's order
        items = list(source.subset(4, seed).items())
        assert [i.at for i in items] == [0, 1, 2, 3] and [smiles[i.index] for i in items] == got  # built 0..3, named as in the file
        assert got == [i.text for i in resolve_source(str(src), None).subset(4, seed).items()]  # the same draw
    assert len({tuple(v) for v in picks.values()}) > 1 and any(v != smiles[:4] for v in picks.values())
    rc, stdout, _ = _run(["--source", src, "--out", tmp_path / "o", "--sample", 4, "--seed", 1, "--workers", 1], capsys)
    assert rc == 0 and "4 molecules in, 4 written" in stdout
    recs = [r for f in built_files(tmp_path / "o") for r in read_sdf(f).records]
    assert [r.props["molediff_input_smiles"] for r in recs] == picks[1]
    # each molecule keeps its source index (its name and embedding seed): the same record as a full build's
    assert [int(r.props["molediff_source_index"]) for r in recs] == [smiles.index(x) for x in picks[1]]
    rc, _, _ = _run(["--source", src, "--out", tmp_path / "all", "--seed", 1, "--workers", 1], capsys)
    full = {r.props["molediff_input_smiles"]: r for f in built_files(tmp_path / "all") for r in read_sdf(f).records}
    assert rc == 0 and all(r.props["_Name"] == full[r.props["molediff_input_smiles"]].props["_Name"] for r in recs)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["source"]["sample"] == [4, 1]
    rc, _, err = _run(["--source", src, "--out", tmp_path / "o", "--sample", 5, "--seed", 1, "--workers", 1], capsys)
    assert rc == 2 and "other settings" in err


@pytest.mark.parametrize("extra, message", [
    (["--shard", "2/2"], "--shard"),
    (["--split", "test"], "--split applies to --source moses only"),
    (["--limit", "0"], "--limit must be ≥ 1"),
    (["--sample", "0"], "--sample must be ≥ 1"),
    (["--sample", "1"], "the source holds only 1 molecule;"),
    (["--sample", "1", "--limit", "1"], "give one of them"),
    (["--check", "--shard", "0/2"], "without --shard"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, capsys, extra, message):
    src = _write_smi(tmp_path / "in.smi", ["CCO"])
    rc, _, err = _run(["--source", src, "--out", tmp_path / "o", *extra], capsys)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(["--source", tmp_path / "absent.smi", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and "no such file" in err


def test_built_files_without_manifest_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="manifest"):
        built_files(tmp_path)
    shutil.rmtree(tmp_path)
    with pytest.raises(UserError, match="no such folder"):
        built_files(tmp_path)


@pytest.mark.parametrize("smiles, kind, expected", [
    ("[2H]OC", "ok", "isotope labels stripped"),
    ("OB(O)c1ccccc1", "ok", "UFF"),  # MMFF94 has no boron
    ("C[N+](C)(C)C", "ok", "none"),  # a quaternary ammonium keeps its charge
    ("CCCCCCCCCC", "too many atoms", "32 atoms"),
    ("C(C)(C)(C)(C)C", "invalid SMILES", "valence"),
    ("[Na+].[Cl-]", "no organic fragment", "[Na+]"),
    ("C[Se]C.Cl", "element outside table: Se", "Se"),
    ("", "invalid SMILES", "empty"),
])
def test_prepare_reasons(smiles, kind, expected):
    from molediff.chem.conformers import Failure, prepare

    result = prepare("smiles", smiles, 0, 0, conformers=2, max_atoms=30)
    if kind == "ok":
        assert not isinstance(result, Failure), result
        assert expected in result.block
        assert result.block == prepare("smiles", smiles, 0, 0, conformers=2, max_atoms=30).block  # deterministic
        assert result.block != prepare("smiles", smiles, 1, 0, conformers=2, max_atoms=30).block  # seeded by index
    else:
        assert isinstance(result, Failure) and result.reason == kind and expected in result.detail


def test_a_build_that_writes_no_molecule_says_so_and_fails(tmp_path, capsys):
    src = _write_smi(tmp_path / "bad.smi", ["smiles", "C1CC", "not_a_smiles", "[Xe]"])
    rc, out, err = _run(["--source", src, "--out", tmp_path / "out", "--workers", "1"], capsys)
    assert rc == 1
    assert "3 failed" in out and "no molecule could be built" in err and "train with" not in out
