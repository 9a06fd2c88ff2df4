"""Drug-like chemistry: the element table and valence sets, marketed drugs under the honest rule, files
that keep bonds / charges / hydrogen counts, heavy-atom models (hydrogen counts generated, hydrogens
placed), per-model vocabularies in saved configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.hydrogens import place_hydrogens
from molediff.chem.io import SDFWriter
from molediff.chem.rdkit_mol import kekule_bonds
from molediff.chem.model_bonds import model_bond_scores
from molediff.config import DiffusionConfig, ModelConfig, TrainConfig
from molediff.data.files import read_molecule_files
from molediff.elements import QM9_ELEMENTS, SYMBOL_TO_INDEX, Vocabulary
from molediff.models import build_network
from molediff.molecular import MolecularDiffusion
from molediff.state import MolState, remove_mean
from molediff.testing import assert_e3_equivariant

#: marketed drugs (and a zwitterion) written with correct bonds: each must be a stable molecule by the
#: honest rule (S(VI) sulfonamides, P(V) phosphoramide, a sulfoxide, iodines, charged N and O)
DRUGS = {
    "celecoxib": "Cc1ccc(-c2cc(C(F)(F)F)nn2-c2ccc(S(N)(=O)=O)cc2)cc1",
    "hydrochlorothiazide": "NS(=O)(=O)c1cc2c(cc1Cl)NCNS2(=O)=O",
    "cyclophosphamide": "ClCCN(CCCl)P1(=O)NCCCO1",
    "omeprazole": "COc1ccc2[nH]c(S(=O)Cc3ncc(C)c(OC)c3C)nc2c1",
    "amiodarone": "CCCCc1oc2ccccc2c1C(=O)c1cc(I)c(OCCN(CC)CC)c(I)c1",
    "cetirizine_zwitterion": "[O-]C(=O)COCC[NH+]1CCN(C(c2ccccc2)c2ccc(Cl)cc2)CC1",
    "bromazepam": "Brc1ccc2NC(=O)CN=C(c3ccccn3)c2c1",
}


def _embedded(smiles: str, seed: int = 1) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    AllChem.MMFFOptimizeMolecule(mol)
    return mol


def _score(mol: Chem.Mol):
    (src, dst, order), charges, _ = kekule_bonds(mol)
    types = np.array([SYMBOL_TO_INDEX[a.GetSymbol()] for a in mol.GetAtoms()])
    s = model_bond_scores(types, charges, np.array([0, mol.GetNumAtoms()]), src, dst, order)
    return bool(s.molecule_stable[0]), bool(s.valid[0])


@pytest.fixture(scope="module")
def drugs_sdf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("drugs") / "drugs.sdf"
    writer = Chem.SDWriter(str(path))
    for name, smi in DRUGS.items():
        mol = _embedded(smi)
        mol.SetProp("_Name", name)
        writer.write(mol)
    writer.close()
    return path


@pytest.mark.parametrize("name", list(DRUGS))
def test_marketed_drugs_are_stable_and_valid_by_the_honest_rule(name):
    assert _score(_embedded(DRUGS[name])) == (True, True)


def test_broken_chemistry_fails_the_honest_rule():
    one_h_less = Chem.RWMol(_embedded("CS(=O)(=O)N"))
    one_h_less.RemoveAtom(next(a.GetIdx() for a in one_h_less.GetAtoms() if a.GetSymbol() == "H"))
    assert _score(one_h_less)[0] is False
    five_bonded_s = Chem.RWMol(_embedded("C[S+](C)C"))  # sulfonium, then an S=O added and the charge taken
    s_idx = next(a.GetIdx() for a in five_bonded_s.GetAtoms() if a.GetSymbol() == "S")
    five_bonded_s.GetAtomWithIdx(s_idx).SetFormalCharge(0)
    o_idx = five_bonded_s.AddAtom(Chem.Atom(8))
    five_bonded_s.AddBond(s_idx, o_idx, Chem.BondType.DOUBLE)
    conf = five_bonded_s.GetConformer()
    conf.SetAtomPosition(o_idx, conf.GetAtomPosition(s_idx) + Chem.rdGeometry.Point3D(0.0, 0.0, 1.45))
    assert sum(b.GetBondTypeAsDouble() for b in five_bonded_s.GetAtomWithIdx(s_idx).GetBonds()) == 5
    assert _score(five_bonded_s)[0] is False
    ammonium = Chem.RWMol(_embedded("C[NH3+]"))
    ammonium.GetAtomWithIdx(1).SetFormalCharge(0)  # a neutral four-bonded nitrogen
    assert _score(ammonium)[0] is False


def test_drug_files_round_trip_bonds_charges_and_hydrogen_counts(drugs_sdf, tmp_path):
    mols, report = read_molecule_files(drugs_sdf, bonds=True)
    assert report.num_read == len(DRUGS) and not report.skipped  # no S, Cl, Br, P or I refused
    out = tmp_path / "again.sdf"
    with SDFWriter(out) as writer:
        for i in range(len(mols)):
            symbols, pos = mols.molecule(i)
            src, dst, order, charge = mols.bonds(i)
            writer.write(list(symbols), pos, bonds=(src, dst, order), charges=charge)
    again, _ = read_molecule_files(out, bonds=True)
    for field in ("atom_type", "charge", "bond_index", "bond_order", "ptr"):
        assert torch.equal(getattr(again, field), getattr(mols, field)), field
    heavy, left_out = mols.heavy_atoms()
    assert not left_out and int((heavy.atom_type == SYMBOL_TO_INDEX["H"]).sum()) == 0
    for i, name in enumerate(DRUGS):
        ref = Chem.MolFromSmiles(DRUGS[name])
        symbols, _ = heavy.molecule(i)
        assert list(symbols) == [a.GetSymbol() for a in ref.GetAtoms()]
        a, b = int(heavy.ptr[i]), int(heavy.ptr[i + 1])
        assert heavy.hydrogens[a:b].tolist() == [atom.GetTotalNumHs() for atom in ref.GetAtoms()]


def test_placed_hydrogens_complete_each_drug(drugs_sdf):
    mols, _ = read_molecule_files(drugs_sdf, bonds=True)
    heavy, _ = mols.heavy_atoms()
    for i in range(len(heavy)):
        symbols, pos = heavy.molecule(i)
        src, dst, order, charge = heavy.bonds(i)
        counts = heavy.hydrogens[int(heavy.ptr[i]) : int(heavy.ptr[i + 1])].numpy()
        full = place_hydrogens(list(symbols), pos, src, dst, order, charge, counts)
        assert full.symbols.count("H") == int(counts.sum()) and full.relaxed
        np.testing.assert_allclose(full.pos[: len(symbols)], pos, atol=1e-6)  # heavy atoms are not moved
        d = np.linalg.norm(full.pos[:, None] - full.pos[None], axis=-1) + np.eye(len(full.pos)) * 9
        assert d.min() > 0.7
        types = np.array([SYMBOL_TO_INDEX[s] for s in full.symbols])
        s = model_bond_scores(types, full.charges, np.array([0, len(types)]), *full.bonds)
        assert s.molecule_stable[0] and s.valid[0]  # sanitizes as written: RDKit adds no hydrogen


def test_vocabulary_round_trips_in_the_config_and_old_configs_load_as_qm9(tmp_path):
    cfg = TrainConfig(diffusion=DiffusionConfig(bonds=True, charges=True, elements=["C", "N", "O", "S", "Cl"],
                                                formal_charges=[-1, 0, 1, 2], max_hydrogens=3)).validate()
    cfg.save_json(tmp_path / "config.json")
    again = TrainConfig.load_json(tmp_path / "config.json")
    assert again.diffusion.vocabulary == Vocabulary(("C", "N", "O", "S", "Cl"), (-1, 0, 1, 2), (0, 1, 2, 3), 3)
    old = json.loads((tmp_path / "config.json").read_text())
    for name in ("elements", "formal_charges", "bond_orders", "max_hydrogens", "hydrogen_scale", "hydrogen_weight"):
        del old["diffusion"][name]
    assert TrainConfig.from_dict(old).diffusion.vocabulary.elements == QM9_ELEMENTS
    bundled = Path(__file__).parents[1] / "molediff" / "pretrained" / "qm9_joint_config.json"
    assert TrainConfig.load_json(bundled).diffusion.vocabulary == Vocabulary()
    with pytest.raises(Exception, match="Se"):
        Vocabulary(("C", "Se"))


HEAVY = DiffusionConfig(bonds=True, charges=True, self_condition=True, elements=["C", "N", "O", "S", "Cl", "Br"], max_hydrogens=3)


def _heavy_batch(smiles: list[str]):
    from molediff.data.molecules import MoleculeSet

    records = []
    for smi in smiles:
        mol = _embedded(smi)
        (src, dst, order), charges, _ = kekule_bonds(mol)
        records.append(([a.GetSymbol() for a in mol.GetAtoms()], mol.GetConformer().GetPositions(),
                        {"bonds": (src, dst, order), "charges": charges}))
    heavy, _ = MoleculeSet.from_records(records).heavy_atoms()
    return heavy


@pytest.mark.parametrize("t", [0, 500, 999])
def test_heavy_atom_denoiser_is_equivariant_permutation_safe_and_isolates_molecules(t):
    torch.manual_seed(0)
    d = MolecularDiffusion(HEAVY)
    net = build_network(ModelConfig(hidden=16, layers=2, pair_hidden=8), d).double()
    data = _heavy_batch(["CSc1ccc(Cl)cc1", "BrCC(=O)N", "CCS(=O)(=O)N"])
    b = data.collate([0, 1, 2])
    x = d.encode(b)
    assert x.part("hydrogens").shape[1] == 4
    node_h = torch.randn(x.node.shape[0], x.node.shape[1] - 3, dtype=torch.float64)
    pair = torch.randn(x.pair.shape, dtype=torch.float64)
    tt = torch.full((3,), t)

    def fn(p):
        state = MolState(torch.cat([remove_mean(p, x.graph.batch, 3), node_h], dim=1), pair, x.graph, x.parts)
        out, _ = d.predict(net, state, tt)
        return out.node[:, :3], torch.cat([out.node[:, 3:].flatten(), out.pair.flatten()])[:, None]

    assert_e3_equivariant(fn, b.pos, atol=1e-6)
    # a molecule's prediction does not depend on the others in its batch
    state = MolState(torch.cat([x.node[:, :3].double(), node_h], 1), pair, x.graph, x.parts)
    whole, _ = d.predict(net, state, tt)
    alone, _ = d.predict(net, state.slice(1, 2), tt[1:2])
    torch.testing.assert_close(whole.slice(1, 2).node, alone.node, atol=1e-9, rtol=0)
    # permuting a molecule's atoms permutes the per-atom output (bond pairs follow)
    n0 = int(x.graph.ptr[1])
    perm = torch.randperm(n0)
    one = state.slice(0, 1)
    out, _ = d.predict(net, one, tt[:1])
    i, j = one.graph.pair_index
    inv = torch.argsort(perm)
    from molediff.data.molecules import AtomPairs

    a, b2 = torch.minimum(inv[i], inv[j]), torch.maximum(inv[i], inv[j])
    new_pair = torch.empty_like(one.pair)
    new_pair[AtomPairs.local_pair_id(torch.tensor(n0), a, b2)] = one.pair
    permuted = MolState(one.node[perm], new_pair, one.graph, one.parts)
    out_p, _ = d.predict(net, permuted, tt[:1])
    torch.testing.assert_close(out_p.node, out.node[perm], atol=1e-9, rtol=0)


def test_a_heavy_atom_model_trained_on_s_cl_br_samples_them_with_placed_hydrogens(tmp_path):
    from molediff.sampling import MoleculeGenerator
    from molediff.training import train

    folder = tmp_path / "data"
    folder.mkdir()
    writer = Chem.SDWriter(str(folder / "halo.sdf"))
    for k, smi in enumerate(["ClCCBr", "CSCCl", "BrCSC", "ClC(Br)S", "CCSBr", "SCCCl", "BrCCS", "ClCSC"] * 2):
        writer.write(_embedded(smi, seed=k))
    writer.close()
    cfg = TrainConfig(data=str(folder), model=ModelConfig(hidden=32, layers=2, pair_hidden=16), batch_size=16,
                      diffusion=DiffusionConfig(bonds=True, charges=True, max_hydrogens=3), max_steps=250, lr=3e-3,
                      eval_every_steps=0, eval_samples=0, threads=1, checkpoint_minutes=100.0, valid_molecules=4)
    train(cfg, tmp_path / "run", progress=False)
    saved = TrainConfig.load_json(tmp_path / "run" / "config.json").diffusion
    assert saved.elements == ["C", "S", "Cl", "Br"] and saved.max_hydrogens == 3
    gen = MoleculeGenerator.from_file(tmp_path / "run" / "ema_model.pt")
    seen = set()
    for symbols, pos, info in gen.sample_arrays(16, steps=50, seed=0, batch_size=16):
        heavy = len(info["hydrogens"])
        assert list(symbols[heavy:]) == ["H"] * int(info["hydrogens"].sum())  # exactly the generated counts
        assert "H" not in symbols[:heavy]
        seen |= set(symbols[:heavy].tolist())
    assert {"S", "Cl", "Br"} <= seen
