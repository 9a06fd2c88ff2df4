"""molediff.chem: lookup bonds, RDKit molecules, validity conventions, SDF/XYZ writing and reading."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from molediff.chem import (
    SDFWriter,
    XYZWriter,
    bond_perception_status,
    build_molecule,
    check_validity,
    lookup_bond_orders,
    lookup_bonds_stacked,
    mol_to_smiles_largest_fragment,
    read_sdf,
    symbols_to_types,
    write_sdf,
    write_xyz,
)
from molediff.data.files import read_xyz
from molediff.elements import BOND_DOUBLE_PM, BOND_MARGINS_PM, BOND_SINGLE_PM, BOND_TRIPLE_PM, ELEMENTS
from tests.chem_molecules import KNOWN, ethene, ethyne, hydrogen_cyanide, methane, two_fragments, water

M1, M2, M3 = BOND_MARGINS_PM


def _pair(a: str, b: str, d_pm: float) -> int:
    return int(lookup_bond_orders([a, b], np.array([[0.0, 0.0, 0.0], [d_pm / 100.0, 0.0, 0.0]]))[0, 1])


# ------------------------------------------------------------------ lookup bond orders


@pytest.mark.parametrize("pair", sorted(BOND_SINGLE_PM))
def test_lookup_thresholds_follow_tables(pair):
    a, b = pair
    single = BOND_SINGLE_PM[pair] + M1
    assert _pair(a, b, single + 0.5) == 0
    assert _pair(a, b, single - 0.5) >= 1
    if pair in BOND_DOUBLE_PM:
        double = BOND_DOUBLE_PM[pair] + M2
        assert _pair(a, b, double + 0.5) == 1
        assert _pair(a, b, double - 0.5) >= 2
        if pair in BOND_TRIPLE_PM:
            triple = BOND_TRIPLE_PM[pair] + M3
            assert _pair(a, b, triple + 0.5) == 2
            assert _pair(a, b, triple - 0.5) == 3
        else:
            assert _pair(a, b, 50.0) == 2  # no triple length: never more than double
    else:
        assert _pair(a, b, 50.0) == 1  # no double length: single however short


def test_lookup_matrix_of_known_molecules():
    s, p = hydrogen_cyanide()
    m = lookup_bond_orders(s, p)
    assert m.tolist() == [[0, 1, 0], [1, 0, 3], [0, 3, 0]]
    s, p = ethene()
    m = lookup_bond_orders(s, p)
    assert m[0, 1] == 2 and (m == m.T).all() and m.diagonal().sum() == 0
    assert m.sum(1).tolist() == [4, 4, 1, 1, 1, 1]


def test_lookup_rejects_unknown_elements():
    with pytest.raises(ValueError, match="Se"):
        lookup_bond_orders(["C", "Se"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Sn"):
        symbols_to_types(["Sn"])


@pytest.mark.parametrize("budget", [1_000_000, 50])
def test_stacked_lookup_matches_per_molecule(budget):
    rng = np.random.default_rng(0)
    sizes = [1, 0, 7, 3, 12, 2, 30, 5, 5, 1]
    mols = []
    for n in sizes:
        types = rng.integers(0, len(ELEMENTS), n)
        pos = rng.normal(scale=1.2, size=(n, 3))
        mols.append((types, pos))
    mols.append((symbols_to_types(methane()[0]), methane()[1]))
    types = np.concatenate([t for t, _ in mols])
    pos = np.concatenate([p for _, p in mols])
    ptr = np.concatenate([[0], np.cumsum([len(t) for t, _ in mols])])
    bonds = lookup_bonds_stacked(types, pos, ptr, max_pairs_per_chunk=budget)
    assert (bonds.src < bonds.dst).all()
    dense = np.zeros((len(types), len(types)), dtype=np.int64)
    dense[bonds.src, bonds.dst] = bonds.order
    for k, (t, p) in enumerate(mols):
        a, b = ptr[k], ptr[k + 1]
        expected = np.triu(lookup_bond_orders(np.array(ELEMENTS)[t], p), 1) if len(t) else np.zeros((0, 0))
        np.testing.assert_array_equal(dense[a:b, a:b], expected)
    # no bonds across molecules
    mol_of = np.repeat(np.arange(len(mols)), np.diff(ptr))
    assert (mol_of[bonds.src] == mol_of[bonds.dst]).all()
    assert bonds.order.sum() > 0


def test_chem_bonds_importable_without_rdkit():
    code = "import sys, molediff.chem, molediff.chem.bonds, molediff.metrics; assert 'rdkit' not in sys.modules, 'rdkit imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ RDKit molecules and validity


def test_build_molecule_lookup_has_bonds_and_3d_conformer():
    s, p = hydrogen_cyanide()
    mol = build_molecule(s, p)
    assert [a.GetSymbol() for a in mol.GetAtoms()] == s
    assert mol.GetBondBetweenAtoms(1, 2).GetBondType() == Chem.BondType.TRIPLE
    assert mol.GetBondBetweenAtoms(0, 1).GetBondType() == Chem.BondType.SINGLE
    assert mol.GetBondBetweenAtoms(0, 2) is None
    conf = mol.GetConformer()
    assert conf.Is3D()
    np.testing.assert_allclose(conf.GetPositions(), p)
    assert bond_perception_status(mol) == "lookup"


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_validity_of_known_molecules(name):
    builder, _stable, valid, strict = KNOWN[name]
    result = check_validity(build_molecule(*builder()))
    assert result.valid == valid
    assert result.strict_valid == strict
    assert (result.smiles is not None) == valid


def test_validity_details():
    assert check_validity(build_molecule(*methane())).smiles == "[H]C([H])([H])[H]"
    assert check_validity(build_molecule(*ethyne())).smiles == "[H]C#C[H]"
    frag = check_validity(build_molecule(*two_fragments()))
    assert frag.num_fragments == 2 and frag.smiles == "[H]C([H])([H])[H]"  # largest fragment kept
    assert mol_to_smiles_largest_fragment(build_molecule(*two_fragments())) == "[H]C([H])([H])[H]"
    # a carbon with five hydrogens fails sanitization
    s, p = methane()
    bad = check_validity(build_molecule(s + ["H"], np.vstack([p, [[0.0, 0.0, -1.05]]])))
    assert not bad.valid and bad.error


def test_rdkit_bonds_and_graceful_failure():
    mol = build_molecule(*hydrogen_cyanide(), bonds="rdkit")
    assert bond_perception_status(mol) == "rdkit"
    assert mol.GetBondBetweenAtoms(1, 2).GetBondType() == Chem.BondType.TRIPLE
    assert check_validity(mol).smiles == "[H]C#N"
    # a radical: bond orders cannot be assigned for charge 0 -> connectivity only, flagged, invalid
    s, p = methane()
    radical = build_molecule(s[:4], p[:4], bonds="rdkit")
    assert bond_perception_status(radical) == "rdkit-connectivity"
    assert radical.GetNumBonds() == 3
    assert not check_validity(radical).valid
    # degenerate geometry (all atoms on one point) does not raise
    junk = build_molecule(["C", "C", "O", "N"], np.zeros((4, 3)), bonds="rdkit")
    assert bond_perception_status(junk) in ("rdkit", "rdkit-connectivity", "failed")
    assert junk.GetNumAtoms() == 4 and isinstance(check_validity(junk).valid, bool)
    with pytest.raises(ValueError, match="bonds"):
        build_molecule(*methane(), bonds="magic")


# ------------------------------------------------------------------ SDF / XYZ


def test_sdf_round_trip(tmp_path: Path):
    path = tmp_path / "out.sdf"
    s2, p2 = methane()
    records = [(*ethene(), {"seed": 3, "tags": ["a", "b"]}), (s2[:4], p2[:4]), hydrogen_cyanide()]
    n = write_sdf(path, records, metadata={"model": "test-model", "sampler": "ddpm"})
    assert n == 3
    contents = read_sdf(path)
    assert contents.errors == []
    assert len(contents.records) == 3
    for (sym, pos, *_), rec in zip(records, contents.records):
        symbols, positions, props = rec.symbols, rec.pos, rec.props
        assert symbols == list(sym)
        np.testing.assert_allclose(positions, pos, atol=1e-4)
        assert props["model"] == "test-model" and props["sampler"] == "ddpm"
    p0, p1, p2_ = (r.props for r in contents.records)
    assert p0["seed"] == "3" and p0["tags"] == '["a","b"]'
    assert p0["SMILES"] == "[H]C([H])=C([H])[H]" and p0["molediff_valid"] == "1" and p0["molediff_stable"] == "1"
    assert p1["molediff_valid"] == "1" and p1["molediff_strict_valid"] == "0" and p1["molediff_stable"] == "0"
    assert p2_["molediff_bonds"] == "lookup"
    # bonds are in the file
    mols = list(Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False))
    assert mols[0].GetBondBetweenAtoms(0, 1).GetBondType() == Chem.BondType.DOUBLE
    assert mols[2].GetBondBetweenAtoms(1, 2).GetBondType() == Chem.BondType.TRIPLE
    assert mols[0].GetConformer().Is3D()


def test_sdf_invalid_molecule_flags_and_no_smiles(tmp_path: Path):
    path = tmp_path / "bad.sdf"
    builder = KNOWN["o_three_bonds"][0]
    write_sdf(path, [builder()])
    (rec,) = read_sdf(path).records
    assert rec.props["molediff_valid"] == "0" and "SMILES" not in rec.props


def test_sdf_writer_streams_and_is_atomic(tmp_path: Path):
    path = tmp_path / "stream.sdf"
    with SDFWriter(path, metadata={"model": "m"}) as writer:
        writer.write(*methane(), metadata={"seed": 1})
        assert not path.exists()  # nothing visible before close
        writer.write(*water(), name="water")
    assert path.exists()
    records = read_sdf(path).records
    assert [r.props["_Name"] for r in records] == ["molecule_0", "water"]

    # an interrupted run leaves no file and no temporary behind, and never clobbers an old file
    target = tmp_path / "interrupted.sdf"
    with pytest.raises(KeyboardInterrupt):
        with SDFWriter(target) as writer:
            writer.write(*methane())
            raise KeyboardInterrupt
    assert not target.exists()
    path.write_text("old content")
    with pytest.raises(RuntimeError):
        with SDFWriter(path) as writer:
            writer.write(*methane())
            raise RuntimeError("boom")
    assert path.read_text() == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.sdf"]


def test_read_sdf_reports_bad_records(tmp_path: Path):
    good = tmp_path / "good.sdf"
    write_sdf(good, [methane()])
    block = good.read_text()
    broken = "broken\n  junk\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\n    0.0000    0.0000    xx O   0  0\nM  END\n$$$$\n"
    flat = Chem.MolToMolBlock(Chem.AddHs(Chem.MolFromSmiles("CO")))  # no conformer: written as 2D, all zeros
    path = tmp_path / "mixed.sdf"
    path.write_text(block + broken + flat + "$$$$\n")
    contents = read_sdf(path)
    assert len(contents.records) == 1
    reasons = {e.index: e.reason for e in contents.errors}
    assert reasons == {1: "unreadable record", 2: "no 3D coordinates"}
    assert "broken" in contents.errors[0].detail


def test_xyz_writer_multiframe(tmp_path: Path):
    path = tmp_path / "out.xyz"
    n = write_xyz(path, [(*methane(), {"seed": 7}), water()])
    assert n == 2
    frames, errors = read_xyz(path)
    assert errors == []
    assert [f[1] for f in frames] == [methane()[0], water()[0]]
    np.testing.assert_allclose(frames[1][2], water()[1], atol=1e-7)
    assert "seed=7" in frames[0][3]
    with pytest.raises(ValueError):
        with XYZWriter(tmp_path / "x.xyz") as w:
            w.write(["C", "H"], np.zeros((3, 3)))
    assert not (tmp_path / "x.xyz").exists()
