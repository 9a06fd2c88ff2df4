"""How the drug-like metrics read: text tables in the style of ``molediff evaluate``
(:func:`format_druglike_table` of an :func:`~molediff.metrics.druglike.evaluate_druglike` result,
:func:`format_strain_table`) and the property histograms (:func:`plot_property_histograms`, PNG)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from molediff.atomic import atomic_write_binary
from molediff.metrics.properties import DRUGLIKE_PROPERTY_NAMES, PROPERTY_LABELS
from molediff.metrics.rings import format_ring_table

__all__ = ["format_druglike_table", "format_strain_table", "plot_property_histograms"]


# ----------------------------------------------------------------------------- tables


def _fmt(value: Any, fmt: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, fmt)


def _table(head: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    widths = [max(len(head[c]), *(len(r[c]) for r in rows)) if rows else len(head[c]) for c in range(len(head))]
    line = lambda r: "  ".join(f"{r[0]:<{widths[0]}}" if c == 0 else f"{r[c]:>{widths[c]}}" for c in range(len(head)))  # noqa: E731
    return [line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


_MOSES_ROWS: tuple[tuple[str, str, str], ...] = (
    ("validity", "validity", "fraction"),
    ("unique@1k", "unique@1k", "fraction"),
    ("unique@10k", "unique@10k", "fraction"),
    ("novelty", "novelty", "fraction"),
    ("fcd", "FCD/{ref}", "lower is better"),
    ("snn", "SNN/{ref}", "Tanimoto"),
    ("frag", "Frag/{ref}", "cosine"),
    ("scaf", "Scaf/{ref}", "cosine"),
    ("int_div", "IntDiv", "1 - Tanimoto"),
    ("int_div2", "IntDiv2", "1 - Tanimoto"),
    ("filters", "Filters", "fraction"),
)


def _moses_lines(moses: Mapping[str, Any], ref: str) -> list[str]:
    ref_label = ref.replace("_", " ").title().replace(" ", "") if ref else "Ref"
    lines = [f"MOSES metrics: {moses['num_molecules']} molecules, {moses.get('num_valid', 0)} valid, "
             f"{moses.get('num_unique', 0)} distinct, reference {ref}"]
    rows = [(label.format(ref=ref_label), _fmt(moses.get(key)), unit) for key, label, unit in _MOSES_ROWS if key in moses]
    return lines + _table(("metric", "value", ""), rows)


def _property_lines(props: Mapping[str, Any], ref: str) -> list[str]:
    rows = [(PROPERTY_LABELS.get(k, k), f"{_fmt(p['mean'], '.3f')} ± {_fmt(p['std'], '.3f')}",
             f"{_fmt(p['reference_mean'], '.3f')} ± {_fmt(p['reference_std'], '.3f')}", _fmt(p["w1"], ".4f"))
            for k, p in props.items()]
    return ["", f"drug-likeness vs {ref} (valid molecules):"] + _table(("property", "generated", ref, "W1"), rows)


def _posebusters_lines(pb: Mapping[str, Any]) -> list[str]:
    of_present = pb.get("all_pass_of_present")
    head = (f"PoseBusters ({pb['config']}), {pb['num_molecules']} molecules: all checks pass {_fmt(100 * pb['all_pass'], '.1f')}%"
            + (f" of all, {_fmt(100 * of_present, '.1f')}% of the {pb['num_molecules'] - pb['num_missing']} that sanitize"
               if pb["num_missing"] and of_present is not None else ""))
    return ["", head] + _table(("check", "pass %"), [(k, _fmt(100 * v, ".1f")) for k, v in pb["checks"].items()])


def _apart(result: Mapping[str, Any], totals: tuple[str, str]) -> str:
    """The molecules set apart (``num_*`` counters other than ``totals``), as ``"reason count, ..."``."""
    return ", ".join(f"{k[4:].replace('_', ' ')} {v}" for k, v in result.items() if k.startswith("num_") and k not in totals and v)


def _relaxation_lines(rx: Mapping[str, Any]) -> list[str]:
    apart = _apart(rx, ("num_molecules", "num_relaxed"))
    head = f"{rx['variant']} relaxation: {rx['num_relaxed']} of {rx['num_molecules']} relaxed" + (f" (apart: {apart})" if apart else "")
    rows = [
        ("energy drop (kcal/mol)", _fmt(rx["energy_drop_median_kcal_mol"], ".2f"), _fmt(rx["energy_drop_mean_kcal_mol"], ".2f")),
        ("heavy-atom RMSD (Å)", _fmt(rx["heavy_atom_rmsd_median_angstrom"], ".3f"), _fmt(rx["heavy_atom_rmsd_mean_angstrom"], ".3f")),
        ("bond length change (Å)", "-", _fmt(rx["bond_length_change_angstrom"], ".4f")),
        ("bond angle change (°)", "-", _fmt(rx["bond_angle_change_degree"], ".3f")),
        ("torsion change (°)", "-", _fmt(rx["torsion_change_degree"], ".3f")),
    ]
    return ["", head] + _table(("relaxation", "median", "mean"), rows)


def format_druglike_table(result: Mapping[str, Any]) -> str:
    """Text tables of an :func:`~molediff.metrics.druglike.evaluate_druglike` result (or a bare
    :func:`~molediff.metrics.moses.moses_metrics` result), in the style of ``molediff evaluate``: MOSES
    metrics, drug-likeness distributions, 3D quality, ring systems, strain, notes."""
    full = "moses" in result
    moses = result["moses"] if full else result
    ref = str(moses.get("reference", "reference"))
    lines = _moses_lines(moses, ref)
    parts: Mapping[str, Any] = result if full else {}  # a bare MOSES result has no other part
    if parts.get("properties"):
        lines += _property_lines(parts["properties"], ref)
    if parts.get("posebusters"):
        lines += _posebusters_lines(parts["posebusters"])
    if parts.get("relaxation"):
        lines += _relaxation_lines(parts["relaxation"])
    if parts.get("rings"):
        lines += [""] + format_ring_table(parts["rings"], parts.get("rings_reference"), "reference")
    if parts.get("strain"):
        lines += [""] + format_strain_table(parts["strain"])
    notes = result.get("notes", {})
    if notes:
        lines.append("")
        lines += [f"note: {k}: {v}" for k, v in notes.items()]
    return "\n".join(lines)


def format_strain_table(st: Mapping[str, Any]) -> list[str]:
    """Text lines of a :func:`molediff.metrics.relaxation.strain_against_etkdg` result."""
    apart = _apart(st, ("num_molecules", "num_paired"))
    lines = [f"strain against RDKit's ETKDGv3 ({st['variant']} relaxation drop, kcal/mol, {st['num_paired']} of "
             f"{st['num_molecules']} molecules paired" + (f"; apart: {apart}" if apart else "") + "):"]
    rows = [("as written", _fmt(st["model_drop_median_kcal_mol"], ".1f"), _fmt(st["model_drop_mean_kcal_mol"], ".1f")),
            ("ETKDGv3 conformer of the same graph", _fmt(st["etkdg_drop_median_kcal_mol"], ".1f"), _fmt(st["etkdg_drop_mean_kcal_mol"], ".1f"))]
    lines += _table(("geometry", "median", "mean"), rows)
    if st.get("share_below_etkdg") is not None:
        lines.append(f"less strained than ETKDGv3: {100 * st['share_below_etkdg']:.1f}% of the paired molecules")
    terms = st.get("model_term_drop_median_kcal_mol")
    if terms:
        other = st["etkdg_term_drop_median_kcal_mol"]
        lines += _table(("MMFF term (median drop)", "as written", "ETKDGv3"),
                        [(t, _fmt(terms[t], ".1f"), _fmt(other[t], ".1f")) for t in terms])
    return lines


# ----------------------------------------------------------------------------- plots


def plot_property_histograms(
    gen: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray] | None,
    folder: str | os.PathLike,
    label: str = "generated",
    reference_label: str = "reference",
) -> list[Path]:
    """One PNG per property (``<name>.png``: density histograms of generated vs reference, integer
    properties on unit bins) and ``druglike_distributions.png`` with all of them, into ``folder``;
    returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [n for n in DRUGLIKE_PROPERTY_NAMES if n in gen]
    written: list[Path] = []
    grid, axes = plt.subplots(2, 4, figsize=(18, 8))
    axes = axes.ravel()
    for k, name in enumerate(names):
        a = np.asarray(gen[name], dtype=np.float64)
        a = a[np.isfinite(a)]
        b = None
        if reference is not None and name in reference:
            b = np.asarray(reference[name], dtype=np.float64)
            b = b[np.isfinite(b)]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for target in (ax, axes[k]):
            _draw_histogram(target, a, b, name, label, reference_label)
        fig.tight_layout()
        path = folder / f"{name}.png"
        atomic_write_binary(path, lambda f, fig=fig: fig.savefig(f, dpi=90, format="png"))
        plt.close(fig)
        written.append(path)
    for ax in axes[len(names) :]:
        ax.axis("off")
    grid.tight_layout()
    path = folder / "druglike_distributions.png"
    atomic_write_binary(path, lambda f: grid.savefig(f, dpi=80, format="png"))
    plt.close(grid)
    written.append(path)
    return written


def _draw_histogram(ax: Any, a: np.ndarray, b: np.ndarray | None, name: str, label: str, reference_label: str) -> None:
    data = [d for d in (a, b) if d is not None and d.size]
    title = PROPERTY_LABELS.get(name, name)
    if not data:
        ax.set_title(title + " (none)")
        return
    lo = min(float(d.min()) for d in data)
    hi = max(float(d.max()) for d in data)
    if name.startswith("num_"):
        bins = np.arange(math.floor(lo), math.ceil(hi) + 2) - 0.5
    else:
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 60)
    if a.size:
        ax.hist(a, bins=bins, density=True, alpha=0.6, label=f"{label} (mean {a.mean():.2f})")
    if b is not None and b.size:
        ax.hist(b, bins=bins, density=True, histtype="step", linewidth=1.5, label=f"{reference_label} (mean {b.mean():.2f})")
    ax.set_title(title)
    ax.legend(fontsize=8)
