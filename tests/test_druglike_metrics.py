"""molediff.metrics (drug-like): MOSES metrics on hand-made sets with answers worked out by hand, filters,
FCD, SA score, drug-likeness distributions, PoseBusters and the MMFF relaxation test."""

from __future__ import annotations

import importlib.util
import math
from collections import Counter

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolTransforms

from molediff.metrics import relaxation as rx
from molediff.metrics.druglike import evaluate_druglike
from molediff.metrics.errors import MetricUnavailable
from molediff.metrics.fcd import fcd_statistics, frechet_chemnet_distance
from molediff.metrics.fingerprints import internal_diversity, morgan_fingerprints, similarity_to_nearest_neighbour
from molediff.metrics.moses import count_cosine_similarity, fragment_counts, moses_metrics, passes_filters, scaffold_counts
from molediff.metrics.moses_data import load_moses_filters
from molediff.metrics.posebusters import posebusters_checks
from molediff.metrics.properties import DRUGLIKE_PROPERTY_NAMES, druglike_properties, property_distributions
from molediff.metrics.reference import DruglikeFeatures, Reference, build_druglike_features, smiles_reference
from molediff.metrics.relaxation import relaxation_metrics
from molediff.metrics.report import format_druglike_table, plot_property_histograms
from molediff.metrics.sascore import _contrib_sascorer, sa_score

HAS_MOLSETS = importlib.util.find_spec("moses") is not None
HAS_FCD = importlib.util.find_spec("fcd_torch") is not None
HAS_POSEBUSTERS = importlib.util.find_spec("posebusters") is not None
needs_molsets = pytest.mark.skipif(not HAS_MOLSETS, reason="molsets (MOSES data files) not installed")

#: Drug-like molecules (MOSES test split, first rows) for the realistic cases.
DRUGLIKE = [
    "CC1C2CCC(C2)C1CN(CCO)C(=O)c1ccc(Cl)cc1",
    "COc1ccc(-c2cc(=O)c3c(O)c(OC)c(OC)cc3o2)cc1O",
    "CCCS(=O)c1ccc2[nH]c(=NC(=O)OC)[nH]c2c1",
    "CC(C)(C)C(=O)C(Oc1ccc(Cl)cc1)n1ccnc1",
    "Cc1ccc(S(=O)(=O)N2CCCC2C(=O)NCc2ccco2)cc1",
    "O=C(Nc1ccccc1)c1ccc2c(c1)OCO2",
]


def _mols(smiles):
    return [Chem.MolFromSmiles(s) for s in smiles]


def _embedded(smiles: str, optimise: bool = True) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=0) == 0
    if optimise:
        assert AllChem.MMFFOptimizeMolecule(mol, maxIters=10_000) == 0
    return mol


# ------------------------------------------------------------------ similarity metrics, by hand


def test_snn_on_hand_made_fingerprints():
    # gen a = {0,1}, b = {2,3}; ref r = {0,1,2}, s = {3}
    gen = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.uint8)
    ref = np.array([[1, 1, 1, 0], [0, 0, 0, 1]], dtype=np.uint8)
    # T(a,r) = 2/3, T(a,s) = 0 -> 2/3;  T(b,r) = 1/4, T(b,s) = 1/2 -> 1/2
    assert similarity_to_nearest_neighbour(gen, ref) == pytest.approx((2 / 3 + 1 / 2) / 2)
    # multiplicity weights = the duplicated set
    assert similarity_to_nearest_neighbour(gen, ref, weights=np.array([3, 1])) == pytest.approx((3 * 2 / 3 + 1 / 2) / 4)
    assert similarity_to_nearest_neighbour(gen[[0, 0, 0, 1]], ref) == pytest.approx((3 * 2 / 3 + 1 / 2) / 4)
    # two empty fingerprints count as identical (MOSES)
    assert similarity_to_nearest_neighbour(np.zeros((1, 4), np.uint8), np.zeros((1, 4), np.uint8)) == 1.0


def test_snn_blocks_match_direct_computation():
    rng = np.random.default_rng(0)
    gen = (rng.random((300, 64)) < 0.1).astype(np.uint8)
    ref = (rng.random((9000, 64)) < 0.1).astype(np.uint8)  # more than one reference block
    inter = gen.astype(float) @ ref.T.astype(float)
    union = gen.sum(1)[:, None] + ref.sum(1)[None, :] - inter
    direct = np.where(union > 0, inter / np.where(union > 0, union, 1), 1.0).max(1).mean()
    assert similarity_to_nearest_neighbour(gen, ref) == pytest.approx(direct, rel=1e-6)


