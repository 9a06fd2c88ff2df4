"""The report page (``--report DIR``: ``index.html`` and ``molecules.csv``) of ``molediff evaluate`` and
``molediff sample``, opened from disk in a real headless Chromium (tests/browser.py: the DevTools
protocol on a pipe, no driver package, nothing downloaded): it loads without console errors and without
any request off the disk, the gallery shows every molecule in pages, a filter changes the count, and
the 3D view draws and turns.

The browser tests skip when no Chromium is installed here; CI installs Debian's (.ci/run)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem import write_sdf
from molediff.cli import main
from tests.browser import Browser, find_chromium
from tests.chem_molecules import KNOWN, ORDER

#: Drug-like molecules with S, Cl and aromatic rings; each written several times (different seeds)
DRUGS = ("CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "CC(C)Cc1ccc(C(C)C(=O)O)cc1",
         "Clc1ccc(cc1)C(=O)NCC#N", "NS(=O)(=O)c1ccc(N)cc1")
COPIES = 9  # 5 x 9 drug records + 9 hand-made ones: 54 molecules, two gallery pages of 50


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """``molediff evaluate --bonds model --report`` of a folder: the drugs (aromatic bonds as written,
    kekulized on reading) and the hand-made molecules of tests/chem_molecules (a few of them not valid)."""
    root = tmp_path_factory.mktemp("report")
    data = root / "in"
    data.mkdir()
    with Chem.SDWriter(str(data / "drugs.sdf")) as writer:
        for smiles in DRUGS:
            for seed in range(COPIES):
                mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
                assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
                AllChem.MMFFOptimizeMolecule(mol)
                writer.write(mol)
    write_sdf(data / "hand.sdf", [KNOWN[name][0]() for name in ORDER])
    out = root / "rep"
    assert main(["evaluate", str(data), "--bonds", "model", "--no-reference", "--quiet", "--report", str(out)]) == 0
    return out


def test_the_table_has_every_molecule_and_score(report: Path):
    table = pd.read_csv(report / "molecules.csv")
    assert len(table) == len(DRUGS) * COPIES + len(ORDER)
    for column in ("index", "name", "smiles", "atoms", "valid", "stable", "connected", "lookup_valid", "qed", "sa", "logp", "mol_wt"):
        assert column in table.columns
    assert "posebusters" not in table.columns and "novel" not in table.columns  # no --druglike, no novelty reference
    drugs = table[table["name"].str.startswith("drugs.sdf")]
    assert drugs["valid"].all() and drugs["stable"].all()  # the written bonds of RDKit's own molecules
    assert drugs["qed"].between(0, 1).all() and drugs["mol_wt"].gt(100).all()
    assert drugs["smiles"].str.contains("Cl").sum() == COPIES
    hand = table[table["name"].str.startswith("hand.sdf")]
    assert not hand["valid"].all() and hand.loc[~hand["valid"], "smiles"].isna().all()


def test_page_is_self_contained_and_small(report: Path):
    page = (report / "index.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "{{" not in page
    for remote in ("http://", "https://", "//cdn", "<link ", "<script src"):
        assert remote not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert len(page.encode()) < 400_000  # 54 molecules: the page's code, the data, the embedded plot


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium; CI installs it)")
    with Browser(executable, width=1400, height=1000, timeout=30) as b:
        yield b


def _count(b: Browser) -> int:
    return int(b.evaluate("document.getElementById('count').dataset.shown"))


def _cards(b: Browser) -> int:
    return b.evaluate("document.querySelectorAll('#gallery .card').length")


def _set(b: Browser, element: str, value: str, event: str) -> None:
    b.evaluate(f"(() => {{ const el = document.getElementById({element!r}); el.value = {value!r}; "
               f"el.dispatchEvent(new Event({event!r})); }})()")


def test_the_gallery_in_a_browser(report: Path, browser: Browser):
    table = pd.read_csv(report / "molecules.csv")
    n = len(table)
    browser.open(report / "index.html")
    browser.wait_for("document.querySelectorAll('#gallery .card svg line').length > 0")
    assert browser.console_errors() == []
    assert all(url.startswith(("file:", "data:")) for url in browser.requests()), browser.requests()  # works offline
    assert _count(browser) == n and _cards(browser) == 50
    assert browser.evaluate("document.getElementById('page').textContent") == "page 1 / 2"
    browser.evaluate("document.getElementById('next').click()")
    assert _cards(browser) == n - 50

    # "show the invalid ones"
    _set(browser, "flag-valid", "no", "change")
    invalid = int((~table["valid"]).sum())
    assert 0 < invalid < n
    assert _count(browser) == invalid and _cards(browser) == invalid
    _set(browser, "flag-valid", "any", "change")
    assert _count(browser) == n

    # "QED > 0.7", typed: the count follows the table
    _set(browser, "query", "QED > 0.7", "input")
    want = int((table["qed"] > 0.7).sum())
    assert 0 < want < n
    browser.wait_for(f"document.getElementById('count').dataset.shown === '{want}'", timeout=5)
    _set(browser, "query", "smiles ~ Cl and not (mw < 100)", "input")
    browser.wait_for(f"document.getElementById('count').dataset.shown === '{COPIES}'", timeout=5)
    _set(browser, "query", "qed >", "input")  # a bad filter says why and leaves the gallery as it was
    browser.wait_for("document.getElementById('query-error').textContent.length > 0", timeout=5)
    assert _count(browser) == COPIES
    _set(browser, "query", "", "input")
    browser.wait_for(f"document.getElementById('count').dataset.shown === '{n}'", timeout=5)

    # sorting by QED, highest first: the first card is the best molecule
    _set(browser, "sort", "qed", "change")
    first = browser.evaluate("document.querySelector('#gallery .card').dataset.i")
    assert table["qed"].iloc[int(first)] == pytest.approx(table["qed"].max())
    assert browser.console_errors() == []


def test_the_3d_view_draws_and_turns(report: Path, browser: Browser):
    browser.open(report / "index.html", "mol=3")
    browser.wait_for("document.querySelector('.card.selected') !== null")
    box = browser.evaluate("(() => { const r = document.getElementById('viewer').getBoundingClientRect(); "
                           "return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
    assert box["width"] > 200 and box["height"] > 200
    before = _pixels(browser.screenshot(box))
    drawn = (before.min(axis=2) < 235).mean()  # not white: atoms and bonds
    colours = len(np.unique(before.reshape(-1, 3) // 16, axis=0))
    assert drawn > 0.01 and colours > 8, (drawn, colours)
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    browser.call("Input.dispatchMouseEvent", {"type": "mousePressed", "x": x, "y": y, "button": "left", "clickCount": 1})
    for step in range(1, 6):
        browser.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x + 15 * step, "y": y + 5 * step, "button": "left", "buttons": 1})
    browser.call("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": x + 75, "y": y + 25, "button": "left", "clickCount": 1})
    after = _pixels(browser.screenshot(box))
    assert (np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 40).mean() > 0.005  # the molecule turned
    assert "#3" in browser.evaluate("document.getElementById('detail-info').textContent")
    assert browser.console_errors() == []


def test_sample_writes_a_report(tmp_path, capsys):
    """``molediff sample --report`` with the drug-like model: the page and the table, with the 3D checks and
    novelty against the model's training molecules."""
    out, rep = tmp_path / "s.sdf", tmp_path / "rep"
    code = main(["sample", "--model", "druglike", "-n", "4", "--steps", "5", "--no-progress", "--threads", "1",
                 "--out", str(out), "--report", str(rep)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"wrote {rep / 'index.html'}" in captured.out
    table = pd.read_csv(rep / "molecules.csv")
    assert len(table) == 4 and {"posebusters", "relaxation_drop", "novel", "valid", "qed"} <= set(table.columns)
    page = (rep / "index.html").read_text()
    assert "model bonds (written): connected valid" in page  # the sampling summary travels with the page


def test_report_folder_errors_come_before_sampling(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("x")
    out = tmp_path / "s.sdf"
    code = main(["sample", "--model", "druglike", "-n", "2", "--steps", "2", "--no-progress", "--out", str(out), "--report", str(taken)])
    err = capsys.readouterr().err
    assert code == 2 and "exists and is not a folder" in err and "Traceback" not in err
    assert not out.exists()


def test_the_page_files_are_package_data():
    """A non-editable install carries the page's template, style and scripts."""
    import fnmatch
    import tomllib

    from molediff.metrics.html_report import ASSETS

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["molediff"]
    for name in (ASSETS["template"], ASSETS["style"], *ASSETS["scripts"]):
        assert (Path(__file__).parents[1] / "molediff" / "metrics" / "report_page" / name).is_file()
        assert any(fnmatch.fnmatch(f"metrics/report_page/{name}", g) for g in globs), name
