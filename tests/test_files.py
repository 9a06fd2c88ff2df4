"""molediff.data.files: reading SDF/XYZ files and folders, with counted, named reasons for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from molediff.chem import write_sdf, write_xyz
from molediff.data.files import BAD_ELEMENT, read_molecule_files, read_xyz
from molediff.elements import ELEMENTS
from molediff.errors import UserError
from tests.chem_molecules import ethene, hydrogen_cyanide, methane, water


def test_reads_sdf_and_xyz_folder(tmp_path: Path):
    write_sdf(tmp_path / "a.sdf", [methane(), ethene()])
    sub = tmp_path / "sub"
    sub.mkdir()
    write_xyz(sub / "b.xyz", [water(), hydrogen_cyanide()])
    (tmp_path / "notes.txt").write_text("ignored: folders only pick .sdf/.sd/.mol/.xyz")
    molecules, report = read_molecule_files(tmp_path)
    assert len(molecules) == 4 and report.num_read == 4 and report.num_records == 4 and not report.skipped
    assert molecules.names == ["a.sdf:0", "a.sdf:1", "b.xyz:0", "b.xyz:1"]
    symbols, pos = molecules.molecule(3)
    assert list(symbols) == hydrogen_cyanide()[0]
    np.testing.assert_allclose(pos, hydrogen_cyanide()[1], atol=1e-6)
    assert molecules.num_atoms.tolist() == [5, 6, 3, 3]
    assert molecules.pos.dtype.is_floating_point and molecules.atom_type.max() < len(ELEMENTS)


def test_unknown_elements_are_named_and_counted(tmp_path: Path):
    path = tmp_path / "m.xyz"
    path.write_text("3\nwater\nO 0 0 0.1\nH 0.96 0 0\nH -0.24 0.93 0\n2\nHSe\nSe 0 0 0.1\nH 1.46 0 0\n2\nHSn\nSn 0 0 0.1\nH 1.71 0 0\n")
    molecules, report = read_molecule_files(path)
    assert len(molecules) == 1
    assert report.skipped[BAD_ELEMENT] == 2
    assert report.unknown_elements == {"Se": 1, "Sn": 1}
    summary = report.summary()
    assert "Se" in summary and "Sn" in summary and "read 1 of 3" in summary


def test_only_bad_elements_raises_user_error(tmp_path: Path):
    path = tmp_path / "s.sdf"
    mol = Chem.AddHs(Chem.MolFromSmiles("C[SeH]"))
    from rdkit.Chem import AllChem

    AllChem.EmbedMolecule(mol, randomSeed=1)
    Chem.MolToMolFile(mol, str(path))
    with pytest.raises(UserError, match="Se"):
        read_molecule_files(path)


def test_missing_3d_coordinates(tmp_path: Path):
    path = tmp_path / "flat.sdf"
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    from rdkit.Chem import rdDepictor

    rdDepictor.Compute2DCoords(mol)  # 2D depiction: "2D" header
    Chem.MolToMolFile(mol, str(path))
    with pytest.raises(UserError, match="no 3D coordinates"):
        read_molecule_files(path)
    xyz = tmp_path / "flat.xyz"
    xyz.write_text("3\nplanar, z all zero\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    with pytest.raises(UserError, match="all z = 0"):
        read_molecule_files(xyz)


def test_too_many_atoms_and_limit(tmp_path: Path):
    path = tmp_path / "m.sdf"
    write_sdf(path, [methane(), water(), ethene(), hydrogen_cyanide()])
    molecules, report = read_molecule_files(path, max_atoms=5)
    assert len(molecules) == 3 and report.skipped == {"too many atoms": 1}
    assert "6 atoms > 5" in report.summary()
    molecules, report = read_molecule_files(path, limit=2)
    assert len(molecules) == 2
    with pytest.raises(UserError, match="too many atoms"):
        read_molecule_files(path, max_atoms=2)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.sdf", b"", "empty file"),
        ("blank.xyz", b"\n\n   \n", "empty file"),
        ("garbage.sdf", b"hello\nthis is not a molecule\n", "not an SDF file"),
        ("garbage.xyz", b"hello\nworld\n", "unreadable record"),
        ("binary.sdf", bytes(range(256)) * 4, "unreadable file"),
        ("table.csv", b"a,b\n1,2\n", "unsupported file type"),
    ],
)
def test_bad_files_raise_clear_user_errors(tmp_path: Path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        read_molecule_files(path)
    assert name in str(info.value)


def test_nonexistent_and_empty_folder(tmp_path: Path):
    with pytest.raises(UserError, match="no such file"):
        read_molecule_files(tmp_path / "missing.sdf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .sdf"):
        read_molecule_files(tmp_path / "empty")


def test_bad_records_among_good_ones_are_counted(tmp_path: Path):
    good = tmp_path / "g.sdf"
    write_sdf(good, [methane()])
    broken = "broken\n\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\nnot an atom line\nM  END\n$$$$\n"
    path = tmp_path / "mixed.sdf"
    path.write_text(good.read_text() + broken + good.read_text())
    molecules, report = read_molecule_files(path)
    assert len(molecules) == 2 and report.num_records == 3
    assert report.skipped == {"unreadable record": 1}
    assert molecules.names == ["mixed.sdf:0", "mixed.sdf:2"]


def test_xyz_variants_and_resync(tmp_path: Path):
    path = tmp_path / "v.xyz"
    path.write_text(
        "3\nextended xyz with extra columns\n8 0 0 0.1 0.0 0.0\nh 0.96 0 0 1 2\nH -0.24 0.93 0 3 4\n"
        "3\nbroken frame\nO 0 0 zero\nH 0.96 0 0\nH -0.24 0.93 0\n"
        "\n2\nH2\nH 0 0 0\nH 0.74 0 0.0\n"
    )
    frames, errors = read_xyz(path)
    assert [f[0] for f in frames] == [0, 2]
    assert frames[0][1] == ["O", "H", "H"]
    assert errors and errors[0][0] == 1 and "line 8" in errors[0][2]
    molecules, report = read_molecule_files(path)
    assert len(molecules) == 2 and report.skipped == {"unreadable record": 1}
    assert molecules.names == ["v.xyz:0", "v.xyz:2"]


def test_truncated_xyz(tmp_path: Path):
    path = tmp_path / "t.xyz"
    path.write_text("5\ncut short\nC 0 0 0\nH 1 0 0\n")
    with pytest.raises(UserError, match="declares 5 atoms"):
        read_molecule_files(path)


def test_summary_counts_records_and_files_apart(tmp_path: Path):
    """A mixed folder: 'read N of M records' and 'skipped k records, f files' add up."""
    write_sdf(tmp_path / "a.sdf", [methane(), ethene()])
    write_xyz(tmp_path / "b.xyz", [water(), hydrogen_cyanide()])
    (tmp_path / "c.xyz").write_text("3\nbad\nXx 0 0 0\nH 0 0 1\nH 0 1 0\n")  # one unusable record
    (tmp_path / "empty.sdf").write_text("")  # a whole file
    (tmp_path / "d.mol").write_bytes(b"\x00\x01 not a molfile")  # a whole file
    molecules, report = read_molecule_files(tmp_path)
    text = report.summary()
    assert report.num_read == 4 and report.num_records == 5
    assert "read 4 of 5 molecule record(s)" in text and "skipped 1 record(s), 2 file(s)" in text, text