def test_internal_diversity_by_hand():
    a, b = [1, 1, 0, 0], [1, 0, 1, 0]  # T(a, b) = 1/3
    fps = np.array([a, b], dtype=np.uint8)
    # all ordered pairs, self-pairs included: mean T = (1 + 1/3) / 2
    assert internal_diversity(fps, p=1) == pytest.approx(1 - (1 + 1 / 3) / 2)
    # MOSES code, p = 2: 1 - mean_i sqrt(mean_j T_ij^2) = 1 - sqrt((1 + 1/9) / 2)
    assert internal_diversity(fps, p=2) == pytest.approx(1 - math.sqrt((1 + 1 / 9) / 2))
    # three molecules, one duplicated: weights give the same as the expanded set
    c = [0, 0, 1, 1]  # T(a,c) = 0, T(b,c) = 1/3
    three = np.array([a, b, c], dtype=np.uint8)
    t = np.array([[1, 1 / 3, 0], [1 / 3, 1, 1 / 3], [0, 1 / 3, 1]])
    assert internal_diversity(three, p=1) == pytest.approx(1 - t.mean())
    w = np.array([2.0, 1.0, 1.0])
    expanded = three[[0, 0, 1, 2]]
    assert internal_diversity(three, p=2, weights=w) == pytest.approx(internal_diversity(expanded, p=2))
    # a set of one repeated molecule has no diversity
    same = morgan_fingerprints(_mols(["c1ccccc1O"] * 3))
    assert internal_diversity(same) == pytest.approx(0.0, abs=1e-7)


def test_fragments_and_frag_cosine_by_hand():
    # ring bonds are never BRICS bonds: these molecules are one fragment each
    assert fragment_counts(_mols(["c1ccccc1"])) == Counter({"c1ccccc1": 1})
    # biphenyl: the aromatic-aromatic single bond is a BRICS bond (environments 16-16)
    assert fragment_counts(_mols(["c1ccc(-c2ccccc2)cc1"])) == Counter({"[16*]c1ccccc1": 2})
    gen = fragment_counts(_mols(["c1ccccc1", "c1ccccc1", "C1CCCCC1"]))  # benzene 2, cyclohexane 1
    ref = fragment_counts(_mols(["c1ccccc1", "C1CCCCC1", "C1CCCCC1", "c1ccc2ccccc2c1"]))  # 1, 2, naphthalene 1
    assert count_cosine_similarity(ref, gen) == pytest.approx((2 * 1 + 1 * 2) / (math.sqrt(5) * math.sqrt(6)))
    assert count_cosine_similarity(gen, gen) == pytest.approx(1.0)
    assert math.isnan(count_cosine_similarity({}, gen))


def test_scaffolds_and_scaf_cosine_by_hand():
    biphenyl, naphthalene, dpm = "c1ccc(-c2ccccc2)cc1", "c1ccc2ccccc2c1", "c1ccc(Cc2ccccc2)cc1"
    # toluene's scaffold (benzene) has one ring: MOSES counts only scaffolds of 2+ rings
    gen = scaffold_counts(_mols(["Cc1ccccc1", biphenyl, "Cc1ccc(-c2ccccc2)cc1", "OCc1ccc2ccccc2c1"]))
    assert gen == Counter({biphenyl: 2, naphthalene: 1})
    ref = scaffold_counts(_mols([biphenyl, "CCc1ccc2ccccc2c1", naphthalene, "Oc1ccc(Cc2ccccc2)cc1"]))
    assert ref == Counter({biphenyl: 1, naphthalene: 2, dpm: 1})
    assert count_cosine_similarity(ref, gen) == pytest.approx((2 * 1 + 1 * 2) / (math.sqrt(5) * math.sqrt(6)))
    assert scaffold_counts(_mols(["Cc1ccccc1"]), min_rings=1) == Counter({"c1ccccc1": 1})


