"""The report page: one self-contained HTML file (``index.html``) that opens from disk with the network
off, built from a :func:`~molediff.metrics.molecule_table.molecule_table` and the molecules.

The page holds the per-molecule table and each molecule's atoms, written bonds, 3D coordinates (0.01 Å)
and 2D layout (RDKit's depictor, 0.01 units) as one JSON blob; its scripts draw the 2D depictions (SVG)
of the gallery page on view and the rotatable 3D view (ball and stick on a 2D canvas). The page's
template, style and scripts are package data in ``report_page/`` (:data:`ASSETS`), inlined when the
page is written: nothing is fetched when it is viewed.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from molediff.atomic import atomic_write

__all__ = ["ASSETS", "BOND_LABELS", "molecule_drawing", "page_data", "render_page", "write_html_report"]

#: The page's files in ``molediff/metrics/report_page/``: the template and, in order, the scripts.
ASSETS = {"template": "report.html", "style": "report.css", "scripts": ("viewer3d.js", "depict2d.js", "report.js")}
#: Decimal places of the float columns on the page (the CSV keeps full precision).
_DIGITS = {"qed": 3, "sa": 2, "logp": 2, "mol_wt": 1, "relaxation_drop": 1}
_BOND_CODES = {"SINGLE": 1, "DOUBLE": 2, "TRIPLE": 3, "AROMATIC": 4}
#: What the bonds on the page are, by bond mode.
BOND_LABELS = {"model": "as written in the file", "lookup": "perceived from distances (lookup rule)",
               "rdkit": "perceived by RDKit (rdDetermineBonds)"}


def _asset(name: str) -> str:
    return resources.files("molediff.metrics").joinpath("report_page", name).read_text(encoding="utf-8")


def _hidden_hydrogens(mol: Any) -> list[int]:
    """Hydrogens a 2D depiction leaves out (counted on their atom's label instead): neutral, with one
    single bond, to an atom that is not a hydrogen."""
    hidden = []
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() != 1 or atom.GetFormalCharge() or atom.GetDegree() != 1:
            continue
        bond = atom.GetBonds()[0]
        if bond.GetOtherAtom(atom).GetAtomicNum() != 1 and bond.GetBondType().name == "SINGLE":
            hidden.append(atom.GetIdx())
    return hidden


def _layout_2d(mol: Any, kept: list[int]) -> np.ndarray:
    """``[len(kept), 2]`` RDKit 2D coordinates of the atoms ``kept`` (their bonds among them), or their 3D
    coordinates projected on the molecule's best plane when the depictor fails."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdDepictor

    keep = set(kept)
    sub = Chem.RWMol(mol)
    for idx in sorted((i for i in range(mol.GetNumAtoms()) if i not in keep), reverse=True):
        sub.RemoveAtom(idx)
    sub.RemoveAllConformers()
    with rdBase.BlockLogs():
        try:
            sub.UpdatePropertyCache(strict=False)
            Chem.FastFindRings(sub)
            rdDepictor.Compute2DCoords(sub)
            return np.asarray(sub.GetConformer().GetPositions())[:, :2]
        except Exception:  # noqa: BLE001 - RDKit's assorted failures on odd graphs: fall back to a projection
            pass
    pos = np.asarray(mol.GetConformer().GetPositions())[kept] if mol.GetNumConformers() else np.zeros((len(kept), 3))
    pos = pos - pos.mean(0)
    _, _, vt = np.linalg.svd(pos, full_matrices=False) if len(pos) > 1 else (None, None, np.eye(3))
    return pos @ vt[:2].T


def molecule_drawing(mol: Any) -> dict[str, list[int]]:
    """What the page draws of one RDKit molecule with a 3D conformer (:func:`~molediff.metrics.molecule_table.shown_molecule`),
    compact: ``e`` element indices into :data:`molediff.elements.ELEMENTS`, ``x`` 3D coordinates (centred,
    hundredths of Å, flat), ``b`` bonds as flat ``(i, j, order)`` triples (4: aromatic), ``q`` flat ``(atom,
    formal charge)`` pairs of the charged atoms, ``k`` the atoms of the 2D depiction (when not all: hydrogens
    left out are shown as counts) and ``d`` their 2D coordinates (hundredths, flat)."""
    from molediff.elements import SYMBOL_TO_INDEX

    atoms = list(mol.GetAtoms())
    pos = np.asarray(mol.GetConformer().GetPositions()) if mol.GetNumConformers() else np.zeros((len(atoms), 3))
    pos = pos - pos.mean(0) if len(pos) else pos
    out: dict[str, list[int]] = {
        "e": [SYMBOL_TO_INDEX[a.GetSymbol()] for a in atoms],
        "x": np.rint(pos * 100).astype(np.int64).ravel().tolist(),
        "b": [v for b in mol.GetBonds() for v in (b.GetBeginAtomIdx(), b.GetEndAtomIdx(), _BOND_CODES.get(b.GetBondType().name, 1))],
    }
    charged = [(a.GetIdx(), a.GetFormalCharge()) for a in atoms if a.GetFormalCharge()]
    if charged:
        out["q"] = [v for pair in charged for v in pair]
    hidden = set(_hidden_hydrogens(mol))
    kept = [i for i in range(len(atoms)) if i not in hidden] or list(range(len(atoms)))
    if len(kept) < len(atoms):
        out["k"] = kept
    xy = _layout_2d(mol, kept) if kept else np.zeros((0, 2))
    out["d"] = np.rint(xy * 100).astype(np.int64).ravel().tolist()
    return out


def _column_values(table: Any, key: str) -> list[Any]:
    """A table column as JSON values: booleans 1 / 0, floats rounded, missing values ``None``."""
    import pandas as pd

    kind = _kind(table, key)
    digits = _DIGITS.get(key)
    out: list[Any] = []
    for v in table[key].tolist():
        if pd.isna(v):
            out.append(None)
        elif kind == "bool":
            out.append(int(bool(v)))
        elif kind == "number":
            out.append(round(float(v), digits) if digits is not None else int(v))
        else:
            out.append(str(v))
    return out


def _kind(table: Any, key: str) -> str:
    import pandas as pd

    dtype = table[key].dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    return "text"


def page_data(table: Any, drawings: Sequence[dict], title: str, bonds: str, sections: Iterable[tuple[str, str]] = (),
              images: Iterable[tuple[str, str | os.PathLike]] = (), notes: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON the page reads: the ``table`` columnar (with each column's label, kind and meaning from
    :data:`~molediff.metrics.molecule_table.COLUMNS`), the ``drawings`` (:func:`molecule_drawing`, one per
    row), the text ``sections`` (title, the text the terminal printed), ``images`` (title, PNG file:
    embedded) and ``notes``."""
    from molediff._version import __version__
    from molediff.elements import ELEMENTS
    from molediff.metrics.molecule_table import COLUMNS

    if len(drawings) != len(table):
        raise ValueError(f"{len(drawings)} drawings for {len(table)} table rows")
    columns = [{"key": k, "label": COLUMNS.get(k, (k, ""))[0], "help": COLUMNS.get(k, (k, ""))[1], "kind": _kind(table, k)}
               for k in table.columns]
    embedded = [{"title": t, "src": "data:image/png;base64," + base64.b64encode(Path(p).read_bytes()).decode("ascii")}
                for t, p in images if Path(p).is_file()]
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
    return {
        "title": title,
        "generated": f"molediff {__version__}, {stamp}",
        "bonds": bonds,
        "bonds_label": BOND_LABELS.get(bonds, bonds),
        "n": len(table),
        "columns": columns,
        "values": {c["key"]: _column_values(table, c["key"]) for c in columns},
        "elements": list(ELEMENTS),
        "mols": list(drawings),
        "sections": [{"title": t, "text": text} for t, text in sections if text],
        "images": embedded,
        "notes": list(notes),
    }


def render_page(data: dict[str, Any]) -> str:
    """The page's HTML: the template with the style, the scripts and ``data`` inlined."""
    blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # inside <script>: no "</" may close it early; U+2028/9 are fine in JSON, kept escaped for old parsers
    blob = blob.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    fills = {
        "TITLE": html.escape(data["title"]),
        "STYLE": _asset(ASSETS["style"]),
        "SCRIPT": "\n".join(_asset(name) for name in ASSETS["scripts"]),
        "DATA": blob,
    }
    return re.sub(r"\{\{(TITLE|STYLE|SCRIPT|DATA)\}\}", lambda m: fills[m.group(1)], _asset(ASSETS["template"]))


def write_html_report(path: str | os.PathLike, table: Any, molecules: Any, bonds: str, title: str,
                      sections: Iterable[tuple[str, str]] = (), images: Iterable[tuple[str, str | os.PathLike]] = (),
                      notes: Iterable[str] = (), progress: bool = False) -> Path:
    """Write the report page of ``molecules`` (a :class:`~molediff.data.molecules.MoleculeSet`) and their
    ``table`` (:func:`~molediff.metrics.molecule_table.molecule_table` with the same ``bonds``) to ``path``
    (atomically); see :func:`page_data` for the rest. Returns the path."""
    from tqdm import tqdm

    from molediff.metrics.molecule_table import shown_molecule

    drawings = [molecule_drawing(shown_molecule(molecules, i, bonds))
                for i in tqdm(range(len(table)), desc="report: drawing", disable=not progress, unit="mol", mininterval=1.0)]
    path = Path(path)
    atomic_write(path, render_page(page_data(table, drawings, title, bonds, sections, images, notes)))
    return path
