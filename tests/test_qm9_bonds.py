"""Bonds and formal charges joined to geometries from SMILES, and their batching per atom pair."""

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.assign import assign_from_smiles
from molediff.data.molecules import AtomPairs


def _embedded(smiles: str, seed: int = 0):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    AllChem.MMFFOptimizeMolecule(mol)
    perm = np.random.default_rng(seed).permutation(mol.GetNumAtoms())  # atom order unlike the SMILES'
    mol = Chem.RenumberAtoms(mol, perm.tolist())
    return [a.GetSymbol() for a in mol.GetAtoms()], mol.GetConformer().GetPositions(), mol


@pytest.mark.parametrize("smiles", ["C[N+](=O)[O-]", "c1ccoc1", "C1C2CC1C2", "OC(=O)C#N", "[NH3+]CC(=O)[O-]"])
def test_assignment_recovers_the_molecule(smiles):
    symbols, pos, mol = _embedded(smiles)
    got = assign_from_smiles(symbols, pos, smiles)
    Chem.Kekulize(mol, clearAromaticFlags=True)
    want = {(min(b.GetBeginAtomIdx(), b.GetEndAtomIdx()), max(b.GetBeginAtomIdx(), b.GetEndAtomIdx())) for b in mol.GetBonds()}
    assert set(zip(got.src.tolist(), got.dst.tolist())) == want
    # charges sit on the right atoms up to symmetry (nitro and carboxylate oxygens are equivalent)
    assert sorted(zip(symbols, got.charge.tolist())) == sorted((a.GetSymbol(), a.GetFormalCharge()) for a in mol.GetAtoms())
    # the valence sums are those of a Kekulé structure: the canonical SMILES comes back
    rebuilt = Chem.RWMol()
    for s, c in zip(symbols, got.charge.tolist()):
        atom = Chem.Atom(s)
        atom.SetFormalCharge(c)
        atom.SetNoImplicit(True)
        rebuilt.AddAtom(atom)
    for i, j, o in zip(got.src.tolist(), got.dst.tolist(), got.order.tolist()):
        rebuilt.AddBond(i, j, {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}[o])
    Chem.SanitizeMol(rebuilt)
    assert Chem.MolToSmiles(Chem.RemoveHs(rebuilt)) == Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def test_bicyclopentane_cross_ring_contact_is_not_a_bond():
    symbols, pos, _ = _embedded("C1C2CC1C2")
    got = assign_from_smiles(symbols, pos, "C1C2CC1C2")
    assert got.extra_contacts >= 0 and len(got.order) == 6 + 8  # 6 C-C ring bonds, 8 C-H


def test_a_smiles_that_does_not_fit_is_refused_with_its_reason():
    symbols, pos, _ = _embedded("CCO")
    with pytest.raises(ValueError, match="different atoms"):
        assign_from_smiles(symbols, pos, "CCN")
    with pytest.raises(ValueError, match="does not fit"):
        assign_from_smiles(symbols, pos, "COC")  # same atoms, other graph
    with pytest.raises(ValueError, match="parse"):
        assign_from_smiles(symbols, pos, "C(C")


def test_qm9_batches_carry_the_stored_bonds_on_their_pairs():
    from molediff.data.qm9 import load_qm9

    data = load_qm9("valid", progress=False).subset(np.arange(40))
    b = data.collate(np.arange(40))
    assert b.pair_index.shape[1] == int((data.num_atoms * (data.num_atoms - 1) // 2).sum()) == b.bond_type.shape[0]
    dense = {}
    for p, (i, j) in enumerate(b.pair_index.T.tolist()):
        dense[(i, j)] = int(b.bond_type[p])
    for m in range(40):
        src, dst, order, _ = data.bonds(m)
        off = int(data.ptr[m])
        for i, j, o in zip(src.tolist(), dst.tolist(), order.tolist()):
            assert dense.pop((i + off, j + off)) == o
    assert set(dense.values()) == {0}  # every other pair: no bond
    assert AtomPairs.local_pair_id(torch.tensor(5), torch.tensor(1), torch.tensor(3)) == 5  # (0,1..4), (1,2), (1,3)
