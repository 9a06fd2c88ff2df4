"""The honest model-bond view: QM9's stored bonds, hand-built molecules with known answers, files that
keep their bonds and charges, and `molediff evaluate --bonds model`."""

from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.io import SDFWriter, read_sdf
from molediff.chem.rdkit_mol import kekule_bonds
from molediff.chem.model_bonds import model_bond_scores
from molediff.cli import main
from molediff.data.files import read_molecule_files
from molediff.elements import SYMBOL_TO_INDEX


def _score(mol: Chem.Mol):
    """Scores of one RDKit molecule as written (its bonds, kekulized, and charges)."""
    (src, dst, order), charges, _ = kekule_bonds(mol)
    types = np.array([SYMBOL_TO_INDEX[a.GetSymbol()] for a in mol.GetAtoms()])
    s = model_bond_scores(types, charges, np.array([0, mol.GetNumAtoms()]), src, dst, order)
    return bool(s.molecule_stable[0]), bool(s.valid[0]), s.atom_stable


def _written(smiles: str, kekulize: bool) -> Chem.Mol:
    """The molecule with explicit H as a file would carry it: aromatic flags kept or kekulized."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if kekulize:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    return Chem.MolFromMolBlock(Chem.MolToMolBlock(mol, kekulize=kekulize), sanitize=False, removeHs=False)


@pytest.mark.parametrize("smiles", ["c1cc[nH]c1", "c1ccoc1"], ids=["pyrrole", "furan"])
@pytest.mark.parametrize("kekulize", [False, True], ids=["aromatic", "kekule"])
def test_aromatic_rings_written_either_way_are_stable_and_valid(smiles, kekulize):
    mol = _written(smiles, kekulize)
    if not kekulize:
        assert any(b.GetBondType() == Chem.BondType.AROMATIC for b in mol.GetBonds())
    assert _score(mol)[:2] == (True, True)


@pytest.mark.parametrize("smiles", ["C[N+](=O)[O-]", "[NH4+]", "C[O-]", "C[NH3+]"])
def test_charged_atoms_at_their_allowed_valence_are_stable(smiles):
    assert _score(_written(smiles, True))[:2] == (True, True)


def test_missing_hydrogen_radical_two_fragments_and_unkekulizable_ring_fail():
    ethane = Chem.RWMol(_written("CC", True))
    ethane.RemoveAtom(ethane.GetNumAtoms() - 1)  # one H gone: a carbon with three bonds
    stable, valid, atoms = _score(ethane.GetMol())
    assert not stable and not valid and int((~atoms).sum()) == 1
    methyl = Chem.RWMol()
    c = methyl.AddAtom(Chem.Atom(6))
    for _ in range(3):
        methyl.AddBond(c, methyl.AddAtom(Chem.Atom(1)), Chem.BondType.SINGLE)
    assert _score(methyl.GetMol())[:2] == (False, False)  # a radical
    two = _written("C.O", True)
    stable, valid, _ = _score(two)
    assert stable and not valid  # every atom fine, but two fragments
    # pyrrole written aromatic without its N-H: no Kekulé structure exists
    bad = Chem.RWMol(_written("c1cc[nH]c1", False))
    h = next(a.GetIdx() for a in bad.GetAtoms() if a.GetSymbol() == "H" and a.GetNeighbors()[0].GetSymbol() == "N")
    bad.RemoveAtom(h)
    (_, _, _), _, kekulized = kekule_bonds(bad.GetMol())
    assert not kekulized
    assert _score(bad.GetMol())[:2] == (False, False)


def test_qm9_stored_bonds_pass_the_data_row():
    """QM9's own molecules with their stored (SMILES-derived, Kekulé) bonds: ≥ 99.5% on both counts."""
    from molediff.data.qm9 import load_qm9
    from molediff.metrics import model_bond_metrics

    qm9 = load_qm9("test", progress=False)
    sub = qm9.subset(np.arange(0, len(qm9), 4))
    out, _ = model_bond_metrics(sub, novelty=False, progress=False)
    assert out["model_molecule_stability"] >= 0.995 and out["model_connected_validity"] >= 0.995, out


