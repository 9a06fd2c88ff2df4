"""Attachment points in a fragment file: ``*`` (SMILES) / ``R`` (MOL block) atoms mark where generated
atoms attach; they are removed and the atom they hung on keeps the valence they used open."""

import warnings

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.io import molecule_from_mol, read_one_molecule
from molediff.errors import UserError
from molediff.inpainting import Fragment


def _embedded(smiles: str) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=3) == 0
    return mol


def _write(path, mol):
    path.write_text(Chem.MolToMolBlock(mol) + "$$$$\n")
    return path


@pytest.mark.parametrize("hydrogens", ["explicit", "implicit"])
def test_attachment_points_leave_open_valences_where_they_were(tmp_path, hydrogens):
    full = _embedded("*c1ccccc1C(=O)N*")  # two sites: a ring carbon and the amide N
    mol = full if hydrogens == "explicit" else Chem.RemoveHs(full)
    assert "R" in Chem.MolToMolBlock(mol)  # how RDKit writes a dummy atom in a MOL block
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # marked sites: no "written without hydrogens" warning
        for one in (read_one_molecule(_write(tmp_path / "f.sdf", mol)), molecule_from_mol(mol)):
            assert "*" not in one.symbols and len([s for s in one.symbols if s != "H"]) == 9
            frag = Fragment(*one).heavy()
            # benzene carbons: the one that carried * has no H (open valence), the other substituted one none
            # either, four with one; the amide N keeps one H (the * took the other)
            n = frag.symbols.index("N")
            assert frag.hydrogens[n] == 1
            assert sorted(frag.hydrogens[[i for i, s in enumerate(frag.symbols) if s == "C"]].tolist()) == [0, 0, 0, 1, 1, 1, 1]
            # the positions of the kept atoms are the file's
            heavy_pos = mol.GetConformer().GetPositions()[[a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]]
            np.testing.assert_allclose(frag.pos, heavy_pos, atol=1e-4)


def test_attachment_point_with_a_double_bond_or_two_partners_is_refused(tmp_path):
    bad = _embedded("C=*")
    with pytest.raises(UserError, match="attachment point 2 .* exactly one atom by a single bond"):
        read_one_molecule(_write(tmp_path / "double.sdf", bad))
    only = _embedded("*")
    with pytest.raises(UserError, match="no atoms besides"):
        molecule_from_mol(only)


def test_a_file_without_points_reads_as_before(tmp_path):
    full = _embedded("CCO")
    one = read_one_molecule(_write(tmp_path / "f.sdf", full))
    assert one.symbols.count("H") == 6 and len(one.symbols) == 9
