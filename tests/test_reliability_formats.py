"""Reliability for the formats and shapes of records users bring (issue 31, "nothing lost, clear
errors"): V3000 SDF files with the newer elements read exactly like their V2000 form, records with
overlapping atoms (duplicated coordinates) are scored by ``molediff evaluate`` and refused, counted and
named, as training data, and enormous records (> 200 atoms) are scored or refused by count, never a
traceback. CLI checks run ``python -m molediff`` in a subprocess on files written to ``tmp_path``.

The lookup view keeps the published (EDM) rule as it is, overlaps included, so that its figures stay
comparable with papers; the read report names every overlapping record it kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem
from rdkit.Geometry import Point3D

from molediff.chem.io import read_sdf
from molediff.chem.bonds import closest_pair
from molediff.config import TRAINING_MAX_ATOMS
from molediff.data.files import OVERLAP, TOO_MANY, read_molecule_files
from molediff.elements import ELEMENTS
from tests.test_reliability_inputs import ENV, _molecules

#: S, Cl, Br, P, I, B and Si with formal charges (N+, O-, S+), aromatic rings and hypervalent S and P
NEWER = ["C[N+](C)(C)CC(=O)[O-]", "CS(=O)(=O)c1ccc(Cl)cc1Br", "COP(=O)(O)OC", "Ic1ccccc1[O-]",
         "OB(O)c1ccccc1", "C[Si](C)(C)CCl", "C[S+](C)C"]


def _cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molediff", *argv], capture_output=True, text=True, env=ENV, timeout=timeout)


def _clean(proc: subprocess.CompletedProcess, code: int = 0) -> None:
    """Exit ``code``, and no traceback or crash anywhere."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout


def _embedded(smiles: list[str]) -> list[Chem.Mol]:
    mols = []
    with rdBase.BlockLogs():  # UFF grumbles about S+
        for k, smi in enumerate(smiles):
            mol = Chem.AddHs(Chem.MolFromSmiles(smi))
            assert AllChem.EmbedMolecule(mol, randomSeed=k) == 0, smi
            mol.SetProp("_Name", smi)
            mols.append(mol)
    return mols


def _write(path: Path, mols: list[Chem.Mol], v3000: bool | list[bool] = False) -> Path:
    writer = Chem.SDWriter(str(path))
    for k, mol in enumerate(mols):
        writer.SetForceV3000(v3000[k] if isinstance(v3000, list) else v3000)
        writer.write(mol)
    writer.close()
    return path