def test_bond_types_of_qm9_test_molecules_match_the_training_split_and_a_shifted_set_does_not():
    """``model_bond_metrics(..., bond_types=)``: QM9 test molecules' written bond types are the training split's
    (TV near 0); the same molecules with every C=O counted as C-O (a sampler that drops carbonyls, as
    a shift of the chemistry would) are measurably off, by exactly the carbonyls' share of the bonds."""
    from molediff.data.qm9 import load_qm9
    from molediff.data.reference import model_bond_types
    from molediff.metrics import bond_type_counts, bond_type_tv, model_bond_metrics, written_bonds

    reference = model_bond_types(progress=False)
    assert reference["C-H"] > reference["C-C"] > reference["C=O"] > 0 and "O=O" not in reference
    qm9 = load_qm9("test", progress=False)
    sub = qm9.subset(np.arange(0, len(qm9), 4))
    out, _ = model_bond_metrics(sub, novelty=False, progress=False, bond_types=reference)
    assert out["model_bond_type_tv"] < 0.01, out["model_bond_type_tv"]
    frac, ref = out["model_bond_type_fraction"], out["model_bond_type_fraction_reference"]
    assert abs(sum(frac.values()) - 1) < 1e-9 and abs(frac["C=O"] - ref["C=O"]) < 0.002
    atom_type, _, bonds = written_bonds(sub)
    counts = bond_type_counts(atom_type, bonds)
    shifted = dict(counts, **{"C-O": counts["C-O"] + counts["C=O"], "C=O": 0})
    assert bond_type_tv(shifted, counts) == pytest.approx(counts["C=O"] / sum(counts.values()))
    assert bond_type_tv(shifted, reference) > 0.015
    assert np.isnan(bond_type_tv({}, reference))
    assert model_bond_metrics(sub.subset(np.arange(3)), novelty=False, progress=False)[0]["model_bond_type_tv"] is None


def test_training_checks_score_the_written_bond_types():
    """``sample_metrics(mols, bond_types)`` (a training run's checks): sampled molecules whose written bonds are
    the reference's score TV 0, against a reference without their carbonyls > 0; the eval line says it."""
    import torch

    from molediff.data.qm9 import load_qm9
    from molediff.graph import MolGraph
    from molediff.metrics import bond_type_counts, bond_type_tv, sample_metrics, written_bonds
    from molediff.state import Molecules
    from molediff.training import _format_eval

    qm9 = load_qm9("test", progress=False)
    sub = qm9.subset(np.arange(40))
    graph = MolGraph.from_ptr(sub.ptr)
    atom_type, _, bonds = written_bonds(sub)
    order = torch.zeros(int(sub.ptr[-1]), int(sub.ptr[-1]), dtype=torch.long)
    order[bonds.src, bonds.dst] = order[bonds.dst, bonds.src] = torch.as_tensor(bonds.order)
    mols = Molecules(sub.pos, sub.atom_type, sub.charge, sub.ptr, graph.pair_index, order[graph.pair_index[0], graph.pair_index[1]],
                     graph.pair_ptr)
    counts = bond_type_counts(atom_type, bonds)
    assert counts["C=O"] > 0
    out = sample_metrics(mols, counts)
    assert out["model_bond_type_tv"] == 0.0 and out["model_molecule_stability"] == 1.0
    no_carbonyl = dict(counts, **{"C-O": counts["C-O"] + counts["C=O"], "C=O": 0})
    shifted = bond_type_tv(counts, no_carbonyl)
    assert shifted > 0 and sample_metrics(mols, no_carbonyl)["model_bond_type_tv"] == pytest.approx(shifted)
    assert "model_bond_type_tv" not in sample_metrics(mols)
    line = _format_eval({"step": 5, "minutes": 1.0, "val_loss": 0.5, **sample_metrics(mols, no_carbonyl)})
    assert f"bond-type TV {bond_type_tv(counts, no_carbonyl):.3f}" in line


