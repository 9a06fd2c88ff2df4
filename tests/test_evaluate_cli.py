"""``molediff evaluate``: table, JSON, report files, and clean errors (exit 2, no traceback) for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem

from molediff.data import reference as reference_data
from molediff.chem import write_sdf
from molediff.cli import main
from molediff.metrics import PUBLISHED_QM9_DATA_PERCENT
from tests.chem_molecules import KNOWN, ORDER, fake_reference


@pytest.fixture()
def hand_sdf(tmp_path: Path) -> Path:
    path = tmp_path / "hand.sdf"
    write_sdf(path, [KNOWN[name][0]() for name in ORDER], metadata={"model": "hand"})
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["evaluate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_prints_table_and_writes_json(capsys, hand_sdf: Path, tmp_path: Path):
    out_json = tmp_path / "res" / "metrics.json"
    code, out, err = _run(capsys, str(hand_sdf), "--no-reference", "--quiet", "--json", str(out_json))
    assert code == 0, err
    assert "read 9 of 9" in err
    lines = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    assert "77.78" in lines["molecule stability"] and "95.2" in lines["molecule stability"]
    assert "88.89" in lines["validity"] and f"{PUBLISHED_QM9_DATA_PERCENT['validity']:.1f}" in lines["validity"]
    assert "66.67" in lines["strict validity"]
    payload = json.loads(out_json.read_text())
    m = payload["metrics"]
    assert m["num_molecules"] == 9 and m["bonds"] == "lookup"
    assert m["validity"] == pytest.approx(8 / 9) and m["uniqueness"] == pytest.approx(6 / 8)
    assert m["novelty"] is None
    assert payload["read_report"]["num_read"] == 9
    assert payload["published_qm9_data_percent"] == PUBLISHED_QM9_DATA_PERCENT


def test_rdkit_bonds_and_limit(capsys, hand_sdf: Path, tmp_path: Path):
    out_json = tmp_path / "r.json"
    code, out, err = _run(capsys, str(hand_sdf), "--bonds", "rdkit", "--no-reference", "--quiet", "--limit", "5", "--json", str(out_json))
    assert code == 0, err
    m = json.loads(out_json.read_text())["metrics"]
    assert m["num_molecules"] == 5 and m["bonds"] == "rdkit" and m["validity"] == 1.0
    assert "95.2" not in out  # the published row is for lookup bonds only
    assert json.loads(out_json.read_text())["published_qm9_data_percent"] is None


def test_report_files(capsys, monkeypatch, tmp_path: Path):
    from molediff.data.qm9 import load_qm9

    qm9 = load_qm9("test", progress=False).subset(np.arange(100, 160))
    mols = [qm9.molecule(i) for i in range(len(qm9))]
    sdf = tmp_path / "q.sdf"
    write_sdf(sdf, mols + [KNOWN["o_three_bonds"][0]()])
    ref = fake_reference(mols)
    monkeypatch.setattr(reference_data, "reference_statistics", lambda bonds, progress=True: ref)
    monkeypatch.setattr(reference_data, "training_smiles", lambda bonds, progress=True: frozenset())
    report = tmp_path / "report"
    out_json = tmp_path / "m.json"
    code, out, err = _run(capsys, str(sdf), "--report", str(report), "--json", str(out_json), "--quiet")
    assert code == 0, err
    data = (report / "distributions.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    page = (report / "index.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page  # the plots travel inside the page
    table = pd.read_csv(report / "molecules.csv")
    assert len(table) == 61 and table["novel"].sum() == table["valid"].sum()  # the empty novelty reference: every valid one novel
    assert not table["valid"].iloc[-1]  # the three-bonded O
    m = json.loads(out_json.read_text())["metrics"]
    assert m["novelty"] == 1.0
    assert table["valid"].mean() == pytest.approx(m["validity"]) and table["stable"].mean() == pytest.approx(m["molecule_stability"])
    assert m["distributions"]["reference"] == "fake"
    assert "bond lengths" in out and "distributions vs fake" in out


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.sdf", "", "empty file"),
        ("garbage.sdf", "this is\nnot an sdf\n", "not an SDF file"),
        ("nothing.xyz", "\n\n", "empty file"),
    ],
)
def test_bad_files_exit_2_with_message(capsys, tmp_path: Path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    code, out, err = _run(capsys, str(path), "--no-reference", "--quiet")
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.startswith("molediff evaluate: error:")


def test_unsupported_elements_and_2d_and_missing(capsys, tmp_path: Path):
    from rdkit.Chem import AllChem, rdDepictor

    mol = Chem.AddHs(Chem.MolFromSmiles("C[SeH]"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    selenol = tmp_path / "selenol.sdf"
    Chem.MolToMolFile(mol, str(selenol))
    code, _out, err = _run(capsys, str(selenol), "--no-reference", "--quiet")
    assert code == 2 and "Se" in err and "element outside" in err

    flat = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    rdDepictor.Compute2DCoords(flat)
    flat_path = tmp_path / "flat.sdf"
    Chem.MolToMolFile(flat, str(flat_path))
    code, _out, err = _run(capsys, str(flat_path), "--no-reference", "--quiet")
    assert code == 2 and "no 3D coordinates" in err

    code, _out, err = _run(capsys, str(tmp_path / "missing.sdf"), "--quiet")
    assert code == 2 and "no such file" in err


def test_bad_arguments(capsys, hand_sdf: Path, tmp_path: Path):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", str(hand_sdf), "--limit", "0"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["evaluate", str(hand_sdf), "--bonds", "magic"])
    assert info.value.code == 2
    capsys.readouterr()
    code, _out, err = _run(capsys, str(hand_sdf), "--no-reference", "--quiet", "--json", str(tmp_path))
    assert code == 2 and "is a folder" in err
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    code, _out, err = _run(capsys, str(hand_sdf), "--no-reference", "--quiet", "--report", str(a_file))
    assert code == 2 and "exists and is not a folder" in err and "Traceback" not in err
    code, _out, err = _run(capsys, str(hand_sdf), "--no-reference", "--quiet", "--report", str(a_file / "below"))
    assert code == 2 and "cannot write to --report" in err


@pytest.mark.slow
def test_evaluate_against_real_qm9(capsys, tmp_path: Path):
    """Full default run (novelty + QM9 reference; builds the caches on first use: ~1.5 min)."""
    from molediff.data.qm9 import load_qm9

    qm9 = load_qm9("test", progress=False)
    sdf = tmp_path / "q.sdf"
    write_sdf(sdf, [qm9.molecule(i) for i in range(0, 13_083, 60)])
    out_json = tmp_path / "m.json"
    code, out, err = _run(capsys, str(sdf), "--json", str(out_json), "--report", str(tmp_path / "rep"), "--quiet")
    assert code == 0, err
    m = json.loads(out_json.read_text())["metrics"]
    assert m["validity"] > 0.95 and m["novelty"] > 0.5
    assert m["distributions"]["bond_length_w1_angstrom"]["mean"] < 0.01
