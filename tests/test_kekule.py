"""Aromatic bond types: data read with RDKit's aromaticity, generated aromatic bonds kekulized back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.rdkit_mol import aromatic_bond_codes, kekule_bonds
from molediff.chem.kekule import kekulize
from molediff.chem.model_bonds import model_bond_stability
from molediff.elements import AROMATIC, SYMBOL_TO_INDEX

HARD = ["c1ccccc1", "O=c1cccc[nH]1", "c1ccc2[nH]ccc2c1", "c1ccsc1", "c1ccoc1", "c1cc[nH]c1", "c1c[nH]cn1",
        "[O-][n+]1ccccc1", "c1nn[nH]n1", "c1ccc2[nH]cnc2c1", "c1ncc2nc[nH]c2n1", "Cc1ccc(-c2ccccn2)cc1Cl",
        "O=C1C=CC(=O)C=C1", "c1ccc2ccccc2c1", "C[n+]1ccccc1", "O=c1[nH]c(=O)c2ccccc2[nH]1", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"]


def _heavy_with_counts(smiles: str):
    """Heavy atoms, their hydrogen counts, charges and bonds (aromatic coded) of a SMILES, via an
    explicit-H 3D molecule read like training data."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    (src, dst, order), charges, ok = kekule_bonds(mol, aromatic=True)
    assert ok
    types = np.array([SYMBOL_TO_INDEX[a.GetSymbol()] for a in mol.GetAtoms()])
    heavy = types != SYMBOL_TO_INDEX["H"]
    hcount = np.zeros(len(types), dtype=np.int64)
    for s, d in zip(src, dst):
        if not heavy[s]:
            hcount[d] += 1
        if not heavy[d]:
            hcount[s] += 1
    keep = heavy[src] & heavy[dst]
    new = np.cumsum(heavy) - 1
    return types[heavy], charges[heavy], new[src[keep]], new[dst[keep]], order[keep], hcount[heavy]


@pytest.mark.parametrize("smiles", HARD)
def test_aromatic_codes_round_trip_to_a_stable_kekule_form(smiles):
    types, charges, src, dst, order, hydrogens = _heavy_with_counts(smiles)
    n_arom = sum(a.GetIsAromatic() for a in Chem.MolFromSmiles(smiles).GetBonds())
    assert int((order == AROMATIC).sum()) == n_arom
    kek, ok = kekulize(types, charges, src, dst, order, hydrogens)
    assert ok.all() and set(kek.tolist()) <= {1, 2, 3}
    atom_ok, mol_ok = model_bond_stability(types, charges, np.array([0, len(types)]), src, dst, kek, hydrogens)
    assert mol_ok.all(), smiles
    # the same molecule as RDKit reads it, whichever Kekulé form was chosen
    rw = Chem.RWMol()
    for t, q, h in zip(types, charges, hydrogens):
        a = Chem.Atom(Chem.GetPeriodicTable().GetAtomicNumber(["H", "C", "N", "O", "F", "B", "Si", "P", "S", "Cl", "Br", "I"][t]))
        a.SetFormalCharge(int(q))
        a.SetNumExplicitHs(int(h))
        a.SetNoImplicit(True)
        rw.AddAtom(a)
    for s, d, o in zip(src, dst, kek):
        rw.AddBond(int(s), int(d), {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}[int(o)])
    m = rw.GetMol()
    Chem.SanitizeMol(m)
    assert Chem.MolToSmiles(m) == Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def test_an_impossible_aromatic_system_stays_unstable_and_says_so():
    # a five-ring of carbons, each with one hydrogen, all bonds aromatic: no Kekulé form
    n = 5
    types = np.full(n, SYMBOL_TO_INDEX["C"])
    src, dst = np.arange(n), (np.arange(n) + 1) % n
    kek, ok = kekulize(types, np.zeros(n, dtype=np.int64), src, dst, np.full(n, AROMATIC), np.ones(n, dtype=np.int64))
    assert not ok.all() and set(kek.tolist()) <= {1, 2}
    _, mol_ok = model_bond_stability(types, np.zeros(n, dtype=np.int64), np.array([0, n]), src, dst, kek, np.ones(n, dtype=np.int64))
    assert not mol_ok.any()


def test_fragment_bonds_get_aromatic_codes():
    types, charges, src, dst, order, hydrogens = _heavy_with_counts("Cc1ccccc1")
    kek, _ = kekulize(types, charges, src, dst, order, hydrogens)
    symbols = ["C"] * len(types)
    codes = aromatic_bond_codes(symbols, (src, dst, kek), charges, hydrogens)
    assert (codes == order).all() and int((codes == AROMATIC).sum()) == 6