def test_moses_metrics_on_a_small_set():
    ref_smiles = ["c1ccccc1", "C1CCCCC1", "C1CCCCC1", "c1ccc2ccccc2c1", "CCO"]
    reference = smiles_reference(ref_smiles + ["not a smiles"], "toy", compute_fcd=False)
    assert reference.features().num_molecules == 5 and reference.features().num_invalid == 1
    gen = ["c1ccccc1", "C1=CC=CC=C1", "C1CCCCC1", None, "C1CC", "CCO", Chem.MolFromSmiles("OCC")]
    r = moses_metrics(gen, reference, train={"c1ccccc1", "CCO"}, ks=(2, 1000), fcd=False)
    # valid: benzene (x2: Kekulé SMILES is the same molecule), cyclohexane, ethanol (x2: SMILES and a Mol)
    assert r["num_valid"] == 5 and r["validity"] == pytest.approx(5 / 7)
    assert r["unique@2"] == pytest.approx(1 / 2)  # benzene twice
    assert r["unique@1k"] == pytest.approx(3 / 5) and "unique@1k" in r["notes"]
    assert r["num_unique"] == 3 and r["novelty"] == pytest.approx(1 / 3)  # only cyclohexane is novel
    # every valid molecule is in the reference
    assert r["snn"] == pytest.approx(1.0)
    # fragments: gen benzene 2, cyclohexane 1, ethanol 2; ref benzene 1, cyclohexane 2, naphthalene 1, ethanol 1
    assert r["frag"] == pytest.approx((2 + 2 + 2) / (math.sqrt(4 + 1 + 4) * math.sqrt(1 + 4 + 1 + 1)))
    assert r["scaf"] is not None and math.isnan(r["scaf"])  # no 2-ring scaffold among the generated
    assert r["fcd"] is None and "fcd" in r["notes"]
    assert r["filters"] is None and "filters" in r["notes"]
    text = format_druglike_table(r)
    assert "SNN/Toy" in text and "validity" in text


def test_reference_save_and_load(tmp_path):
    reference = build_druglike_features(DRUGLIKE, name="drugs", compute_fcd=False)
    path = reference.save(tmp_path / "ref.npz")
    back = DruglikeFeatures.load(path)
    assert back.name == "drugs" and back.num_molecules == len(DRUGLIKE)
    np.testing.assert_array_equal(back.fingerprints, reference.fingerprints)
    assert back.fragments == reference.fragments and back.scaffolds == reference.scaffolds
    for k in DRUGLIKE_PROPERTY_NAMES:
        np.testing.assert_array_equal(back.properties[k], reference.properties[k])



def test_one_reference_object_gives_each_part_once(tmp_path):
    """A SMILES reference: novelty SMILES for every bond mode, features built once and kept (and cached
    on disk when asked, loaded back equal), ring figures of its molecules; no 3D statistics."""
    calls = []

    def smiles():
        calls.append(1)
        return DRUGLIKE + ["not a smiles"]

    cache = tmp_path / "features.npz"
    ref = smiles_reference(smiles, "drugs", compute_fcd=False, cache=cache)
    assert calls == []  # nothing is read before it is asked for
    assert isinstance(ref, Reference) and ref.to_dict() == {"kind": "smiles", "name": "drugs", "label": "drugs"}
    novel = ref.smiles("model")
    assert len(novel) == len(DRUGLIKE) and ref.smiles("lookup") == novel
    features = ref.features()
    assert ref.features() is features and features.num_molecules == len(DRUGLIKE) and features.num_invalid == 1
    assert cache.exists() and calls == [1]
    again = smiles_reference(smiles, "drugs", compute_fcd=False, cache=cache).features()
    np.testing.assert_array_equal(again.fingerprints, features.fingerprints)
    assert again.fragments == features.fragments and calls == [1]  # loaded, not rebuilt
    rings = ref.rings()
    assert rings["num_scored"] == len(DRUGLIKE) and rings["source"] == f"the {len(DRUGLIKE) + 1} drugs molecules"
    with pytest.raises(MetricUnavailable, match="statistics"):
        ref.statistics("lookup")
    assert Reference("molecules", "none").rings() is None and not Reference("molecules", "none").has("features")


# ------------------------------------------------------------------ filters


