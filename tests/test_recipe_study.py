"""The recipe study's variants are real fields of the one training config (no forked code paths)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("recipe_study", ROOT / "benchmarks" / "recipe_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_variant_builds_a_distinct_valid_config(study):
    from molediff.config import TrainConfig

    base = study.make_config("baseline", 8, 1, 0).to_dict()
    assert base["diffusion"]["parametrization"] == "eps"  # the naive baseline stays pinned
    seen = set()
    for name in study.VARIANTS:
        cfg = study.make_config(name, 8, 1, 0)
        d = cfg.to_dict()
        assert TrainConfig.from_dict(d).to_dict() == d  # JSON round trip validates the fields
        assert (name == "baseline") == (d == base), name
        key = repr(d)
        assert key not in seen, f"{name} duplicates another variant"
        seen.add(key)


def test_unknown_override_is_rejected(study, monkeypatch):
    monkeypatch.setitem(study.VARIANTS, "bogus", {"model.no_such_field": 1})
    with pytest.raises(KeyError, match="no_such_field"):
        study.make_config("bogus", 8, 1, 0)
