"""The recipe study's variants are real fields of the one training config (no forked code paths)."""

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def study():
    return load_script("benchmarks/recipe_study.py")


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