@needs_molsets
def test_filters_reject_charged_pains_and_odd_atoms():
    filters = load_moses_filters()
    assert len(filters.smarts) == 502
    rhodanine = "S=C1NC(=O)C(=Cc2ccccc2)S1"  # 5-benzylidene rhodanine: the classic PAINS (ene_rhod)
    cases = {
        DRUGLIKE[0]: True,
        DRUGLIKE[5]: True,
        "C[N+](C)(C)Cc1ccccc1": False,  # charged atom
        "CC(=O)[O-]": False,  # charged atom
        rhodanine: False,
        "CC[Si](C)(C)c1ccccc1": False,  # element outside C N S O F Cl Br H
        "C1CCCCCCC1": False,  # ring of 8 atoms
    }
    passed = passes_filters(_mols(list(cases)), filters)
    assert passed.tolist() == list(cases.values())
    hmol = Chem.AddHs(Chem.MolFromSmiles(rhodanine))
    hits = [n for n, s in zip(filters.names, filters.smarts) if hmol.HasSubstructMatch(Chem.MolFromSmarts(s))]
    assert any("ene_rhod" in n for n in hits)
    assert passes_filters([None], filters).tolist() == [False]


# ------------------------------------------------------------------ FCD


@pytest.mark.skipif(not HAS_FCD, reason="fcd_torch not installed")
def test_fcd_self_zero_and_different_set_large():
    drugs = DRUGLIKE * 4 + ["CCN(CC)C(=O)c1ccc(O)cc1", "Cc1ccc(NC(=O)C2CC2)cc1", "O=C(O)c1ccc(Cl)cc1Cl", "COc1ccc(CCN)cc1"]
    small = ["C" * n for n in range(2, 14)] + ["F" + "C" * n + "F" for n in range(1, 13)] + ["O=C=O", "N#N", "ClCCl", "BrCBr"]
    stats = fcd_statistics(drugs)
    assert frechet_chemnet_distance(drugs, stats) == pytest.approx(0.0, abs=1e-3)
    assert frechet_chemnet_distance(stats, stats) == pytest.approx(0.0, abs=1e-3)
    assert frechet_chemnet_distance(small, stats) > 20.0
    with pytest.raises(MetricUnavailable):
        fcd_statistics(["CCO"])


# ------------------------------------------------------------------ drug-likeness properties


def test_druglike_properties_and_distributions():
    props = druglike_properties(_mols(["c1ccc2ccccc2c1", "C1CCC2(CC1)CCCC2", "CCO", "c1ccc(-c2ccccc2)cc1"]))
    # naphthalene: 2 fused rings, one system; spiro[4.5]decane: 2 rings, 2 systems (one shared atom)
    assert props["num_rings"].tolist() == [2, 2, 0, 2]
    assert props["num_ring_systems"].tolist() == [1, 2, 0, 2]
    assert props["num_heavy_atoms"].tolist() == [10, 10, 3, 12]
    assert props["mol_wt"][2] == pytest.approx(46.069, abs=1e-2)
    assert np.all((props["qed"] > 0) & (props["qed"] < 1)) and np.all((props["sa"] >= 1) & (props["sa"] <= 10))
    # explicit hydrogens do not change anything
    with_h = druglike_properties([Chem.AddHs(m) for m in _mols(["CCO"])])
    assert with_h["sa"][0] == pytest.approx(props["sa"][2]) and with_h["num_heavy_atoms"][0] == 3
    d = property_distributions({"logp": np.array([1.0, 2.0])}, {"logp": np.array([2.0, 3.0, np.nan])})
    assert d["logp"]["mean"] == 1.5 and d["logp"]["reference_mean"] == 2.5 and d["logp"]["w1"] == pytest.approx(1.0)


def test_sa_formula_matches_contrib():
    if _contrib_sascorer() is None:
        pytest.skip("RDKit Contrib SA_Score not installed")
    for mol in _mols(DRUGLIKE + ["C1CC2CCC1C2", "C[C@H](N)C(=O)O", "C1CCCCCCCCCC1"]):
        assert sa_score(mol, "formula") == pytest.approx(sa_score(mol, "contrib"), abs=1e-9)


def test_property_histograms_written(tmp_path):
    props = druglike_properties(_mols(DRUGLIKE))
    paths = plot_property_histograms(props, props, tmp_path / "plots")
    assert {p.name for p in paths} == {f"{n}.png" for n in DRUGLIKE_PROPERTY_NAMES} | {"druglike_distributions.png"}
    assert all(p.stat().st_size > 1000 for p in paths)


# ------------------------------------------------------------------ 3D quality


