"""Drug-like property conditioning (issue 41): properties computed with RDKit from each training
molecule, ranges as targets, a conditional heavy-atom model trained on files and sampled for a range."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.analysis import CONDITION_DESCRIPTORS
from molediff.conditioning import (DRUGLIKE_CONDITION_NAMES, Range, check_conditions, condition_family, condition_table,
                                   parse_conditions, property_columns)
from molediff.config import DiffusionConfig, ModelConfig, TrainConfig
from molediff.data.files import read_molecule_files, with_condition_properties
from molediff.errors import UserError

SMILES = ["Cc1ccc(-c2cc(C(F)(F)F)nn2-c2ccc(S(N)(=O)=O)cc2)cc1", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CCOC(=O)c1ccc(N)cc1",
          "O=C(O)c1ccccc1O", "Clc1ccc(cc1)C(c1ccccc1)N1CCNCC1", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"]


@pytest.fixture(scope="module")
def drug_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cond") / "drugs.sdf"
    w = Chem.SDWriter(str(path))
    for s in SMILES:
        m = Chem.AddHs(Chem.MolFromSmiles(s))
        assert AllChem.EmbedMolecule(m, randomSeed=1) == 0
        w.write(m)
    w.close()
    return path


def test_ranges_parse_check_and_draw_inside():
    asked = parse_conditions(["logp=2:3", "qed=0.8"])
    assert asked == {"logp": (2.0, 3.0), "qed": 0.8} and isinstance(asked["logp"], Range)
    for bad in ("logp=3:2", "logp=1:2:3", "logp=a:b", "logp="):
        with pytest.raises(UserError):
            parse_conditions([bad])
    stats = {"logp": [2.5, 1.0, -1.0, 6.0], "qed": [0.7, 0.1, 0.1, 0.95]}
    ok = check_conditions(asked, ["logp", "qed"], stats)
    with pytest.raises(UserError, match="outside the training range"):
        check_conditions({"logp": Range(5.0, 9.0)}, ["logp"], stats)
    table = condition_table(ok, ["logp", "qed"], 500, generator=torch.Generator().manual_seed(0))
    assert ((table[:, 0] >= 2) & (table[:, 0] <= 3)).all() and (table[:, 1] == 0.8).all()
    assert table[:, 0].std() > 0.2  # drawn, not one value
    again = condition_table(ok, ["logp", "qed"], 500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(table, again)


def test_one_kind_of_property_per_model():
    assert condition_family(["logp", "mw"]) == "druglike" and condition_family(["gap"]) == "qm9"
    assert property_columns(["mw", "qed"]) == [DRUGLIKE_CONDITION_NAMES.index("mw"), 0]
    with pytest.raises(UserError, match="mix"):
        condition_family(["gap", "logp"])
    with pytest.raises(UserError, match="QM9 properties need QM9 data"):
        TrainConfig(data="some/files", diffusion=DiffusionConfig(conditions=["gap"])).validate()
    with pytest.raises(UserError, match="drug-like properties"):
        TrainConfig(data="qm9", diffusion=DiffusionConfig(conditions=["logp"])).validate()


@pytest.mark.parametrize("aromatic", [False, True])
def test_properties_from_files_are_rdkits_of_the_same_molecules(drug_file, aromatic):
    mols, _ = read_molecule_files([drug_file], bonds=True, aromatic=aromatic)
    names = ["qed", "logp", "mw", "tpsa", "hbd", "hba", "rotb", "arom"]
    got = with_condition_properties(mols, names).props.numpy()
    want = np.array([[CONDITION_DESCRIPTORS[c](Chem.MolFromSmiles(s)) for c in names] for s in SMILES])
    np.testing.assert_allclose(got[:, property_columns(names)], want, rtol=1e-6, atol=1e-6)
    heavy, _ = mols.heavy_atoms()  # hydrogens as counts: the same properties
    np.testing.assert_allclose(with_condition_properties(heavy, ["logp", "hbd"]).props[:, [1, 4]].numpy(), want[:, [1, 4]],
                               rtol=1e-6, atol=1e-6)
    only = with_condition_properties(mols, ["logp"]).props
    assert torch.isnan(only[:, 0]).all() and not torch.isnan(only[:, 1]).any()  # columns not asked stay unknown


def test_a_drug_like_conditional_model_trains_on_files_and_samples_a_range(drug_file, tmp_path):
    from molediff.runstate import EMA_MODEL
    from molediff.sampling import MoleculeGenerator
    from molediff.training import train

    cfg = TrainConfig(data=str(drug_file), model=ModelConfig(hidden=16, layers=2, pair_hidden=8), batch_size=3, valid_molecules=2,
                      max_steps=3, eval_every_steps=0, eval_samples=0, threads=1, checkpoint_minutes=100.0,
                      diffusion=DiffusionConfig(charges=True, bonds=True, max_hydrogens=4, conditions=["logp", "mw"],
                                                elements=["C", "N", "O", "F", "S", "Cl"]))
    train(cfg, tmp_path / "run", progress=False)
    gen = MoleculeGenerator.from_file(tmp_path / "run" / EMA_MODEL)
    stats = gen.config.diffusion.condition_stats
    assert set(stats) == {"logp", "mw"} and stats["mw"][2] > 100  # molecular weights of the training drugs, g/mol
    lo, hi = stats["logp"][2], stats["logp"][3]
    out = list(gen.sample_arrays(4, steps=3, seed=0, conditions={"logp": Range(lo, (lo + hi) / 2)}))
    targets = [info["conditions"]["logp"] for _, _, info in out]
    assert len(out) == 4 and all(lo <= t <= (lo + hi) / 2 for t in targets) and len(set(targets)) > 1
