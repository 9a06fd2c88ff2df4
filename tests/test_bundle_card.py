"""scripts/bundle_model.py's card pieces: handwritten sections survive a re-bundle; drug-like target rows render."""

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def bundle():
    return load_script("scripts/bundle_model.py")


CARD = """# molediff bundled model `x`

- Data: somewhere.

## Learning curve (EMA weights; ...)

| step | hours |
|---|---|
| 1 | 0.1 |

## Where it stands

Handwritten, with a table:

| a | b |
|---|---|

## Quality (benchmarks/druglike_quality.py)

| row |

## History and recipe

- how it was made.

"""


def test_handwritten_sections_are_kept_in_order_and_generated_ones_are_not(bundle):
    kept = bundle.handwritten_sections(CARD, [])
    assert [title for title, _ in kept] == ["Where it stands", "History and recipe"]
    title, text = kept[0]
    assert text[0] == "## Where it stands" and text[-1] == "|---|---|"  # trailing blank lines dropped, table kept
    assert kept[1][1] == ["## History and recipe", "", "- how it was made."]


def test_drop_section_leaves_one_out_by_the_start_of_its_title(bundle):
    assert [t for t, _ in bundle.handwritten_sections(CARD, ["Where it"])] == ["History and recipe"]
    assert bundle.handwritten_sections("", []) == []


def test_druglike_conditioning_table_rows(bundle):
    rows = [
        {"request": "unconditional", "kind": "none", "guidance": None, "n": 1000, "stability": 0.99, "valid": 0.985,
         "odd_ring": 0.02, "without_aromatic_ring": 0.03},
        {"request": "logp=1.7", "kind": "value", "guidance": 1.0, "n": 1000, "mae": 0.41, "naive_mae": 1.15,
         "reduction": 1 - 0.41 / 1.15, "stability": 0.98, "valid": 0.97, "odd_ring": 0.02, "without_aromatic_ring": None},
        {"request": "logp=0.8:2.4", "kind": "range", "guidance": 3.0, "n": 1000, "in_range": 0.85, "naive_in_range": 0.355,
         "in_range_of_all": 0.83, "stability": 0.97, "valid": 0.975, "odd_ring": 0.01, "without_aromatic_ring": 0.02,
         "steer": 0.1, "restart_ranges": True},
        {"request": "qed=0.7", "kind": "value", "guidance": 1.0, "n": 1000, "mae": 0.03, "naive_mae": 0.12,
         "reduction": 0.75, "band": [0.65, 0.75], "in_band": 0.9, "naive_in_band": 0.2, "stability": 1.0, "valid": 1.0,
         "odd_ring": 0.0, "without_aromatic_ring": 0.0, "steer": 0.1, "restart_ranges": True},
    ]
    lines = bundle.druglike_conditioning_table({"rows": rows})
    assert len(lines) == 2 + len(rows)
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    value = lines[3].split(" | ")
    assert value[2:4] == ["0", "no"]  # not steered (rows before steering have no such field); nothing checked
    assert value[5] == "0.41 (1.15)" and value[6] == "64%" and value[7] == "-"
    ranged = lines[4].split(" | ")
    assert ranged[1:4] == ["3", "0.1", "yes"] and ranged[7] == "85.0 (35.5)" and ranged[8] == "83.0"
    assert lines[2].split(" | ")[1] == "-"  # the unconditional row has no guidance
    banded = lines[5].split(" | ")  # a value checked by restarts as its band
    assert banded[3] == "yes" and banded[6] == "75%" and banded[7] == "90.0 (20.0) ±0.05"