def test_relaxation_strained_vs_optimised():
    good = _embedded("CCOC(=O)c1ccccc1")
    stretched = Chem.Mol(good)
    conf = stretched.GetConformer()
    rdMolTransforms.SetBondLength(conf, 0, 1, rdMolTransforms.GetBondLength(conf, 0, 1) + 0.5)  # CH3-CH2 by 0.5 Å
    r_good = relaxation_metrics([good])
    assert r_good["num_relaxed"] == 1
    assert abs(r_good["energy_drop_median_kcal_mol"]) < 1e-3
    assert r_good["heavy_atom_rmsd_mean_angstrom"] < 1e-3 and r_good["bond_length_change_angstrom"] < 1e-4
    r_bad = relaxation_metrics([stretched])
    assert r_bad["energy_drop_median_kcal_mol"] > 20.0  # MMFF C-C stretch by 0.5 Å: ~45 kcal/mol
    n_bonds = good.GetNumBonds()
    assert r_bad["bond_length_change_angstrom"] == pytest.approx(0.5 / n_bonds, rel=0.2)  # one bond returns ~0.5 Å
    assert r_bad["heavy_atom_rmsd_mean_angstrom"] > 0.05
    # counted apart: no force-field parameters (boron), hydrogens missing, nothing at all
    rest = relaxation_metrics([_embedded("CB(C)C", optimise=False), Chem.RemoveHs(good), None])
    assert (rest["num_unparametrised"], rest["num_missing_hydrogens"], rest["num_invalid"], rest["num_relaxed"]) == (1, 1, 1, 0)
    assert rest["energy_drop_median_kcal_mol"] is None


def test_torsion_and_angle_changes_are_periodic():
    x0 = np.array([[1.0, 0, 0], [0, 0, 0], [0, 1.0, 0], [np.cos(np.radians(179)), 1.0, np.sin(np.radians(179))]])
    x1 = x0.copy()
    x1[3] = [np.cos(np.radians(-179)), 1.0, np.sin(np.radians(-179))]
    idx = np.array([[0, 1, 2, 3]])
    diff = abs(rx._dihedrals_deg(x1, idx) - rx._dihedrals_deg(x0, idx))
    assert np.minimum(diff, 360 - diff)[0] == pytest.approx(2.0, abs=1e-6)
    assert rx._angles_deg(x0, np.array([[0, 1, 2]]))[0] == pytest.approx(90.0)


@pytest.mark.skipif(not HAS_POSEBUSTERS, reason="posebusters not installed")
def test_posebusters_flags_a_clash():
    good = _embedded("CCOC(=O)c1ccccc1")
    clash = Chem.Mol(good)
    conf = clash.GetConformer()
    o = np.array(conf.GetAtomPosition(4))  # carbonyl O; atom 0 (the methyl C) is three bonds away
    conf.SetAtomPosition(0, (o + np.array([0.3, 0.0, 0.0])).tolist())
    r = posebusters_checks([good, clash, None], config="mol_fast")
    assert r["num_molecules"] == 3 and r["num_missing"] == 1
    assert r["checks"]["internal_steric_clash"] == pytest.approx(1 / 3)  # only the good one passes
    assert r["all_pass"] == pytest.approx(1 / 3)


def test_evaluate_druglike_end_to_end():
    reference = smiles_reference(DRUGLIKE, "drugs", compute_fcd=False)
    mols3d = [_embedded(s, optimise=False) for s in DRUGLIKE[:3]]
    r = evaluate_druglike(DRUGLIKE[:3] + [None], reference, mols_3d=mols3d, posebusters_config=None, fcd=False)
    assert r["moses"]["validity"] == pytest.approx(3 / 4) and r["moses"]["snn"] == pytest.approx(1.0)
    assert set(r["properties"]) == set(DRUGLIKE_PROPERTY_NAMES)
    assert r["relaxation"]["num_relaxed"] == 3 and r["relaxation"]["energy_drop_median_kcal_mol"] > 0
    assert r["posebusters"] is None and "posebusters" in r["notes"]
    text = format_druglike_table(r)
    for word in ("SNN/Drugs", "QED", "MMFF94 relaxation", "energy drop"):
        assert word in text


