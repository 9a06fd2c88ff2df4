"""Local restarts (molediff.restarts): which atoms are generated again, that the rest of a molecule and
molecules without failing atoms are kept exactly, and the request's checks, defaults and SD property."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff import sampling
from molediff.checkpoint import save_model_file
from molediff.chem.model_bonds import failing_atoms
from molediff.cli import main
from molediff.config import ModelConfig, TrainConfig
from molediff.elements import ELEMENTS
from molediff.errors import UserError
from molediff.graph import MolGraph
from molediff.models import build_network
from molediff.molecular import MolecularDiffusion
from molediff.restarts import restart_failed, restart_region
from molediff.state import remove_mean

HISTOGRAM = [0] * 8 + [1, 2, 2, 1]  # sizes 8..11
C, O, H = (ELEMENTS.index(s) for s in "COH")


def _config(bonds: bool = True) -> TrainConfig:
    config = TrainConfig(model=ModelConfig(hidden=16, layers=2, pair_hidden=8))
    config.diffusion.timesteps = 50
    config.diffusion.charges = config.diffusion.bonds = bonds
    return config


@pytest.fixture(scope="module")
def joint(tmp_path_factory) -> tuple[Path, TrainConfig]:
    """A tiny untrained joint model (its molecules fail the valence rule, so restarts run)."""
    torch.manual_seed(0)
    config = _config()
    net = build_network(config.model, MolecularDiffusion(config.diffusion))
    path = tmp_path_factory.mktemp("model") / "m.pt"
    save_model_file(path, net.state_dict(), config, {"step": 0, "size_histogram": HISTOGRAM})
    return path, config


def test_failing_atoms_are_unstable_ones_and_stray_fragments():
    # molecule 0: ethane's carbons (3 H counts each) and a stray methane; molecule 1: formaldehyde
    atom, charge, ptr = np.array([C, C, C, C, O]), np.zeros(5, int), np.array([0, 3, 5])
    src, dst, order = np.array([0, 3]), np.array([1, 4]), np.array([1, 2])
    assert failing_atoms(atom, charge, ptr, src, dst, order, np.array([3, 3, 4, 2, 0])).tolist() == [False, False, True, False, False]
    # a carbon one hydrogen short fails by itself; its partner does not
    assert failing_atoms(atom, charge, ptr, src, dst, order, np.array([2, 3, 4, 2, 0])).tolist() == [True, False, True, False, False]


def test_select_takes_the_rows_of_the_chosen_molecules():
    g = MolGraph.from_ptr(torch.tensor([0, 3, 5, 9]))
    sub, atoms, pairs = g.select(torch.tensor([0, 2]))
    assert sub.ptr.tolist() == [0, 3, 7] and atoms.tolist() == [0, 1, 2, 5, 6, 7, 8]
    assert torch.equal(sub.pair_index, MolGraph.from_ptr(sub.ptr).pair_index)
    # the chosen pairs join the same atoms, renumbered
    assert torch.equal(atoms[sub.pair_index], g.pair_index[:, pairs])


def _ethanol_state(diffusion: MolecularDiffusion, broken: bool):
    """Two ethanols with explicit hydrogens as a clean state; with ``broken`` the second loses the bond
    of one carbon to its hydrogen (that carbon fails, the hydrogen is a stray fragment)."""
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    n = mol.GetNumAtoms()
    ptr = torch.tensor([0, n, 2 * n])
    graph = MolGraph.from_ptr(ptr)
    order = torch.zeros(2 * n, 2 * n, dtype=torch.long)
    for k in range(2):
        for b in mol.GetBonds():
            i, j = b.GetBeginAtomIdx() + k * n, b.GetEndAtomIdx() + k * n
            order[i, j] = order[j, i] = int(b.GetBondTypeAsDouble())
    cut = None
    if broken:
        cut = next(b for b in mol.GetBonds() if {b.GetBeginAtom().GetSymbol(), b.GetEndAtom().GetSymbol()} == {"C", "H"})
        i, j = cut.GetBeginAtomIdx() + n, cut.GetEndAtomIdx() + n
        order[i, j] = order[j, i] = 0
    pos = torch.as_tensor(mol.GetConformer().GetPositions(), dtype=torch.float32).repeat(2, 1)
    batch = SimpleNamespace(ptr=ptr, pos=pos, pair_index=graph.pair_index,
                            atom_type=torch.as_tensor([ELEMENTS.index(a.GetSymbol()) for a in mol.GetAtoms()] * 2),
                            charge=torch.zeros(2 * n, dtype=torch.long),
                            bond_type=order[graph.pair_index[0], graph.pair_index[1]])
    return diffusion.encode(batch), n, cut


def _molecules_state(diffusion: MolecularDiffusion, smiles: list[str]):
    """Molecules with explicit hydrogens (written bonds, Kekulé) as one clean state; returns it and ``ptr``."""
    mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in smiles]
    for m in mols:
        Chem.Kekulize(m, clearAromaticFlags=True)
        AllChem.EmbedMolecule(m, randomSeed=0)
    ptr = torch.tensor([0] + np.cumsum([m.GetNumAtoms() for m in mols]).tolist())
    graph = MolGraph.from_ptr(ptr)
    total = int(ptr[-1])
    order = torch.zeros(total, total, dtype=torch.long)
    for m, a in zip(mols, ptr.tolist()):
        for b in m.GetBonds():
            i, j = b.GetBeginAtomIdx() + a, b.GetEndAtomIdx() + a
            order[i, j] = order[j, i] = int(b.GetBondTypeAsDouble())
    batch = SimpleNamespace(ptr=ptr, pair_index=graph.pair_index,
                            pos=torch.cat([torch.as_tensor(m.GetConformer().GetPositions(), dtype=torch.float32) for m in mols]),
                            atom_type=torch.as_tensor([ELEMENTS.index(a.GetSymbol()) for m in mols for a in m.GetAtoms()]),
                            charge=torch.zeros(total, dtype=torch.long),
                            bond_type=order[graph.pair_index[0], graph.pair_index[1]])
    return diffusion.encode(batch), ptr


def test_odd_ring_atoms_follow_the_ring_rule():
    from molediff.chem.rdkit_mol import odd_ring_atoms

    assert odd_ring_atoms(Chem.MolFromSmiles("C1=CCCCC1CO")) == {0, 1, 2, 3, 4, 5}  # cyclohexene's ring
    assert odd_ring_atoms(Chem.MolFromSmiles("c1ccccc1C1=CCC1")) == {6, 7, 8, 9}  # the cyclobutene, not the benzene
    assert odd_ring_atoms(Chem.MolFromSmiles("O=C1CCCCC1")) == set()  # an exocyclic C=O is not inside the ring
    assert odd_ring_atoms(Chem.MolFromSmiles("C1=CC=CC=C1")) == set()  # benzene, written Kekulé
    assert odd_ring_atoms(Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False)) is None  # does not sanitize


def test_ring_restarts_redraw_odd_rings_and_never_leave_a_valid_molecule_invalid(joint):
    path, _ = joint
    gen = sampling.load_pretrained(path)
    d = gen.diffusion
    x, ptr = _molecules_state(d, ["C1=CCCCC1", "CCO"])  # cyclohexene (an odd ring), ethanol
    assert not restart_region(d, x).any() and not restart_region(d, x, rings=True)[ptr[1]:].any()
    assert torch.nonzero(restart_region(d, x, hops=0, rings=True)).flatten().tolist() == list(range(6))
    seen = []

    def denoiser(molecules, fragment):
        seen.append(molecules.tolist())
        from molediff.guidance import sampling_denoiser
        return sampling_denoiser(d, gen.net, None, 1.0, None)

    # the untrained network's redraws of the ring fail the valence rule: the molecule keeps what it was,
    # and its ring is tried again the next round
    y, restarted = restart_failed(d, x, denoiser, rounds=2, num_steps=10, eta=1.0, noise_scale=1.0,
                                  generator=torch.Generator().manual_seed(0), rings=True)
    assert seen == [[0], [0]] and restarted.tolist() == [2, 0]
    assert torch.equal(y.node, x.node) and torch.equal(y.pair, x.pair)
    # without the ring rule nothing runs
    y, restarted = restart_failed(d, x, denoiser, rounds=2, num_steps=10, eta=1.0, noise_scale=1.0)
    assert restarted.tolist() == [0, 0] and len(seen) == 2


def test_range_restarts_redraw_whole_molecules_outside_a_range_and_keep_valid_ones(joint):
    from molediff.chem.analysis import outside_ranges

    path, _ = joint
    gen = sampling.load_pretrained(path)
    d = gen.diffusion
    x, ptr = _molecules_state(d, ["CCCCCCO", "CCO"])  # Crippen logP 1.56 and -0.00
    mols = d.decode(x)
    order = mols.bond_order
    src, dst = mols.pair_index[:, order > 0].numpy()
    args = (mols.atom_type.numpy(), mols.charge.numpy(), mols.ptr.numpy(), src, dst, order[order > 0].numpy())
    assert outside_ranges(*args, ranges={"logp": (1.0, 2.0)}).tolist() == [False, True]
    assert outside_ranges(*args, ranges={"logp": (1.0, 2.0)}, molecules=np.array([True, False])).tolist() == [False, False]
    assert outside_ranges(*args, ranges={"logp": (-1.0, 2.0), "hbd": (0, 0)}).tolist() == [True, True]
    # the region of a molecule outside its range is all of it; the one inside is left alone
    region = restart_region(d, x, ranges={"logp": (1.0, 2.0)})
    assert not region[: ptr[1]].any() and region[ptr[1]:].all()

    def denoiser(molecules, fragment):
        from molediff.guidance import sampling_denoiser
        return sampling_denoiser(d, gen.net, None, 1.0, None)

    # the untrained network's redraws fail the valence rule: the molecule keeps what it was, and is tried again
    y, restarted = restart_failed(d, x, denoiser, rounds=2, num_steps=10, eta=1.0, noise_scale=1.0,
                                  generator=torch.Generator().manual_seed(0), ranges={"logp": (1.0, 2.0)})
    assert restarted.tolist() == [0, 2] and torch.equal(y.node, x.node) and torch.equal(y.pair, x.pair)


def test_region_is_the_failing_atoms_and_their_neighbours(joint):
    _, config = joint
    d = MolecularDiffusion(config.diffusion)
    x, _, _ = _ethanol_state(d, broken=False)
    assert not restart_region(d, x).any()
    x, n, cut = _ethanol_state(d, broken=True)
    region = restart_region(d, x, hops=0)
    assert region[:n].sum() == 0 and set(torch.nonzero(region).flatten().tolist()) == {cut.GetBeginAtomIdx() + n, cut.GetEndAtomIdx() + n}
    assert restart_region(d, x, hops=1).sum() > 2


def test_restart_keeps_what_does_not_fail(joint):
    path, config = joint
    gen = sampling.load_pretrained(path)
    d = gen.diffusion
    x, n, cut = _ethanol_state(d, broken=True)
    region = restart_region(d, x, hops=1)
    calls = []

    def denoiser(molecules, fragment):
        calls.append(molecules.tolist())
        assert fragment is None
        from molediff.guidance import sampling_denoiser
        return sampling_denoiser(d, gen.net, None, 1.0, None)

    y, restarted = restart_failed(d, x, denoiser, rounds=1, num_steps=10, eta=1.0, noise_scale=1.0,
                                  generator=torch.Generator().manual_seed(0), hops=1)
    assert calls == [[1]] and restarted.tolist() == [0, 1]
    # the molecule without failing atoms is untouched, row for row
    assert torch.equal(y.node[:n], x.node[:n]) and torch.equal(y.pair[: x.graph.pair_ptr[1]], x.pair[: x.graph.pair_ptr[1]])
    # the held atoms of the other keep their types, charges and the bonds among them; positions are new
    held = ~region[n:]
    assert torch.equal(y.node[n:][held, 3:], x.node[n:][held, 3:])
    p0, p1 = int(x.graph.pair_ptr[1]), int(x.graph.pair_ptr[2])
    i, j = x.graph.pair_index[:, p0:p1] - n
    both = held[i] & held[j]
    assert torch.equal(y.pair[p0:p1][both], x.pair[p0:p1][both])
    assert not torch.equal(y.node[n:, :3], x.node[n:, :3])
    # positions stay centred
    assert torch.allclose(remove_mean(y.node[:, :3], y.graph.batch, 2), y.node[:, :3], atol=1e-5)


def test_a_restart_from_noise_draws_the_failing_molecule_again_whole(joint):
    path, _ = joint
    gen = sampling.load_pretrained(path)
    d = gen.diffusion
    x, n, _ = _ethanol_state(d, broken=True)
    assert restart_region(d, x, hops=0)[n:].sum() == 2  # a region of two atoms
    levels = []

    def denoiser(molecules, fragment):
        from molediff.guidance import sampling_denoiser
        return sampling_denoiser(d, gen.net, None, 1.0, None)

    y, restarted = restart_failed(d, x, denoiser, rounds=1, num_steps=10, eta=1.0, noise_scale=1.0, hops=0,
                                  generator=torch.Generator().manual_seed(0), restart_from="noise",
                                  callback=lambda i, t, z: levels.append(t))
    assert restarted.tolist() == [0, 1] and levels[0] == d.schedule.set_timesteps(10).tolist()[0]  # from noise
    assert torch.equal(y.node[:n], x.node[:n])  # the molecule without failing atoms is untouched
    # every atom of the failing one is drawn again, types and bonds included (nothing is held)
    p0, p1 = int(x.graph.pair_ptr[1]), int(x.graph.pair_ptr[2])
    assert not torch.equal(y.node[n:, 3:], x.node[n:, 3:]) and not torch.equal(y.pair[p0:p1], x.pair[p0:p1])
    with pytest.raises(ValueError, match="restart_from"):
        restart_failed(d, x, denoiser, rounds=1, num_steps=10, eta=1.0, noise_scale=1.0, restart_from="scratch")


def test_request_checks_and_defaults(joint, tmp_path):
    path, config = joint
    gen = sampling.load_pretrained(path)
    assert gen.request(4, steps=5).restarts == 0  # no default in its file
    assert gen.request(4, steps=5, restarts=3).restarts == 3
    for bad in (-1, 21):
        with pytest.raises(UserError, match="between 0 and 20"):
            gen.request(4, steps=5, restarts=bad)
    # a model file may carry its own default; a fragment request runs none unless asked, and refuses them
    gen.meta["default_restarts"] = 2
    assert gen.request(4, steps=5).restarts == 2
    assert not gen.request(4, steps=5).restart_rings and gen.request(4, steps=5, restart_rings=True).restart_rings
    gen.meta["restart_rings"] = True  # the ring rule's default follows the file, and runs only with restarts
    assert gen.request(4, steps=5).restart_rings and not gen.request(4, steps=5, restarts=0).restart_rings
    assert not gen.request(4, steps=5, restart_rings=False).restart_rings
    with pytest.raises(UserError, match="needs local restarts"):
        gen.request(4, steps=5, restarts=0, restart_rings=True)
    del gen.meta["restart_rings"]
    # what a restart draws again: the region unless asked or the file says otherwise
    assert gen.request(4, steps=5).restart_from == "region"
    assert gen.request(4, steps=5, restart_from="noise").restart_from == "noise"
    with pytest.raises(UserError, match="restart_from must be one of region, noise"):
        gen.request(4, steps=5, restart_from="scratch")
    with pytest.raises(UserError, match="restart_from needs local restarts"):
        gen.request(4, steps=5, restarts=0, restart_from="noise")
    gen.meta["default_restart_from"] = "noise"
    assert gen.request(4, steps=5).restart_from == "noise"
    assert gen.request(4, steps=5, restarts=0).restart_from == "noise"  # the file's own, harmless without restarts
    del gen.meta["default_restart_from"]
    frag = Chem.AddHs(Chem.MolFromSmiles("CO"))
    AllChem.EmbedMolecule(frag, randomSeed=0)
    frag = Chem.RWMol(frag)
    frag.RemoveAtom(next(a.GetIdx() for a in frag.GetAtoms() if a.GetSymbol() == "H"))
    assert gen.request(4, steps=5, fragment=frag.GetMol(), n_atoms=9).restarts == 0
    with pytest.raises(UserError, match="fragment"):
        gen.request(4, steps=5, fragment=frag.GetMol(), n_atoms=9, restarts=1)
    # an atoms-only model has no bonds to judge
    torch.manual_seed(0)
    cfg = _config(bonds=False)
    atoms = tmp_path / "atoms.pt"
    save_model_file(atoms, build_network(cfg.model, MolecularDiffusion(cfg.diffusion)).state_dict(), cfg,
                    {"step": 0, "size_histogram": HISTOGRAM})
    with pytest.raises(UserError, match="writes bonds"):
        sampling.load_pretrained(atoms).request(4, steps=5, restarts=1)


def test_same_seed_same_molecules_and_molecules_not_restarted_are_unchanged(joint):
    path, _ = joint
    gen = sampling.load_pretrained(path)
    plain = list(gen.sample_arrays(6, steps=5, seed=1, restarts=0))
    runs = [list(gen.sample_arrays(6, steps=5, seed=1, restarts=2)) for _ in range(2)]
    for (s1, p1, i1), (s2, p2, i2) in zip(*runs):
        assert list(s1) == list(s2) and np.array_equal(p1, p2) and i1["restarts"] == i2["restarts"]
    assert any(info["restarts"] for _, _, info in runs[0])  # an untrained model fails: restarts ran
    for (s0, p0, i0), (s1, p1, i1) in zip(plain, runs[0]):
        assert "restarts" not in i0
        if i1["restarts"] == 0:  # the main pass is the same draw: untouched molecules are the same
            assert list(s0) == list(s1) and np.allclose(p0, p1, atol=1e-5)


def test_a_grid_too_coarse_for_the_restart_level_restarts_from_its_last_level(joint):
    # 2 trailing steps are 999 and 499, both above the level (0.4 T): a round takes the grid's last step
    # instead of failing (it raised StopIteration before)
    path, _ = joint
    gen = sampling.load_pretrained(path)
    calls = []
    got = list(gen.sample_arrays(4, steps=2, seed=1, restarts=1, on_step=lambda i, s, k: calls.append(k)))
    assert len(got) == 4 and any(info["restarts"] for _, _, info in got)
    assert len(calls) == 3  # the batch's two steps, then one step of the round


def test_progress_moves_through_restart_rounds(joint):
    # on_step is called for the restart rounds' steps too (after the batch's own), so a progress bar
    # does not sit still while failing atoms are drawn again
    path, _ = joint
    gen = sampling.load_pretrained(path)
    calls = {0: [], 2: []}
    for rounds, seen in calls.items():
        got = list(gen.sample_arrays(4, steps=5, seed=1, restarts=rounds, on_step=lambda i, s, k, seen=seen: seen.append(s)))
    assert len(calls[0]) == 5 and set(calls[0]) == {5}
    assert any(info["restarts"] for _, _, info in got) and len(calls[2]) > 5


def test_cli_writes_restart_counts(joint, tmp_path, capsys):
    path, _ = joint
    out = tmp_path / "o.sdf"
    assert main(["sample", "--checkpoint", str(path), "-n", "4", "--steps", "5", "--restarts", "2", "--no-progress",
                 "--out", str(out)]) == 0
    mols = list(Chem.SDMolSupplier(str(out), sanitize=False, removeHs=False))
    counts = [int(m.GetProp("molediff_restarts")) for m in mols]
    assert len(counts) == 4 and all(0 <= c <= 2 for c in counts)
    said = capsys.readouterr().out
    assert f"local restarts (up to 2 rounds): {sum(c > 0 for c in counts)} of 4 molecules" in said
    assert "restarts2" in mols[0].GetProp("molediff_sampler")
    assert main(["sample", "--checkpoint", str(path), "-n", "2", "--steps", "3", "--restarts", "-1", "--no-progress",
                 "--out", str(tmp_path / "p.sdf")]) == 2
    assert main(["sample", "--checkpoint", str(path), "-n", "2", "--steps", "3", "--restarts", "0", "--restart-rings",
                 "--no-progress", "--out", str(tmp_path / "q.sdf")]) == 2
    assert "--restart-rings needs local restarts" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(path), "-n", "2", "--steps", "3", "--restarts", "1", "--restart-rings",
                 "--no-progress", "--out", str(tmp_path / "r.sdf")]) == 0
    assert "had failing atoms or odd rings generated again" in capsys.readouterr().out
    assert "restarts1rings" in next(iter(Chem.SDMolSupplier(str(tmp_path / "r.sdf"), sanitize=False))).GetProp("molediff_sampler")
    assert main(["sample", "--checkpoint", str(path), "-n", "2", "--steps", "3", "--restarts", "1", "--restart-from", "noise",
                 "--no-progress", "--out", str(tmp_path / "s.sdf")]) == 0
    assert "had failing atoms drawn again whole from noise" in capsys.readouterr().out
    assert "restarts1noise" in next(iter(Chem.SDMolSupplier(str(tmp_path / "s.sdf"), sanitize=False))).GetProp("molediff_sampler")
    assert main(["sample", "--checkpoint", str(path), "-n", "2", "--steps", "3", "--restarts", "0", "--restart-from", "noise",
                 "--no-progress", "--out", str(tmp_path / "t.sdf")]) == 2
    assert "--restart-from needs local restarts" in capsys.readouterr().err


def test_restarts_with_a_fragment_conditioned_model_keep_the_fragment(tmp_path):
    torch.manual_seed(0)
    config = _config()
    config.diffusion.fragments = 0.5
    path = tmp_path / "frag.pt"
    save_model_file(path, build_network(config.model, MolecularDiffusion(config.diffusion)).state_dict(), config,
                    {"step": 0, "size_histogram": HISTOGRAM})
    gen = sampling.load_pretrained(path)
    frag = Chem.AddHs(Chem.MolFromSmiles("CC(=O)O"))
    AllChem.EmbedMolecule(frag, randomSeed=0)
    frag = Chem.RWMol(frag)
    frag.RemoveAtom(next(a.GetIdx() for a in frag.GetAtoms() if a.GetSymbol() == "H" and a.GetNeighbors()[0].GetSymbol() == "O"))
    want, symbols = frag.GetConformer().GetPositions(), [a.GetSymbol() for a in frag.GetAtoms()]
    out = list(gen.sample_arrays(6, steps=5, seed=2, fragment=frag.GetMol(), n_atoms="9-11", restarts=3))
    assert any(info["restarts"] for _, _, info in out)  # an untrained model fails: restarts ran
    for s, p, info in out:
        assert list(s[:7]) == symbols and np.abs(p[:7] - want).max() < 1e-3
        src, dst, order = info["bonds"]
        inside = {(i, j, o) for i, j, o in zip(src.tolist(), dst.tolist(), order.tolist()) if i < 7 and j < 7}
        assert inside == {(min(b.GetBeginAtomIdx(), b.GetEndAtomIdx()), max(b.GetBeginAtomIdx(), b.GetEndAtomIdx()),
                           int(b.GetBondTypeAsDouble())) for b in frag.GetBonds()}



def _marked(x, fixed):
    from molediff.state import MolState
    return MolState(x.node, x.pair, x.graph.with_fixed(fixed), x.parts)


def test_region_never_holds_a_fragment_and_frees_its_molecule_when_a_fragment_atom_fails(joint):
    _, config = joint
    d = MolecularDiffusion(config.diffusion)
    x, n, cut = _ethanol_state(d, broken=True)
    ends = {cut.GetBeginAtomIdx() + n, cut.GetEndAtomIdx() + n}
    carbon = next(a for a in ends if x.part("atom")[a].argmax() == d.vocab.elements.index("C"))
    # the fragment: the second molecule's atoms but the two that fail; the region is those two
    fixed = torch.zeros(2 * n, dtype=torch.bool)
    fixed[n:] = True
    fixed[list(ends)] = False
    region = restart_region(d, _marked(x, fixed), hops=2)
    assert not (region & fixed).any() and set(torch.nonzero(region).flatten().tolist()) == ends
    # the fragment: the second molecule's heavy atoms, the failing carbon among them. It cannot change,
    # so every generated atom of its molecule (its hydrogens) is drawn again, even at zero hops
    heavy = x.part("atom").argmax(1) != d.vocab.elements.index("H")
    fixed = heavy.clone()
    fixed[:n] = False
    assert bool(fixed[carbon])
    region = restart_region(d, _marked(x, fixed), hops=0)
    assert set(torch.nonzero(region).flatten().tolist()) == set(range(n, 2 * n)) - set(torch.nonzero(fixed).flatten().tolist())


# ---------------------------------------------------------------- restarts decided before the finishing steps

def test_split_molecules_are_those_their_bonds_leave_in_pieces():
    from molediff.chem.model_bonds import split_molecules

    # molecule 0: atoms 0-1-2 bonded in a chain; molecule 1: 3-4 bonded, 5 alone; molecule 2: one atom;
    # molecule 3: 7 and 8 with a zero-order "bond" only (not bonded)
    ptr = np.array([0, 3, 6, 7, 9])
    src, dst, order = np.array([0, 1, 3, 7]), np.array([1, 2, 4, 8]), np.array([1, 2, 1, 0])
    assert split_molecules(ptr, src, dst, order).tolist() == [False, True, False, True]


@pytest.fixture(scope="module")
def joint_1000(tmp_path_factory) -> Path:
    """A tiny untrained self-conditioning joint model at T = 1000, where the finish grids exist."""
    torch.manual_seed(0)
    config = _config()
    config.diffusion.timesteps = 1000
    config.diffusion.self_condition = True
    net = build_network(config.model, MolecularDiffusion(config.diffusion))
    path = tmp_path_factory.mktemp("model1000") / "m.pt"
    save_model_file(path, net.state_dict(), config, {"step": 0, "size_histogram": HISTOGRAM})
    return path


def test_a_chain_run_in_two_parts_is_the_chain(joint_1000):
    """ddim_sample to the finishing level (``end``), then from there (``start``) with the first part's
    self-conditioning estimate handed on, is the same chain as one run (the same noise in the same order)."""
    from molediff.diffusion.samplers import ddim_sample
    from molediff.guidance import sampling_denoiser
    from molediff.restarts import finishing_level

    gen = sampling.load_pretrained(joint_1000)
    d = gen.diffusion
    graph = MolGraph.from_ptr(torch.tensor([0, 8, 17]))
    x_T = d.prior(graph, torch.Generator().manual_seed(0))
    level = finishing_level(d.schedule, 8, "finish4")
    assert level == 52 and finishing_level(d.schedule, 8, "trailing") is None
    kw = dict(num_steps=8, eta=1.0, spacing="finish4", noise_scale=0.7)
    whole = ddim_sample(sampling_denoiser(d, gen.net, None, 1.0, None), x_T, d.schedule,
                        generator=torch.Generator().manual_seed(1), **kw)
    g = torch.Generator().manual_seed(1)
    first = sampling_denoiser(d, gen.net, None, 1.0, None)
    seen = []
    mid = ddim_sample(first, x_T, d.schedule, generator=g, end=level, callback=lambda i, t, z: seen.append(t), **kw)
    assert seen == [999, 749, 499, 249]  # the coarse steps, the last one stepping to the finishing level
    two = ddim_sample(sampling_denoiser(d, gen.net, None, 1.0, None, estimate=first.estimate), mid, d.schedule,
                      generator=g, start=level, **kw)
    assert torch.allclose(two.node, whole.node, atol=1e-6) and torch.allclose(two.pair, whole.pair, atol=1e-6)


def test_restarts_from_noise_on_a_finish_grid_redraw_split_molecules_before_finishing(joint_1000, monkeypatch):
    """Judged where the coarse steps end, a molecule in pieces is drawn again from noise through the coarse
    steps only; the others are not touched, and the finishing steps run once per molecule."""
    from molediff import restarts

    gen = sampling.load_pretrained(joint_1000)
    d = gen.diffusion
    judged = []

    def split(diffusion, x):  # molecule 1 is in pieces at its first draw only
        judged.append(x.num_graphs)
        return torch.tensor([False, True, False] if len(judged) == 1 else [False] * x.num_graphs)

    monkeypatch.setattr(restarts, "split_molecules", split)
    calls = []  # (timestep, molecules) of every network call
    gen.net.register_forward_hook(lambda _, inputs, __: calls.append((round(float(inputs[0][0, d.input_labels().index("time")]) * 1000),
                                                                      inputs[2].num_graphs)))
    graph = MolGraph.from_ptr(torch.tensor([0, 8, 17, 27]))
    out = d.sample(gen.net, [8, 9, 10], num_steps=8, eta=1.0, noise_scale=1.0, spacing="finish4", restarts=2,
                   restart_from="noise", generator=torch.Generator().manual_seed(0), x_T=d.prior(graph, torch.Generator().manual_seed(0)))
    assert judged[:2] == [3, 1]  # the batch, then the one molecule redrawn
    coarse, fine = [999, 749, 499, 249], [52, 39, 26, 12]
    first = calls[:8]
    assert first[:4] == [(t, 3) for t in coarse] and first[4:] == [(t, 1) for t in coarse]  # the redraw: coarse steps only
    assert calls[8:12] == [(t, 3) for t in fine]  # then every molecule finishes once
    # each molecule's rounds: the redraw before finishing, plus any after it (this untrained model's finished
    # molecules fail the honest rule, so the usual restarts from noise follow)
    assert bool((out.restarted >= torch.tensor([0, 1, 0])).all()) and len(calls) > 12