def _evaluate_json(tmp_path: Path, sdf: Path, *options: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / f"{sdf.stem}{'_'.join(o.strip('-') for o in options)}.json"
    proc = _cli("evaluate", str(sdf), "--no-reference", "--quiet", "--json", str(out), *options)
    _clean(proc)
    return proc, json.loads(out.read_text())


# ---------------------------------------------------------------------------- 1. V3000


@pytest.fixture(scope="module")
def newer_files(tmp_path_factory) -> tuple[list[Chem.Mol], dict[str, Path]]:
    folder = tmp_path_factory.mktemp("v3000")
    mols = _embedded(NEWER)
    files = {"v2000": _write(folder / "v2000.sdf", mols), "v3000": _write(folder / "v3000.sdf", mols, True),
             "mixed": _write(folder / "mixed.sdf", mols, [k % 2 == 1 for k in range(len(mols))])}
    aromatic = folder / "v3000_aromatic.sdf"  # aromatic bond type 4, as other tools write V3000
    aromatic.write_text("".join(Chem.MolToMolBlock(m, forceV3000=True, kekulize=False) + "$$$$\n" for m in mols))
    files["v3000_aromatic"] = aromatic
    assert "V3000" in files["v3000"].read_text() and "V3000" not in files["v2000"].read_text()
    written = Chem.SDMolSupplier(str(aromatic), sanitize=False, removeHs=False)[1]
    assert any(b.GetBondType() == Chem.BondType.AROMATIC for b in written.GetBonds())
    return mols, files


def test_v3000_records_with_newer_elements_read_exactly_like_v2000(newer_files):
    mols, files = newer_files
    ref = read_sdf(files["v2000"])
    assert not ref.errors and len(ref.records) == len(mols)
    for mol, rec in zip(mols, ref.records):  # V2000 as written: the molecule's own atoms, bonds, charges
        assert rec.symbols == [a.GetSymbol() for a in mol.GetAtoms()]
        np.testing.assert_allclose(rec.pos, mol.GetConformer().GetPositions(), atol=1e-4)
        assert rec.charges.tolist() == [a.GetFormalCharge() for a in mol.GetAtoms()]
        assert len(rec.bonds[0]) == mol.GetNumBonds()
    assert {"S", "Cl", "Br", "P", "I", "B", "Si"} <= {s for r in ref.records for s in r.symbols}
    assert sorted({int(c) for r in ref.records for c in r.charges}) == [-1, 0, 1]
    for name in ("v3000", "mixed", "v3000_aromatic"):
        got = read_sdf(files[name])
        assert not got.errors and len(got.records) == len(ref.records), name
        for a, b in zip(ref.records, got.records):
            assert a.symbols == b.symbols and a.props["_Name"] == b.props["_Name"], name
            np.testing.assert_allclose(a.pos, b.pos, atol=1e-4)
            assert all(np.array_equal(x, y) for x, y in zip(a.bonds, b.bonds)), (name, a.props["_Name"])
            assert np.array_equal(a.charges, b.charges) and "_molediff_unkekulizable" not in b.props, name
            assert "_molediff_implicit_h" not in b.props, name

    v2, r2 = read_molecule_files(files["v2000"], bonds=True, implicit_hydrogens="refuse", overlapping="refuse")
    for name in ("v3000", "mixed", "v3000_aromatic"):
        v3, r3 = read_molecule_files(files[name], bonds=True, implicit_hydrogens="refuse", overlapping="refuse")
        assert r3.num_read == r2.num_read == len(mols) and not r3.skipped and not r3.overlapping, r3.summary()
        assert v3.atom_type.tolist() == v2.atom_type.tolist() and v3.ptr.tolist() == v2.ptr.tolist()
        np.testing.assert_allclose(v3.pos.numpy(), v2.pos.numpy(), atol=1e-4)
        assert v3.charge.tolist() == v2.charge.tolist() and v3.bond_order.tolist() == v2.bond_order.tolist()
        assert v3.bond_index.tolist() == v2.bond_index.tolist() and v3.bond_ptr.tolist() == v2.bond_ptr.tolist()
        assert bool(v3.has_bonds.all())
    assert {ELEMENTS[t] for t in v2.atom_type.tolist()} >= {"S", "Cl", "Br", "P", "I", "B", "Si"}


def test_evaluate_model_bonds_scores_v3000_like_v2000(newer_files, tmp_path):
    _, files = newer_files
    results = {}
    for name in ("v2000", "v3000"):
        proc, payload = _evaluate_json(tmp_path, files[name], "--bonds", "model")
        assert f"read {len(NEWER)} of {len(NEWER)} molecule record(s)" in proc.stderr
        metrics = payload["metrics"]
        metrics.pop("seconds", None)
        results[name] = metrics
    assert results["v3000"] == results["v2000"]
    m = results["v3000"]
    assert m["num_molecules"] == len(NEWER) and m["bonds"] == "model" and m["num_without_bonds"] == 0
    assert m["model_molecule_stability"] == 1.0 and m["model_connected_validity"] == 1.0  # the file's own bonds and charges


# ---------------------------------------------------------------------------- 2. overlapping atoms


def _overlapping(folder: Path, xyz: bool = False) -> Path:
    """A clean CCN, then CCO with one H on its carbon (duplicated coordinates), then CCO with two carbons
    0.005 Å apart: records 1 and 2 overlap."""
    good, bad = _embedded(["CCN", "CCO"])
    same = Chem.Mol(bad)
    conf = same.GetConformer()
    conf.SetAtomPosition(3, conf.GetAtomPosition(0))
    near = Chem.Mol(same)
    c1 = near.GetConformer().GetAtomPosition(1)
    near.GetConformer().SetAtomPosition(0, Point3D(c1.x + 0.005, c1.y, c1.z))
    folder.mkdir(parents=True, exist_ok=True)
    if not xyz:
        return _write(folder / "overlap.sdf", [good, same, near])
    from molediff.chem.io import write_xyz

    path = folder / "overlap.xyz"
    write_xyz(path, [([a.GetSymbol() for a in m.GetAtoms()], m.GetConformer().GetPositions()) for m in (good, same, near)])
    return path


def test_closest_pair_finds_duplicated_and_near_coordinates():
    pos = np.array([[0.0, 0, 0], [1.5, 0, 0], [0, 1.5, 0], [0, 0, 1.5]])
    assert closest_pair(pos) is None and closest_pair(pos[:1]) is None
    assert closest_pair(np.vstack([pos, pos[2]])) == (2, 4, 0.0)
    i, j, d = closest_pair(np.vstack([pos, pos[1] + [0, 0, 0.009]]))
    assert (i, j) == (1, 4) and d == pytest.approx(0.009)
    flat = np.zeros((50, 3))  # every atom in one x slab: still the true closest pair
    flat[:, 1] = np.arange(50) * 1.1
    flat[37, 1] = flat[12, 1] + 0.3
    assert closest_pair(flat)[:2] == (12, 37)


def test_overlapping_records_are_refused_counted_and_named_as_training_data(tmp_path):
    for path in (_overlapping(tmp_path / "sdf"), _overlapping(tmp_path / "xyz", xyz=True)):
        mols, report = read_molecule_files(path, bonds=True, implicit_hydrogens="refuse", overlapping="refuse")
        assert len(mols) == 1 and report.num_records == 3 and report.skipped == {OVERLAP: 2}, report.summary()
        text = report.summary()
        assert "2 x overlapping atoms" in text and f"{path.name}:1: atoms 0 and 3 (C, H) 0.000 Å apart" in text
        assert f"{path.name}:2: atoms 0 and 1 (C, C) 0.005 Å apart" in text
        # kept for scoring: read as written, counted, and their bonds not used (has_bonds False)
        mols, report = read_molecule_files(path, bonds=True)
        assert len(mols) == 3 and not report.skipped and report.overlapping == 2
        assert mols.has_bonds.tolist() == [True, False, False]
        assert "2 record(s) kept with overlapping atoms" in report.summary()
        assert report.to_dict()["overlapping"] == 2


@pytest.fixture(scope="module")
def overlap_scores(tmp_path_factory) -> dict:
    """``molediff evaluate --bonds model`` of the overlapping SDF (model bonds and the lookup geometry view)."""
    folder = tmp_path_factory.mktemp("overlap")
    proc, payload = _evaluate_json(folder, _overlapping(folder), "--bonds", "model")
    assert "read 3 of 3 molecule record(s)" in proc.stderr and "2 record(s) kept with overlapping atoms" in proc.stderr
    assert "overlap.sdf:1: atoms 0 and 3 (C, H)" in proc.stderr
    return payload["metrics"]


def test_evaluate_scores_overlapping_records_as_unstable_and_invalid_with_model_bonds(overlap_scores):
    m = overlap_scores
    assert m["num_molecules"] == 3 and m["num_without_bonds"] == 2
    assert m["model_molecule_stability"] == pytest.approx(1 / 3) and m["model_connected_validity"] == pytest.approx(1 / 3)


def test_evaluate_model_bonds_of_an_xyz_with_duplicated_coordinates_does_not_crash(tmp_path):
    """Perceiving bonds (RDKit's extended-Hueckel connectivity) of coincident atoms used to kill the
    process (SIGSEGV) here and in ``molediff train --data FILE.xyz --diffusion-bonds``."""
    proc, payload = _evaluate_json(tmp_path, _overlapping(tmp_path, xyz=True), "--bonds", "model")
    assert "read 3 of 3 molecule record(s)" in proc.stderr and "overlap.xyz:1" in proc.stderr
    m = payload["metrics"]
    assert m["num_without_bonds"] == 2 and m["model_molecule_stability"] == pytest.approx(1 / 3)


def test_evaluate_rdkit_bonds_of_overlapping_records_does_not_crash(tmp_path):
    proc, payload = _evaluate_json(tmp_path, _overlapping(tmp_path), "--bonds", "rdkit")
    assert "read 3 of 3 molecule record(s)" in proc.stderr
    assert payload["metrics"]["num_molecules"] == 3 and payload["metrics"]["validity"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------- 3. enormous records


def _alkane(n_carbons: int) -> Chem.Mol:
    """An all-trans alkane with hand-placed coordinates (C-C 1.55 Å, C-H 1.09 Å): no embedding cost."""
    mol = Chem.AddHs(Chem.MolFromSmiles("C" * n_carbons))
    conf = Chem.Conformer(mol.GetNumAtoms())
    conf.Set3D(True)
    for i in range(n_carbons):
        x, s = 1.26 * i, (-1) ** i
        conf.SetAtomPosition(i, Point3D(x, 0.45 * s, 0.0))
        hs = [n.GetIdx() for n in mol.GetAtomWithIdx(i).GetNeighbors() if n.GetSymbol() == "H"]
        spots = [(x, 0.45 * s + 0.63 * s, 0.89), (x, 0.45 * s + 0.63 * s, -0.89), (x + (1.0 if i else -1.0), 0.45 * s + 0.4 * s, 0.0)]
        for h, spot in zip(hs, spots):
            conf.SetAtomPosition(h, Point3D(*spot))
    mol.AddConformer(conf, assignId=True)
    mol.SetProp("_Name", f"C{n_carbons}H{2 * n_carbons + 2}")
    return mol


@pytest.fixture(scope="module")
def enormous_sdf(tmp_path_factory) -> Path:
    """Two small molecules around a 254-atom alkane (V3000, the form of records past 999 atoms)."""
    small = _embedded(["CCO", "CCN"])
    big = _alkane(84)
    assert big.GetNumAtoms() == 254 and closest_pair(big.GetConformer().GetPositions()) is None
    return _write(tmp_path_factory.mktemp("big") / "big.sdf", [small[0], big, small[1]], True)


def test_enormous_records_are_refused_by_count_as_training_data(enormous_sdf):
    mols, report = read_molecule_files(enormous_sdf, max_atoms=TRAINING_MAX_ATOMS, bonds=True, implicit_hydrogens="refuse",
                                       overlapping="refuse")
    assert len(mols) == 2 and report.skipped == {TOO_MANY: 1}
    assert f"big.sdf:1: 254 atoms > {TRAINING_MAX_ATOMS}" in report.summary()


def test_evaluate_scores_enormous_records_or_refuses_them_by_count(enormous_sdf, tmp_path):
    proc, payload = _evaluate_json(tmp_path, enormous_sdf, "--bonds", "model")
    assert "read 3 of 3 molecule record(s)" in proc.stderr
    m = payload["metrics"]
    assert m["num_molecules"] == 3 and m["model_molecule_stability"] == 1.0 and m["num_without_bonds"] == 0
    assert m["molecule_stability"] == 1.0  # the hand-built chain is a clean geometry for the lookup rule too
    proc, payload = _evaluate_json(tmp_path, enormous_sdf, "--max-atoms", "200")
    assert "read 2 of 3 molecule record(s)" in proc.stderr and "1 x too many atoms" in proc.stderr
    assert "big.sdf:1: 254 atoms > 200" in proc.stderr and payload["metrics"]["num_molecules"] == 2


def test_data_refuses_enormous_smiles_and_sdf_records_by_count(tmp_path):
    peptide = Chem.MolFromSequence("ACDEFGHIKLMNPQRSTVWY")  # 327 atoms with hydrogens
    smi = tmp_path / "big.smi"
    smi.write_text(f"CCO ethanol\n{'C' * 84} alkane\n{Chem.MolToSmiles(peptide)} peptide\n")
    sdf = _write(tmp_path / "big.sdf", [Chem.MolFromSmiles("CCO"), peptide], True)  # 2D: the builder re-embeds
    for source, where in ((smi, ("big.smi:line 2", "big.smi:line 3")), (sdf, ("big.sdf:record 2",))):
        proc = _cli("data", "--source", str(source), "--out", str(tmp_path / f"out_{source.suffix[1:]}"), "--workers", "1",
                    "--no-progress")
        _clean(proc)
        n = len(where)
        assert f"{n + 1} molecules in, 1 written, {n} failed" in proc.stdout and f"{n} x too many atoms" in proc.stdout
        assert "atoms with hydrogens > --max-atoms 200" in proc.stdout and all(w in proc.stdout for w in where)


def test_train_skips_enormous_and_overlapping_records_counted_and_named(tmp_path, enormous_sdf):
    data = _molecules(tmp_path / "data", ["CCO", "CCN", "CC=O", "CCC", "OCO", "NCN"])
    (data / "big.sdf").write_bytes(enormous_sdf.read_bytes())
    _overlapping(data)
    proc = _cli("train", "--data", str(data), "--out", str(tmp_path / "run"), "--max-steps", "2", "--model-hidden", "8",
                "--model-layers", "1", "--batch-size", "2", "--eval-every-steps", "0", "--eval-samples", "0",
                "--no-progress", "--threads", "1")
    _clean(proc)
    assert "read 9 of 12 molecule record(s)" in proc.stdout, proc.stdout
    assert "1 x too many atoms" in proc.stdout and "big.sdf:1: 254 atoms > 200" in proc.stdout
    assert "2 x overlapping atoms" in proc.stdout and "overlap.sdf:1: atoms 0 and 3 (C, H)" in proc.stdout


def test_train_refuses_an_unfinished_data_build(tmp_path):
    """A folder 'molediff data' is still writing (chunks and sidecars, no manifest) is not trained on
    silently: the run names what is missing and how to finish it."""
    data = _molecules(tmp_path / "build", ["CCO", "CCN", "CC=O", "CCC"])
    (sdf,) = sorted(data.glob("*.sdf"))
    sdf.rename(data / "chunk_000000.sdf")
    (data / "chunk_000000.json").write_text("{}")
    proc = _cli("train", "--data", str(data), "--out", str(tmp_path / "run"), "--max-steps", "1", "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no readable manifest.json; finish the build with 'molediff data" in proc.stderr