def test_hashed_novelty_equals_novelty_and_the_sample_summary_reports_it():
    from molediff.chem.rdkit_mol import canonical_smiles
    from molediff.metrics.moses import hashed_novelty, novelty, smiles_hashes
    from molediff.commands.sample import _druglike_summary

    train = [canonical_smiles(s) for s in ("CCO", "c1ccccc1Cl", "CC(=O)Nc1ccc(O)cc1", "CCS")]
    hashes = smiles_hashes(train + [None, train[0]])
    assert hashes.dtype == np.int64 and len(hashes) == 4 and (np.diff(hashes) > 0).all()
    gen = [canonical_smiles(s) for s in ("OCC", "Clc1ccccc1", "CCBr", "CCCl", "CCO")]
    assert hashed_novelty(gen, hashes) == pytest.approx(novelty(gen, set(train))) == pytest.approx(2 / 4)
    assert np.isnan(hashed_novelty([None], hashes))
    line = _druglike_summary({"[H]OC([H])([H])C([H])([H])[H]", "BrC([H])([H])C([H])([H])[H]"}, training_hashes=hashes)
    assert "novel 50.0% (of its 4 training molecules)" in line and "QED" in line
    assert "novel" not in _druglike_summary({"CCO"})


def _relaxed(smiles: str, seed: int = 0) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    AllChem.MMFFOptimizeMolecule(mol)
    return mol


def test_strain_against_etkdg_pairs_molecules_and_counts_the_rest(monkeypatch):
    relaxed = _relaxed("CC(=O)Nc1ccc(O)cc1")
    stretched = Chem.Mol(relaxed)
    conf = stretched.GetConformer()
    rdMolTransforms.SetBondLength(conf, 0, 1, 2.2)  # a strained input
    r = rx.strain_against_etkdg([relaxed, stretched, None])
    assert r["num_paired"] == 2 and r["num_invalid"] == 1 and r["index"] == [0, 1]
    assert r["model_drops"][0] < 0.5 < r["etkdg_drops"][0]  # MMFF's own minimum beats a raw ETKDG conformer
    assert r["model_drops"][1] > r["model_drops"][0] + 5
    assert sum(r["model_term_drop_median_kcal_mol"].values()) == pytest.approx(np.median(r["model_drops"]), abs=30)
    assert 0.0 < r["share_below_etkdg"] <= 1.0
    # an embedding that raises (RDKit's KekulizeException on some generated graphs) is counted, not fatal
    def boom(*args, **kwargs):
        raise RuntimeError("Can't kekulize mol")
    from rdkit.Chem import rdDistGeom

    monkeypatch.setattr(rdDistGeom, "EmbedMolecule", boom)
    r = rx.strain_against_etkdg([relaxed])
    assert r["num_not_embedded"] == 1 and r["num_paired"] == 0 and r["model_drop_median_kcal_mol"] is None


def test_ring_statistics_count_what_a_chemist_looks_at():
    from molediff.metrics.rings import format_ring_table, ring_statistics

    mols = [Chem.MolFromSmiles(s) for s in ("c1ccccc1", "C1=CCCC=C1", "O=C1NCCC1", "C1CC1c1ccncc1", "CC")] + [None]
    r = ring_statistics(mols)
    assert r["num_molecules"] == 6 and r["num_scored"] == 5
    assert r["aromatic_rings_per_molecule"] == pytest.approx(2 / 5)
    assert r["without_aromatic_ring"] == pytest.approx(3 / 5)
    assert r["odd_ring"] == pytest.approx(1 / 5)  # the cyclohexadiene; the lactam's C=O is outside its ring
    assert r["small_ring"] == pytest.approx(1 / 5)
    assert r["ring_sizes"]["6"] == pytest.approx(3 / 5) and r["ring_sizes"]["3"] == pytest.approx(1 / 5)
    assert "aromatic rings per molecule" in "\n".join(format_ring_table(r, r))
    # the yield counts what is missing: 4 of the 5 scored have no odd ring, the unreadable one counts against
    assert r["clean_of_generated"] == pytest.approx(4 / 6)
    # of 10 generated molecules, only these 6 were valid: the odd-ring share is unchanged, the yield falls
    r10 = ring_statistics(mols, generated=10)
    assert r10["odd_ring"] == r["odd_ring"] and r10["clean_of_generated"] == pytest.approx(4 / 10)
    assert "of 10 generated" in format_ring_table(r10)[0]
    with pytest.raises(ValueError, match="at least"):
        ring_statistics(mols, generated=3)
