"""Growing molecules around a fragment: fixed atoms kept exactly, same seed same molecules, sizes,
SD properties, and clear errors for bad fragments (CLI and API)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff import sampling
from molediff.checkpoint import save_model_file
from molediff.cli import main
from molediff.config import ModelConfig, TrainConfig
from molediff.errors import UserError
from molediff.inpainting import Fragment, parse_size_range
from molediff.models import build_network
from molediff.molecular import MolecularDiffusion

HISTOGRAM = [0] * 8 + [1, 2, 2, 1]  # sizes 8..11


@pytest.fixture(scope="module", params=["atoms", "joint", "fragment"])
def model(request, tmp_path_factory) -> Path:
    """A tiny untrained model: atoms only, joint (both grow fragments by inpainting), or joint and
    fragment-conditioned (reads which atoms are fixed)."""
    torch.manual_seed(0)
    config = TrainConfig(model=ModelConfig(hidden=16, layers=2, pair_hidden=8))
    config.diffusion.timesteps = 50
    config.diffusion.charges = config.diffusion.bonds = request.param != "atoms"
    config.diffusion.fragments = 0.5 if request.param == "fragment" else 0.0
    net = build_network(config.model, MolecularDiffusion(config.diffusion))
    path = tmp_path_factory.mktemp("model") / "m.pt"
    save_model_file(path, net.state_dict(), config, {"step": 0, "size_histogram": HISTOGRAM})
    return path


def _acetic_acid_fragment() -> Chem.Mol:
    """Acetic acid with its hydroxyl H removed (3D, Kekulé): 7 atoms, an open valence on O."""
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)O"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    rw = Chem.RWMol(mol)
    h = next(a.GetIdx() for a in rw.GetAtoms() if a.GetSymbol() == "H" and a.GetNeighbors()[0].GetSymbol() == "O")
    rw.RemoveAtom(h)
    return rw.GetMol()


def test_fixed_atoms_are_kept_exactly_and_the_seed_decides(model):
    gen = sampling.load_pretrained(model)
    frag = _acetic_acid_fragment()
    want = frag.GetConformer().GetPositions()
    symbols = [a.GetSymbol() for a in frag.GetAtoms()]
    runs = [list(gen.sample_arrays(5, steps=6, seed=s, fragment=frag, n_atoms="9-11", resample=2)) for s in (3, 3, 4)]
    for s, p, info in runs[0]:
        assert 9 <= len(s) <= 11 and list(s[:7]) == symbols and info["fixed_atoms"] == list(range(7))
        assert np.abs(p[:7] - want).max() < 1e-3
        if "bonds" in info:  # the fragment's bonds and charges are the output's
            src, dst, order = info["bonds"]
            inside = {(i, j, o) for i, j, o in zip(src.tolist(), dst.tolist(), order.tolist()) if i < 7 and j < 7}
            fb = {(min(b.GetBeginAtomIdx(), b.GetEndAtomIdx()), max(b.GetBeginAtomIdx(), b.GetEndAtomIdx()), int(b.GetBondTypeAsDouble()))
                  for b in frag.GetBonds()}
            assert inside == fb and info["charges"][:7].tolist() == [0] * 7
    for (s1, p1, _), (s2, p2, _) in zip(runs[0], runs[1]):
        assert list(s1) == list(s2) and np.array_equal(p1, p2)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(runs[0], runs[2]))
    # without --n-atoms: sizes from the histogram, above the fragment's size
    sizes = [len(s) for s, _, _ in gen.sample_arrays(6, steps=3, seed=0, fragment=frag)]
    assert all(8 <= n <= 11 for n in sizes)


def test_cli_writes_fixed_atoms_property(model, tmp_path):
    frag_path = tmp_path / "frag.sdf"
    w = Chem.SDWriter(str(frag_path))
    w.write(_acetic_acid_fragment())
    w.close()
    out = tmp_path / "o.sdf"
    assert main(["sample", "--checkpoint", str(model), "--fragment", str(frag_path), "--n-atoms", "10", "-n", "3",
                 "--steps", "4", "--no-progress", "--out", str(out)]) == 0
    mols = list(Chem.SDMolSupplier(str(out), sanitize=False, removeHs=False))
    assert len(mols) == 3 and all(m.GetNumAtoms() == 10 for m in mols)
    assert all(m.GetProp("molediff_fixed_atoms") == "1 2 3 4 5 6 7" for m in mols)
    # a fragment-conditioned model grows the fragment directly; others inpaint with RePaint rounds
    fragment_model = sampling.load_pretrained(model).config.diffusion.fragments > 0
    want = "_fragment_resample1" if fragment_model else "_inpaint_resample5"
    assert all(m.GetProp("molediff_sampler").endswith(want) for m in mols)


def _write(path: Path, blocks: list[str]) -> Path:
    path.write_text("".join(b + "$$$$\n" for b in blocks))
    return path


def test_bad_fragments_are_refused_clearly(model, tmp_path, capsys):
    good = Chem.MolToMolBlock(_acetic_acid_fragment())
    flat = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.Compute2DCoords(flat)
    chlorine = Chem.AddHs(Chem.MolFromSmiles("CCl"))
    AllChem.EmbedMolecule(chlorine, randomSeed=0)
    cases = {
        "atoms, more than": (_write(tmp_path / "a.sdf", [good]), ["--n-atoms", "5"]),
        "outside the model's vocabulary": (_write(tmp_path / "b.sdf", [Chem.MolToMolBlock(chlorine)]), []),
        "no 3D coordinates": (_write(tmp_path / "c.sdf", [Chem.MolToMolBlock(flat)]), []),
        "holds 2 records": (_write(tmp_path / "d.sdf", [good, good]), []),
        "holds no molecule": (_write(tmp_path / "e.sdf", []), []),
        "no such file": (tmp_path / "missing.sdf", []),
    }
    for message, (path, extra) in cases.items():
        code = main(["sample", "--checkpoint", str(model), "--fragment", str(path), "-n", "1", "--out", str(tmp_path / "o.sdf"), *extra])
        assert code == 2, message
        assert message in capsys.readouterr().err, message
    assert not (tmp_path / "o.sdf").exists()
    pos = np.array([[0.0, 0, 0], [0.3, 0, 0], [0, 1.0, 0.5]])
    with pytest.raises(UserError, match="overlap"):
        Fragment(["C", "O", "H"], pos, np.zeros(3), (np.zeros(0), np.zeros(0), np.zeros(0)))
    for bad in ("x", "5-3", "0", "1-2-3"):
        with pytest.raises(UserError, match="--n-atoms"):
            parse_size_range(bad)
    assert parse_size_range("20-25") == (20, 25) and parse_size_range("7") == (7, 7)


def test_fragment_requests_default_to_the_fragment_model(model, tmp_path, monkeypatch):
    """`--fragment` without --model uses the bundled fragment-conditioned model ("qm9-frag"); sampling
    without a fragment keeps the default model."""
    asked = []
    real = sampling.bundled_model_path

    def fake(name=sampling.DEFAULT_MODEL):
        asked.append(name)
        return model if name == sampling.FRAGMENT_MODEL else real(name)

    monkeypatch.setattr(sampling, "bundled_model_path", fake)
    frag_path = tmp_path / "frag.sdf"
    w = Chem.SDWriter(str(frag_path))
    w.write(_acetic_acid_fragment())
    w.close()
    assert main(["sample", "--fragment", str(frag_path), "--n-atoms", "10", "-n", "2", "--steps", "3", "--no-progress",
                 "--out", str(tmp_path / "o.sdf")]) == 0
    assert asked == ["qm9-frag"]
    real_frag = real("qm9-frag")
    if real_frag.exists():  # the bundled one is fragment-conditioned
        assert sampling.load_pretrained(real_frag).config.diffusion.fragments > 0


def test_a_dpm_sampler_with_a_fragment_says_what_to_change(model, tmp_path, capsys):
    """Inpainting's default RePaint rounds need DDIM: the API and the CLI say so up front (naming the
    sampler, not a --resample the user never gave); --resample 1 runs the solver."""
    gen = sampling.load_pretrained(model)
    frag = _acetic_acid_fragment()
    inpaints = not gen.config.diffusion.fragments
    if inpaints:
        with pytest.raises(UserError, match="uses RePaint rounds, which need the ddim sampler: use sampler ddim, or resample 1"):
            next(gen.sample_arrays(1, steps=4, fragment=frag, sampler="dpm++2m"))
    got = list(gen.sample_arrays(2, steps=4, fragment=frag, sampler="dpm++2m", resample=1 if inpaints else None))
    assert len(got) == 2
    path = _write(tmp_path / "f.sdf", [Chem.MolToMolBlock(frag)])
    code = main(["sample", "--checkpoint", str(model), "--fragment", str(path), "-n", "1", "--steps", "4", "--sampler", "dpm++2m",
                 "--out", str(tmp_path / "o.sdf"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == (2 if inpaints else 0), err
    if inpaints:
        assert "use --sampler ddim, or --resample 1" in err
