"""``molediff evaluate`` on drug-like files (issue 27, item 5): every record of a supported element is
scored, and novelty / distributions come from the reference the user names (``--reference``), never
from QM9 by default for molecules outside QM9's elements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.cli import main
from molediff.data import reference as reference_data

#: Five drug-like molecules with S, Cl, Br, P and I (sulfone, thioether, phosphate, aryl halides).
DRUGLIKE = (
    "CSc1ccc(Cl)cc1",
    "NC(=O)c1ccccc1Br",
    "COP(=O)(OC)Oc1ccccc1",
    "Oc1ccc(I)cc1",
    "CS(=O)(=O)c1ccc(Cl)cc1",
)
#: Three others (different SMILES) for a reference that shares none of them.
OTHERS = ("Clc1ccc(Br)cc1", "CCSCC(=O)O", "Ic1ccccc1OC")


def _etkdg(k: int) -> AllChem.EmbedParameters:
    """ETKDGv3 with a fixed seed per molecule."""
    params = AllChem.ETKDGv3()
    params.randomSeed = 1000 + k
    return params


def _write(path: Path, smiles: tuple[str, ...]) -> Path:
    writer = Chem.SDWriter(str(path))
    for k, smi in enumerate(smiles):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        assert AllChem.EmbedMolecule(mol, _etkdg(k)) == 0, smi
        assert AllChem.MMFFOptimizeMolecule(mol, maxIters=2000) == 0, smi
        mol.SetProp("_Name", smi)
        writer.write(mol)
    writer.close()
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("druglike")
    return {"drugs": _write(folder / "drugs.sdf", DRUGLIKE), "others": _write(folder / "others.sdf", OTHERS)}


@pytest.fixture()
def no_qm9(monkeypatch):
    """Fail the test if anything reaches for the QM9 references."""

    def refuse(*_a, **_k):
        raise AssertionError("QM9 reference data was used")

    monkeypatch.setattr(reference_data, "training_smiles", refuse)
    monkeypatch.setattr(reference_data, "reference_statistics", refuse)


def _evaluate(capsys, tmp_path: Path, *argv: str) -> tuple[dict, str, str]:
    out_json = tmp_path / "m.json"
    code = main(["evaluate", *argv, "--quiet", "--json", str(out_json)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out_json.read_text()), out, err


def test_druglike_file_is_scored_whole_and_model_bonds_are_stable(capsys, tmp_path, files, no_qm9):
    payload, out, err = _evaluate(capsys, tmp_path, str(files["drugs"]), "--bonds", "model")
    assert "read 5 of 5" in err and "skipped" not in err  # no record refused
    assert payload["read_report"]["num_read"] == 5 and not payload["read_report"]["skipped"]
    m = payload["metrics"]
    assert m["num_molecules"] == 5
    assert m["model_molecule_stability"] == 1.0 and m["model_atom_stability"] == 1.0
    assert m["model_connected_validity"] == 1.0 and m["num_without_bonds"] == 0
    # no reference named, elements outside QM9's: no QM9 novelty, no distributions, and the table says so
    assert m["novelty"] is None and m["model_novelty"] is None and "distributions" not in m
    assert m["reference_set"] is None and m["qm9_elements_only"] is False
    assert "reference: none" in out and "--reference" in out
    assert payload["published_qm9_data_percent"] is None and "95.2" not in out


def test_non_qm9_file_without_reference_gets_no_qm9_novelty(capsys, tmp_path, files, no_qm9):
    for bonds in ("lookup", "rdkit"):
        m = _evaluate(capsys, tmp_path, str(files["drugs"]), "--bonds", bonds)[0]["metrics"]
        assert m["novelty"] is None and m["num_novel"] is None and "distributions" not in m
        assert m["reference_set"] is None


@pytest.mark.parametrize("bonds", ["model", "rdkit"])
def test_reference_file_novelty(capsys, tmp_path, files, no_qm9, bonds):
    """Against themselves: nothing is novel; against other molecules: everything is."""
    nov = "model_novelty" if bonds == "model" else "novelty"
    same, out, _ = _evaluate(capsys, tmp_path, str(files["drugs"]), "--bonds", bonds, "--reference", str(files["drugs"]))
    m = same["metrics"]
    assert m[nov] == 0.0 and m["reference_set"]["kind"] == "molecules"
    assert "reference: " in out and "drugs.sdf" in out
    dist = m["distributions"]
    assert dist["atom_type_tv"] == pytest.approx(0.0) and dist["num_atoms_tv"] == pytest.approx(0.0)
    assert dist["bond_length_w1_angstrom"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert "distributions vs" in out and "drugs.sdf: 5 molecules" in out
    other = _evaluate(capsys, tmp_path, str(files["drugs"]), "--bonds", bonds, "--reference", str(files["others"]))[0]["metrics"]
    assert other[nov] == 1.0
    assert other["distributions"]["atom_type_tv"] > 0.0
    if bonds == "rdkit":
        assert m["num_unique"] == 5 and other["num_novel"] == 5


def test_reference_folder_and_none(capsys, tmp_path, files, no_qm9):
    m = _evaluate(capsys, tmp_path, str(files["drugs"]), "--bonds", "rdkit", "--reference", str(files["drugs"].parent))[0]["metrics"]
    assert m["novelty"] == 0.0  # the folder holds both files: the evaluated molecules are in it
    for flag in (["--reference", "none"], ["--no-reference"], ["--no-reference", "--reference", "NONE"]):
        m = _evaluate(capsys, tmp_path, str(files["drugs"]), *flag)[0]["metrics"]
        assert m["novelty"] is None and "distributions" not in m and m["reference_set"] is None


def test_reference_qm9_on_request_and_bad_references(capsys, tmp_path, files, monkeypatch):
    """--reference qm9 is honoured for any file; a missing reference or a contradiction is a clean error."""
    from tests.chem_molecules import fake_reference

    monkeypatch.setattr(reference_data, "training_smiles", lambda bonds, progress=True: frozenset({"CCO"}))
    monkeypatch.setattr(reference_data, "reference_statistics", lambda bonds, progress=True: fake_reference([(["H", "H"], [[0, 0, 0], [0, 0, 0.74]])]))
    m = _evaluate(capsys, tmp_path, str(files["drugs"]), "--bonds", "rdkit", "--reference", "qm9")[0]["metrics"]
    assert m["novelty"] == 1.0 and m["reference_set"]["kind"] == "qm9" and "distributions" in m
    code = main(["evaluate", str(files["drugs"]), "--quiet", "--reference", str(tmp_path / "missing.sdf")])
    err = capsys.readouterr().err
    assert code == 2 and "--reference" in err and "no such file" in err
    code = main(["evaluate", str(files["drugs"]), "--quiet", "--no-reference", "--reference", str(files["others"])])
    assert code == 2 and "give one" in capsys.readouterr().err


def test_qm9_files_still_default_to_qm9(capsys, tmp_path, monkeypatch):
    """A file of QM9's elements alone keeps today's default: novelty and distributions against QM9."""
    from molediff.chem import write_sdf
    from tests.chem_molecules import KNOWN, ORDER, fake_reference

    mols = [KNOWN[name][0]() for name in ORDER]
    path = tmp_path / "hand.sdf"
    write_sdf(path, mols)
    asked = []
    monkeypatch.setattr(reference_data, "training_smiles", lambda bonds, progress=True: asked.append(bonds) or frozenset())
    monkeypatch.setattr(reference_data, "reference_statistics", lambda bonds, progress=True: fake_reference(mols))
    payload, out, _ = _evaluate(capsys, tmp_path, str(path))
    m = payload["metrics"]
    assert asked == ["lookup"] and m["novelty"] == 1.0 and m["reference_set"]["kind"] == "qm9"
    assert m["qm9_elements_only"] is True and "95.2" in out and "reference: none" not in out


@pytest.mark.parametrize("bonds", ["model", "lookup"])  # the drug-like novelty reads the reference's bonds either way
def test_druglike_tables_against_a_reference_and_novelty_against_the_named_molecules(files, monkeypatch, capsys, tmp_path, bonds):
    from molediff.metrics.reference import smiles_reference

    small = smiles_reference(list(OTHERS) + list(DRUGLIKE), "small", compute_fcd=False)
    monkeypatch.setattr(reference_data, "moses_test_reference", lambda: small)
    out = tmp_path / "m.json"
    code = main(["evaluate", str(files["drugs"]), "--bonds", bonds, "--druglike", "--reference", str(files["drugs"]),
                 "--json", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "MOSES metrics" in printed and "MMFF94 relaxation" in printed
    dl = json.loads(out.read_text())["metrics"]["druglike"]
    assert dl["moses"]["validity"] == 1.0 and dl["moses"]["novelty"] == 0.0  # the same molecules as the reference
    assert dl["moses"]["reference"] == "small" and dl["rings_reference"]["source"] == "the 8 small molecules"
    assert dl["relaxation"]["energy_drop_median_kcal_mol"] < 1.0  # MMFF-optimised already


def test_druglike_novelty_ignores_the_stereo_that_3d_coordinates_imply(tmp_path):
    """A chiral molecule read from a 3D file and the same graph from a model's bonds (no stereo) are one
    molecule for novelty and FCD (MOSES's sets carry no stereo)."""
    from molediff.chem.rdkit_mol import canonical_smiles

    path = _write(tmp_path / "chiral.sdf", ("C[C@H](N)C(=O)O",))
    mol = next(iter(Chem.SDMolSupplier(str(path), removeHs=False)))
    assert "@" in canonical_smiles(mol, isomeric=True)
    assert canonical_smiles(mol) == canonical_smiles("CC(N)C(=O)O") == "CC(N)C(=O)O"