def test_sdf_round_trips_bonds_and_charges_v2000_and_v3000(tmp_path: Path):
    mols = [_written(s, True) for s in ("C[N+](=O)[O-]", "c1ccoc1", "OC(=O)C#N")]
    for m in mols:
        AllChem.Compute2DCoords(m)
        conf = m.GetConformer()
        for i in range(m.GetNumAtoms()):  # lift to 3D (a z per atom) so the reader accepts it
            p = conf.GetAtomPosition(i)
            conf.SetAtomPosition(i, (p.x, p.y, 0.1 * i))
        conf.Set3D(True)
    path = tmp_path / "w.sdf"
    with SDFWriter(path) as w:
        for m in mols:
            (src, dst, order), charges, _ = kekule_bonds(m)
            symbols = [a.GetSymbol() for a in m.GetAtoms()]
            w.write(symbols, m.GetConformer().GetPositions(), bonds=(src, dst, order), charges=charges)
    v3 = tmp_path / "v3.sdf"
    v3.write_text("".join(Chem.MolToV3KMolBlock(m) + "$$$$\n" for m in mols))
    for f in (path, v3):
        records = read_sdf(f).records
        assert len(records) == 3
        for rec, m in zip(records, mols):
            (src, dst, order), charges, _ = kekule_bonds(m)
            assert sorted(zip(*rec.bonds)) == sorted(zip(src.tolist(), dst.tolist(), order.tolist()))
            assert rec.charges.tolist() == charges.tolist()
    got, _ = read_molecule_files([path], bonds=True)
    assert got.has_bonds.all() and got.charge.tolist().count(1) == 1 and got.charge.tolist().count(-1) == 1


def test_evaluate_model_bonds_prints_both_views(tmp_path: Path, capsys):
    path = tmp_path / "m.sdf"
    with SDFWriter(path) as w:
        for smiles in ("CCO", "C[N+](=O)[O-]"):
            m = Chem.AddHs(Chem.MolFromSmiles(smiles))
            AllChem.EmbedMolecule(m, randomSeed=0)
            Chem.Kekulize(m, clearAromaticFlags=True)
            (src, dst, order), charges, _ = kekule_bonds(m)
            w.write([a.GetSymbol() for a in m.GetAtoms()], m.GetConformer().GetPositions(), bonds=(src, dst, order), charges=charges)
    assert main(["evaluate", str(path), "--bonds", "model", "--no-reference", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "model bonds %" in out and "lookup (geometry) %" in out
    row = next(line for line in out.splitlines() if line.startswith("molecule stability"))
    assert row.split()[2] == "100.00"
    assert "bond types written" not in out  # no reference: nothing to compare the written chemistry with
    # against itself as the reference, the written bond types match exactly
    assert main(["evaluate", str(path), "--bonds", "model", "--reference", str(path), "--quiet"]) == 0
    assert "bond types written against m.sdf's: total variation 0.000; share of bonds N=O" in capsys.readouterr().out
    # scored by lookup, a file with its own bonds gets the note pointing to --bonds model
    assert main(["evaluate", str(path), "--no-reference", "--quiet"]) == 0
    assert "--bonds model" in capsys.readouterr().out


def test_committed_split_is_the_seeded_one():
    """An installed package has no data/qm9_split.npz and draws the split with make_split: they agree."""
    from molediff.data.qm9 import load_qm9_tensors, make_split, split_file

    ids = load_qm9_tensors(progress=False)["ids"].numpy()
    drawn = make_split(ids)
    with np.load(split_file()) as f:
        for k in drawn:
            assert np.array_equal(np.sort(f[k]), drawn[k]), k