def test_decode_kekulizes_and_warm_start_maps_the_bond_columns():
    from molediff.config import DiffusionConfig, ModelConfig
    from molediff.models import build_network, transfer_weights
    from molediff.molecular import MolecularDiffusion

    base = dict(bonds=True, charges=True, self_condition=True, max_hydrogens=4, elements=["C", "N", "O"])
    kek = MolecularDiffusion(DiffusionConfig(**base))
    aro = MolecularDiffusion(DiffusionConfig(**base, bond_orders=[0, 1, 2, 3, 4]))
    torch.manual_seed(0)
    src_net = build_network(ModelConfig(hidden=16, layers=1), kek)
    dst_net = build_network(ModelConfig(hidden=16, layers=1), aro)
    fresh = transfer_weights(dst_net, src_net.state_dict(), (aro.input_labels(), aro.output_labels()),
                             (kek.input_labels(), kek.output_labels()), (aro.pair_labels(), kek.pair_labels()))
    assert any("pair" in f for f in fresh)
    w_old, w_new = src_net.state_dict()["pair_embed.weight"], dst_net.state_dict()["pair_embed.weight"]
    (pin_new, _), (pin_old, _) = aro.pair_labels(), kek.pair_labels()
    for label in pin_old:
        torch.testing.assert_close(w_new[:, pin_new.index(label)], w_old[:, pin_old.index(label)])
    mean = (w_old[:, pin_old.index("bond:single")] + w_old[:, pin_old.index("bond:double")]) / 2
    torch.testing.assert_close(w_new[:, pin_new.index("bond:aromatic")], mean)
    head_old, head_new = src_net.state_dict()["pair_head.2.weight"], dst_net.state_dict()["pair_head.2.weight"]
    torch.testing.assert_close(head_new[:4], head_old)
    torch.testing.assert_close(head_new[4], (head_old[1] + head_old[2]) / 2)


def test_valence_feedback_flags_the_atoms_the_decoder_would_fail():
    from molediff.chem.kekule import valence_feedback

    C, N = SYMBOL_TO_INDEX["C"], SYMBOL_TO_INDEX["N"]
    # molecule 0: pyrrole written with an N that has no hydrogen (no Kekulé form: five atoms need a double
    # bond); molecule 1: pyrrole with its NH (fine); molecule 2: a methane carbon with three hydrogens
    types = np.array([N, C, C, C, C] * 2 + [C])
    hyd = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3])
    ring = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]])
    src = np.concatenate([ring[:, 0], ring[:, 0] + 5, [0]])
    dst = np.concatenate([ring[:, 1], ring[:, 1] + 5, [0]])
    order = np.concatenate([np.full(10, AROMATIC), [0]])  # an order-0 "pair" is not a bond
    flags = valence_feedback(types, np.zeros(11, dtype=np.int64), src, dst, order, hyd)
    assert flags.shape == (11, 2) and flags.dtype == bool
    assert flags[:5, 0].all() and not flags[5:, 0].any()  # the system without a Kekulé form, only it
    assert flags[:5, 1].any() and not flags[5:10, 1].any()  # its leftover atoms fail the valence rule
    assert flags[10, 1] and not flags[10, 0]  # CH3 alone: valence 3, not a Kekulé problem


def test_written_bond_types_of_aromatic_coded_data_are_kekule_as_a_model_decodes_them():
    """A heavy-atom set whose aromatic bonds carry the aromatic code (a drug-like model's data) counts its
    bonds in Kekulé form, as that model's decoded samples are counted (the training checks' bond-type TV):
    toluene's ring is three C-C and three C=C, with no aromatic "C:C" left."""
    from molediff.data.molecules import MoleculeSet
    from molediff.metrics import written_bond_types

    types, charges, src, dst, order, hydrogens = _heavy_with_counts("Cc1ccccc1")
    assert int((order == AROMATIC).sum()) == 6
    n = len(types)
    data = MoleculeSet(atom_type=torch.as_tensor(types), pos=torch.zeros(n, 3), ptr=torch.tensor([0, n]),
                       charge=torch.as_tensor(charges), bond_index=torch.as_tensor(np.stack([src, dst])),
                       bond_order=torch.as_tensor(order), bond_ptr=torch.tensor([0, len(src)]),
                       hydrogens=torch.as_tensor(hydrogens))
    assert written_bond_types(data) == {"C-C": 4, "C=C": 3}
