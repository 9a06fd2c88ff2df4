"""Every bundled model gives the same molecules for the same seed as before the refactoring of issue 39
(one home per concern): a few molecules, a few steps each, through the sampling paths the bundled
models use (DDIM and a DPM solver, guidance, a fragment-conditioned model and inpainting, a heavy-atom
model's hydrogens). Reference: tests/data/bundled_determinism.json, recorded with one torch thread
(``OMP_NUM_THREADS=1 python tests/test_bundled_determinism.py`` rewrites it; only do that for an
intended change of results). Positions agree to 1e-4 Å, elements, charges and bonds exactly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = Path(__file__).parent / "data" / "bundled_determinism.json"


def _fragment():
    from molediff.inpainting import Fragment

    # methanol without its hydroxyl hydrogen: C-O with three H on C (an open valence at O)
    pos = np.array([[0.0, 0.0, 0.0], [1.42, 0.0, 0.0], [-0.36, 1.03, 0.0], [-0.36, -0.51, 0.89], [-0.36, -0.51, -0.89]])
    return Fragment(["C", "O", "H", "H", "H"], pos, np.zeros(5), (np.array([0, 0, 0, 0]), np.array([1, 2, 3, 4]),
                                                                   np.array([1, 1, 1, 1])), name="methanol-H")


#: case name -> (bundled model, keyword arguments of sample_arrays besides n, steps, seed, batch_size)
CASES: dict[str, tuple[str, dict]] = {
    "qm9": ("qm9", {}),
    "qm9-joint": ("qm9-joint", {}),
    "qm9-joint-dpm": ("qm9-joint", {"sampler": "dpm++2m-sde"}),
    "qm9-joint-inpaint": ("qm9-joint", {"fragment": "methanol", "resample": 2, "n_atoms": (7, 9)}),
    "qm9-cond-guided": ("qm9-cond", {"conditions": {"gap": 0.3, "alpha": 70.0}, "guidance": 2.0}),
    "qm9-frag": ("qm9-frag", {"fragment": "methanol"}),
    "druglike": ("druglike", {"relax_hydrogens": False, "n_atoms": (9, 14)}),
}
N, STEPS, SEED = 3, 5, 11


def _sample(case: str) -> list[dict]:
    from molediff.sampling import load_pretrained

    model, kwargs = CASES[case]
    kwargs = dict(kwargs)
    if kwargs.get("fragment") == "methanol":
        kwargs["fragment"] = _fragment()
    out = []
    for symbols, pos, info in load_pretrained(model=model).sample_arrays(N, steps=STEPS, seed=SEED, batch_size=N, **kwargs):
        mol = {"symbols": [str(s) for s in symbols], "pos": np.round(pos, 5).tolist()}
        if "bonds" in info:
            mol["bonds"] = [[int(a), int(b), int(o)] for a, b, o in zip(*info["bonds"])]
            mol["charges"] = [int(c) for c in info["charges"]]
        if "hydrogens" in info:
            mol["hydrogens"] = [int(h) for h in info["hydrogens"]]
        out.append(mol)
    return out


@pytest.fixture
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("case", list(CASES))
def test_bundled_model_gives_the_recorded_molecules(case, _one_thread):
    want = json.loads(REFERENCE.read_text())["cases"][case]
    got = _sample(case)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["symbols"] == w["symbols"]
        assert g.get("bonds") == w.get("bonds") and g.get("charges") == w.get("charges")
        assert g.get("hydrogens") == w.get("hydrogens")
        np.testing.assert_allclose(np.array(g["pos"]), np.array(w["pos"]), atol=1e-4, rtol=0)


if __name__ == "__main__":  # record the reference (an intended change of results only)
    torch.set_num_threads(1)
    # cases named on the command line are recorded anew, the others kept as they were
    cases = json.loads(REFERENCE.read_text())["cases"] if sys.argv[1:] and REFERENCE.exists() else {}
    cases.update({case: _sample(case) for case in (sys.argv[1:] or CASES)})
    REFERENCE.write_text(json.dumps({"n": N, "steps": STEPS, "seed": SEED, "cases": cases}, separators=(",", ":")) + "\n")
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")
