"""``molediff evaluate PATH ...``: score molecules in SDF/XYZ files with the literature's metrics.

Every record of a supported element (:data:`molediff.elements.ELEMENTS`) is scored. Novelty and the
distribution checks come from a reference set the user names (``--reference``): the QM9 training
split (``qm9``; the default when every molecule has only QM9's elements H C N O F), molecules read
from an SDF/XYZ file or folder, or ``none`` (the default for any other molecules; the table says so).

Prints a table (metric, value in %, and the published QM9-data row for lookup bonds and QM9-element
molecules), optionally writes the metrics as JSON (``--json``) and a report folder (``--report``:
``index.html``, one self-contained page with the printed tables, the distribution plots and a gallery of
the molecules in 2D and 3D, filterable and sortable; ``molecules.csv``, every per-molecule score; and
``distributions.png``, the bond-length / angle / atom-type / ring / property distributions against the
reference). :func:`write_report` writes it, for ``molediff sample --report`` too.

This module is the wiring: :mod:`molediff.data.files` reads, :mod:`molediff.data.reference` makes the
reference (one :class:`molediff.metrics.reference.Reference`: QM9's, a file's, the MOSES test set's),
:mod:`molediff.metrics` scores with it (passed in).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from molediff.atomic import atomic_write, atomic_write_binary, output_folder
from molediff.chem.bonds import BOND_MODES
from molediff.errors import UserError

#: Rows of the model-bond table: (result key, label).
MODEL_ROWS: tuple[tuple[str, str], ...] = (
    ("model_atom_stability", "atom stability"),
    ("model_molecule_stability", "molecule stability"),
    ("model_connected_validity", "connected validity"),
    ("model_uniqueness", "uniqueness (among valid)"),
    ("model_valid_x_unique", "valid x unique"),
    ("model_novelty", "novelty (among valid unique)"),
    ("model_valid_unique_novel", "valid x unique x novel"),
)
#: The published convention's weakness, said when a file that carries its own bonds is scored by lookup.
LOOKUP_NOTE = ("note: these records carry their own bonds, which lookup scoring ignores: the distance table "
               "misjudges some ordinary molecules (e.g. ETKDG-embedded benzene scores invalid, an amide C-O can "
               "read as single). It is the default for comparability with papers; --bonds model scores the "
               "written bonds and charges (--bonds rdkit re-perceives them).")

#: Rows of the printed table: (result key, label).
TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("atom_stability", "atom stability"),
    ("molecule_stability", "molecule stability"),
    ("validity", "validity"),
    ("strict_validity", "strict validity"),
    ("uniqueness", "uniqueness (among valid)"),
    ("valid_x_unique", "valid x unique"),
    ("novelty", "novelty (among valid unique)"),
    ("valid_unique_novel", "valid x unique x novel"),
    ("connected", "connected (one fragment)"),
)


#: What ``--report DIR`` writes (``molediff evaluate`` and ``molediff sample``).
REPORT_HELP = ("write a report into folder DIR: DIR/index.html, one page that works offline (open it in a browser, e.g. "
               "xdg-open DIR/index.html or file:///path/to/DIR/index.html) with the printed tables, the distribution plots "
               "beside the reference's and a gallery of every molecule: 2D depictions with their flags and scores (valid, "
               "stable, connected, novel, QED, SA, logP, MW; PoseBusters and MMFF94 relaxation drop with the drug-like "
               "checks), sortable, filterable (e.g. 'qed > 0.7 and not valid'), paged, and a rotatable 3D view with the "
               "bonds as scored; DIR/molecules.csv, every per-molecule score and the SMILES; DIR/distributions.png")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="SDF (.sdf/.sd/.mol) or XYZ file(s), or folders of them")
    parser.add_argument(
        "--bonds",
        choices=BOND_MODES,
        default="lookup",
        help="bonds for validity/uniqueness/novelty: 'lookup' (distance table, the published convention; "
        "default) or 'rdkit' (rdDetermineBonds), both perceived from the geometry, with stability from lookup "
        "bonds; or 'model': the bonds and formal charges written in the file (a model's own; aromatic input "
        "kekulized; XYZ input perceived by RDKit), scored by the honest rule (Kekulé valence sums with formal "
        "charges, no implicit H, one fragment), printed beside the lookup view of the same geometries",
    )
    parser.add_argument("--json", metavar="FILE", help="write all metrics to this JSON file")
    parser.add_argument("--report", metavar="DIR", help=REPORT_HELP)
    parser.add_argument(
        "--reference",
        metavar="qm9|FILE|FOLDER|none",
        help="the reference set for novelty and the distribution checks: 'qm9' (the QM9 training split), an "
        "SDF/XYZ file or folder of molecules (novelty against their SMILES, distributions against them), or "
        "'none'. Default: qm9 when every molecule has only QM9's elements (H C N O F), otherwise none "
        "(a file named qm9 or none: write ./qm9)",
    )
    parser.add_argument("--no-novelty", action="store_true", help="skip novelty (no reference SMILES needed)")
    parser.add_argument(
        "--no-reference", action="store_true", help="same as --reference none: skip novelty and all distribution "
        "comparisons (works without the QM9 data)"
    )
    parser.add_argument("--druglike", action="store_true",
                        help="also the drug-discovery tables: the MOSES suite against the MOSES test set (FCD, SNN, Frag, "
                             "Scaf, IntDiv, Filters; its reference is built once, about 7 minutes), QED / SA / logP / MW "
                             "against it, PoseBusters' fast checks (if installed) and the MMFF94 relaxation test on the "
                             "molecules that sanitize; novelty against --reference when given; plots with --report")
    parser.add_argument("--limit", type=_positive_int, metavar="N", help="evaluate only the first N molecules")
    parser.add_argument("--max-atoms", type=_positive_int, metavar="N", help="skip molecules with more than N atoms")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100.0 * value:.2f}"


def _num(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, fmt)


def format_table(result: dict[str, Any]) -> str:
    """The metrics table as text: metric, value (%) and the published QM9-data row (lookup bonds and
    molecules of QM9's elements only), the reference line and the distribution checks."""
    from molediff.metrics import PUBLISHED_QM9_DATA_PERCENT

    qm9_like = result.get("qm9_elements_only", True)
    published = PUBLISHED_QM9_DATA_PERCENT if result.get("bonds") == "lookup" and qm9_like else {}
    head = ("metric", "value %", "QM9 data % (EDM)")
    rows = [(label, _pct(result.get(key)), f"{published[key]:.1f}" if key in published else "-") for key, label in TABLE_ROWS]
    w0 = max(len(head[0]), *(len(r[0]) for r in rows))
    w1 = max(len(head[1]), *(len(r[1]) for r in rows))
    lines = [f"{head[0]:<{w0}}  {head[1]:>{w1}}  {head[2]}", f"{'-' * w0}  {'-' * w1}  {'-' * len(head[2])}"]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {c:>{len(head[2])}}" for a, b, c in rows]
    ref_note = result.get("reference_note")
    if ref_note:
        lines.append(ref_note)
    dist = result.get("distributions")
    if dist:
        label = dist.get("reference_label", "reference")
        lines.append("")
        lines.append(f"distributions vs {dist['reference']}:")
        lines.append(f"  atom types      TV {_num(dist['atom_type_tv'], '.4f')}   molecule sizes TV {_num(dist['num_atoms_tv'], '.4f')}")
        bl, ba = dist["bond_length_w1_angstrom"], dist["bond_angle_w1_degree"]
        top = [k for k in bl if k not in ("mean", "unmatched")][:5]
        detail = "  (" + ", ".join(f"{k} {bl[k]:.4f}" for k in top) + ")" if top else ""
        lines.append(f"  bond lengths    W1 mean {_num(bl['mean'], '.4f')} Å{detail}")
        top = [k for k in ba if k not in ("mean", "unmatched")][:4]
        detail = "  (" + ", ".join(f"{k} {ba[k]:.2f}" for k in top) + ")" if top else ""
        lines.append(f"  bond angles     W1 mean {_num(ba['mean'], '.2f')}°{detail}")
        if bl["unmatched"]:
            lines.append(f"  bond types absent from {label}: " + ", ".join(f"{k} ({n})" for k, n in bl["unmatched"].items()))
        lines.append(f"  ring sizes      TV {_num(dist['ring_size_tv'], '.4f')}")
        for name, p in dist["properties"].items():
            lines.append(
                f"  {name:<14s}  {_num(p['mean'], '.3f')} ± {_num(p['std'], '.3f')}   "
                f"({label} {_num(p['reference_mean'], '.3f')} ± {_num(p['reference_std'], '.3f')})"
            )
    return "\n".join(lines)


def format_model_table(model: dict[str, Any], lookup: dict[str, Any]) -> str:
    """The two views side by side: the written bonds (honest rule) and the geometry under lookup bonds."""
    lookup_of = {"model_atom_stability": "atom_stability", "model_molecule_stability": "molecule_stability",
                 "model_connected_validity": "validity", "model_uniqueness": "uniqueness",
                 "model_valid_x_unique": "valid_x_unique", "model_novelty": "novelty",
                 "model_valid_unique_novel": "valid_unique_novel"}
    head = ("metric", "model bonds %", "lookup (geometry) %")
    rows = [(label, _pct(model.get(key)), _pct(lookup.get(lookup_of[key]))) for key, label in MODEL_ROWS]
    w0 = max(len(head[0]), *(len(r[0]) for r in rows))
    lines = [f"{head[0]:<{w0}}  {head[1]:>13}  {head[2]:>19}", f"{'-' * w0}  {'-' * 13}  {'-' * 19}"]
    lines += [f"{a:<{w0}}  {b:>13}  {c:>19}" for a, b, c in rows]
    lines.append("model bonds: Kekulé valence sums with formal charges, no implicit H; valid = sanitizes as written and "
                 "one fragment (stricter than peers' evaluators, which count aromatic bonds as single and accept "
                 "three-valent C). lookup: EDM's distance rule on the same geometries (validity there: largest fragment).")
    if model.get("num_without_bonds"):
        lines.append(f"{model['num_without_bonds']} molecule(s) had no usable bonds (unkekulizable aromatic system or "
                     "failed perception): counted unstable and invalid")
    if model.get("model_bond_type_tv") is not None:
        frac, ref = model["model_bond_type_fraction"], model["model_bond_type_fraction_reference"]
        # the double and triple bonds first: where a shifted chemistry shows
        shown = sorted((k for k in frac if "=" in k or "#" in k), key=lambda k: -max(frac[k], ref[k]))[:4]
        lines.append(f"bond types written against {model.get('bond_types_reference', 'the reference')}'s: total variation "
                     f"{model['model_bond_type_tv']:.3f}; share of bonds "
                     + ", ".join(f"{k} {100 * frac[k]:.1f}% ({100 * ref[k]:.1f}%)" for k in shown))
    return "\n".join(lines)


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    if path.is_dir():
        raise UserError(f"--json {path}: is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(_finite(payload), indent=2, default=_json_default, allow_nan=False) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_report(directory: str | os.PathLike, molecules: Any, result: dict[str, Any], details: Any, bonds: str, *,
                 model_scores: Any = None, novelty: Any = None, three_d: bool = False, title: str = "molediff report",
                 sections: Sequence[tuple[str, str]] = (), images: Sequence[tuple[str, str | os.PathLike]] = (),
                 notes: Sequence[str] = (), progress: bool = False) -> list[Path]:
    """Write the report of ``molecules`` (scored by :func:`~molediff.metrics.evaluate_molecules_detailed`:
    ``result``, ``details``) into ``directory``; returns the paths written:

    * ``index.html``: one self-contained page (:func:`~molediff.metrics.html_report.write_html_report`): the
      molecule gallery (2D and 3D, every per-molecule score, filterable and sortable), the text ``sections``
      (title, what the terminal printed), ``distributions.png`` and ``images`` (title, PNG file), ``notes``;
    * ``molecules.csv``: :func:`~molediff.metrics.molecule_table.molecule_table` of the molecules with
      ``bonds`` (``"model"``: the written bonds, ``model_scores`` when computed; else the perception of
      ``details``), ``novelty`` (the reference SMILES, or a model's training hashes) and the 3D checks with
      ``three_d``;
    * ``distributions.png``: the samples' distributions (lookup bonds for ``"model"``), beside the
      reference's when there is one. A panel with nothing to show says so in its title (e.g. "(none)", or
      "(not computed)" for properties the details lack: :func:`~molediff.metrics.evaluate_molecules_detailed`
      computes them with a reference or ``properties=True``)."""
    from molediff.metrics.html_report import write_html_report
    from molediff.metrics.molecule_table import molecule_table

    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report folder {directory}: {exc.strerror or exc}") from None
    geometry = "lookup" if bonds == "model" else bonds
    plots = _plot_distributions(directory / "distributions.png", result, details, geometry)
    table = molecule_table(molecules, bonds=bonds, details=details, model_scores=model_scores, novelty=novelty,
                           three_d=three_d, progress=progress)
    csv = atomic_write(directory / "molecules.csv", table.to_csv(index=False))
    page = write_html_report(directory / "index.html", table, molecules, bonds, title, sections,
                             [(f"distributions ({geometry} bonds)", plots), *images], notes, progress=progress)
    return [page, csv, plots]


def _plot_distributions(path: Path, result: dict[str, Any], details: Any, bonds: str) -> Path:
    """``path``: the distribution panels of :func:`write_report` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from molediff.elements import ELEMENTS

    ref = details.reference
    ref_label = (ref or {}).get("label", "reference")
    ref_label = "QM9 train" if ref_label == "QM9" else ref_label
    fig, axes = plt.subplots(3, 4, figsize=(18, 12))
    axes = axes.ravel()
    # atom types
    counts = np.bincount(details.atom_type, minlength=len(ELEMENTS)).astype(float)
    x = np.arange(len(ELEMENTS))
    axes[0].bar(x - 0.2, counts / max(1.0, counts.sum()), 0.4, label="samples")
    if ref is not None:
        rc = ref["atom_type_counts"].astype(float)
        axes[0].bar(x + 0.2, rc / rc.sum(), 0.4, label=ref_label)
    axes[0].set_xticks(x, ELEMENTS)
    axes[0].set_title("atom types")
    axes[0].legend()
    # molecule sizes
    sizes = np.diff(details.ptr)
    axes[1].hist(sizes, bins=np.arange(sizes.max() + 2) - 0.5, density=True, alpha=0.6, label="samples")
    if ref is not None:
        h = ref["num_atoms_hist"].astype(float)
        axes[1].step(np.arange(len(h)), h / h.sum(), where="mid", label=ref_label)
    axes[1].set_title("atoms per molecule")
    axes[1].legend()
    # bond lengths: four most common types
    top_bonds = sorted(details.bond_lengths, key=lambda k: -len(details.bond_lengths[k]))[:4]
    for ax, name in zip(axes[2:6], top_bonds):
        _hist_pair(ax, details.bond_lengths[name], ref["bond_lengths"].get(name) if ref else None, f"bond length {name} (Å)", ref_label)
    for ax in axes[2 + len(top_bonds):6]:
        ax.set_title("bond lengths (none)" if not top_bonds else f"bond lengths (none more: {len(top_bonds)} bond types)")
    top_angles = sorted(details.bond_angles, key=lambda k: -len(details.bond_angles[k]))[:2]
    for ax, name in zip(axes[6:8], top_angles):
        _hist_pair(ax, details.bond_angles[name], ref["bond_angles"].get(name) if ref else None, f"angle {name} (°)", ref_label)
    for ax in axes[6 + len(top_angles):8]:
        ax.set_title("bond angles (none)" if not top_angles else "bond angles (none more: 1 angle type)")
    # ring sizes
    n_valid = max(1, int(np.sum(details.valid)))
    ring = {s: c / n_valid for s, c in details.ring_sizes.items()}
    ref_ring = ref["ring_sizes"] if ref is not None else {}
    sizes_all = sorted(set(ring) | set(ref_ring)) or [3]
    xs = np.arange(len(sizes_all))
    axes[8].bar(xs - 0.2, [ring.get(s, 0.0) for s in sizes_all], 0.4, label="samples")
    if ref is not None:
        axes[8].bar(xs + 0.2, [ref_ring.get(s, 0.0) for s in sizes_all], 0.4, label=ref_label)
    axes[8].set_xticks(xs, [str(s) for s in sizes_all])
    axes[8].set_title("rings per valid molecule, by size" + ("" if ring or ref_ring else " (none)"))
    axes[8].legend()
    for ax, name in zip(axes[9:12], ("qed", "logp", "mol_wt")):
        if name not in details.properties and ref is None:
            ax.set_title(f"{name} (not computed)")
            continue
        values = details.properties.get(name, np.zeros(0))
        reference = ref["properties"].get(name) if ref else None
        if not len(values) and (reference is None or not len(reference)):
            ax.set_title(f"{name} (none: no valid molecules)")
            continue
        _hist_pair(ax, values, reference, name + ("" if len(values) else " (no valid samples)"), ref_label)
    fig.suptitle(f"{result['num_molecules']} molecules, {bonds} bonds")
    fig.tight_layout()
    atomic_write_binary(path, lambda f: fig.savefig(f, dpi=80, format="png"))
    plt.close(fig)
    return path


def _hist_pair(ax: Any, samples: Any, reference: Any, title: str, ref_label: str = "reference") -> None:
    import numpy as np

    samples = np.asarray(samples, dtype=float)
    data = [samples] + ([np.asarray(reference, dtype=float)] if reference is not None and len(reference) else [])
    data = [d for d in data if d.size]
    if not data:
        ax.set_title(title + " (none)")
        return
    lo = min(float(d.min()) for d in data)
    hi = max(float(d.max()) for d in data)
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 60)
    if samples.size:
        ax.hist(samples, bins=bins, density=True, alpha=0.6, label="samples")
    if reference is not None and len(reference):
        ax.hist(np.asarray(reference, dtype=float), bins=bins, density=True, histtype="step", linewidth=1.5, label=ref_label)
    ax.set_title(title)
    ax.legend(fontsize=8)


def _qm9_elements_only(molecules: Any) -> bool:
    """True when every atom's element is one of QM9's (H C N O F)."""
    import numpy as np

    from molediff.elements import QM9_ELEMENTS, SYMBOL_TO_INDEX

    qm9 = np.array([SYMBOL_TO_INDEX[e] for e in QM9_ELEMENTS])
    return bool(np.isin(np.asarray(molecules.atom_type), qm9).all())


def choose_reference(args: argparse.Namespace, molecules: Any, model_mode: bool, qm9_like: bool) -> tuple[Any, str | None]:
    """The :class:`~molediff.metrics.reference.Reference` the user asked for (``None``: none) and the
    note the table prints about it (``None`` when there is nothing to say)."""
    from molediff.data import reference as reference_data

    choice = args.reference
    if args.no_reference:
        if choice is not None and choice.strip().lower() != "none":
            raise UserError(f"--no-reference and --reference {choice}: give one")
        choice = "none"
    if choice is None:
        if qm9_like:
            return reference_data.qm9_reference(), None
        return None, ("reference: none (these molecules have elements outside QM9's H C N O F, so there is no "
                      "default novelty or distribution reference; name one with --reference FILE|FOLDER or --reference qm9)")
    keyword = choice.strip().lower()
    if keyword == "none":
        return None, None
    if keyword == "qm9":
        return reference_data.qm9_reference(), None
    try:
        # the drug-like novelty reads the reference's own bond graphs (model-bond SMILES): read them too
        ref, report = reference_data.file_reference(choice, with_bonds=model_mode or args.druglike)
    except UserError as exc:
        raise UserError(f"--reference: {exc}") from None
    print(f"reference: {report.summary()}", file=sys.stderr)
    return ref, f"reference: {ref.name} ({report.num_read} molecules)"


def _druglike(args: argparse.Namespace, reference: Any, progress: bool) -> dict[str, Any]:
    """The drug-discovery metrics of the SDF records in ``args.paths`` (for the printed tables and --json)."""
    from rdkit import Chem, rdBase

    from molediff.chem.rdkit_mol import canonical_smiles
    from molediff.metrics.druglike import evaluate_druglike
    from molediff.metrics.errors import MetricUnavailable
    from molediff.metrics.moses_data import load_moses_filters
    from molediff.data.files import _expand
    from molediff.data.reference import moses_test_reference

    smiles, mols_3d = [], []
    for path in _expand(args.paths):
        if not str(path).lower().endswith((".sdf", ".sd", ".mol")):
            continue
        with rdBase.BlockLogs():
            for mol in Chem.SDMolSupplier(str(path), removeHs=False):
                if args.limit and len(smiles) >= args.limit:
                    break
                if args.max_atoms and mol is not None and mol.GetNumAtoms() > args.max_atoms:
                    continue  # skipped as in the main tables (counted in the read report)
                smiles.append(canonical_smiles(mol) if mol is not None else None)
                # a record RDKit cannot sanitize stays as None: PoseBusters counts it failing (a share of all)
                mols_3d.append(mol if mol is not None and mol.GetNumConformers() else None)
    # the reference molecules' SMILES in the drug-like metrics' canonical form (heavy atoms; MOSES compares as given)
    train = None
    if reference is not None and reference.kind != "qm9":
        # its own bonds where the files have them (SDF), else bonds perceived from distances (XYZ)
        for mode in ("model", "lookup"):
            train = {c for c in (canonical_smiles(s) for s in reference.smiles(mode, progress=progress)) if c}
            if train:
                break
    try:
        moses = moses_test_reference()
        moses.features(progress)  # loaded, or built once (saying so unless --quiet)
        result = evaluate_druglike(smiles, moses, train=train, filters=load_moses_filters(), mols_3d=mols_3d,
                                   posebusters_config="mol_fast", plots_dir=Path(args.report) / "druglike" if args.report else None)
    except MetricUnavailable as exc:
        raise UserError(f"--druglike: {exc}") from None
    return result


@dataclass
class Scored:
    """The molecules of ``molediff evaluate``'s files and their scores, before the drug-like suite."""

    molecules: Any  # the MoleculeSet read
    read_report: Any  # its FileReadReport
    result: dict[str, Any]  # the metrics (model-bond ones merged in with --bonds model)
    details: Any  # EvaluationDetails of the geometry's bonds
    bonds: str  # the bonds of the view: "model" (written) or the perception of the geometry
    reference: Any  # the Reference, or None
    qm9_like: bool  # every element one of QM9's
    text: str  # the tables the command prints
    model_scores: Any = None  # per-molecule model-bond scores ("model")
    novelty: Any = None  # the novelty reference SMILES of the view (None: no novelty)


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """``molediff evaluate``'s options from a command line (its defaults, for callers such as
    ``molediff sample --report``)."""
    parser = argparse.ArgumentParser(prog="molediff evaluate")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def score(args: argparse.Namespace) -> Scored:
    """Read and score the files ``args`` name (:func:`parse_arguments`): everything ``molediff evaluate``
    prints but the drug-like tables (the read summary goes to stderr)."""
    from molediff.data.files import SDF_SUFFIXES, read_molecule_files
    from molediff.metrics import evaluate_molecules_detailed

    progress = not args.quiet
    model_mode = args.bonds == "model"
    molecules, report = read_molecule_files(args.paths, max_atoms=args.max_atoms, limit=args.limit, bonds=model_mode)
    print(report.summary(), file=sys.stderr)
    qm9_like = _qm9_elements_only(molecules)
    reference, ref_note = choose_reference(args, molecules, model_mode, qm9_like)
    geometry_bonds = "lookup" if model_mode else args.bonds
    stats = reference.statistics(geometry_bonds, progress=progress) if reference is not None else None
    novelty = reference.smiles(geometry_bonds, progress=progress) if reference is not None and not args.no_novelty else None
    # a report plots the samples' QED / logP / MolWt even without a reference to compare them with
    result, details = evaluate_molecules_detailed(molecules, bonds=geometry_bonds, reference=stats, novelty=novelty, progress=progress,
                                                  properties=True if args.report else None)
    result["reference_set"] = reference.to_dict() if reference is not None else None
    result["qm9_elements_only"] = qm9_like
    if ref_note:
        result["reference_note"] = ref_note
    if "distributions" in result:
        result["distributions"]["reference_label"] = reference.label
    if not model_mode:
        lines = [f"molediff evaluate: {result['num_molecules']} molecules, {args.bonds} bonds", format_table(result)]
        if any(str(f).lower().endswith(SDF_SUFFIXES) for f in report.files):
            lines.append(LOOKUP_NOTE)
        return Scored(molecules, report, result, details, args.bonds, reference, qm9_like, "\n".join(lines), novelty=novelty)
    from molediff.metrics import model_bond_metrics, model_bond_scores_of

    model_novelty = reference.smiles("model", progress=progress) if reference is not None and not args.no_novelty else None
    model_scores = model_bond_scores_of(molecules, progress=progress)
    bond_types = reference.bond_types(progress) if reference is not None else None
    model, _ = model_bond_metrics(molecules, novelty=model_novelty, scores=model_scores, bond_types=bond_types)
    if bond_types is not None:
        model["bond_types_reference"] = reference.label
    lines = [f"molediff evaluate: {result['num_molecules']} molecules, model bonds (written) beside lookup bonds (geometry)",
             format_model_table(model, result), "", "geometry, lookup bonds (published convention):",
             format_table({**result, "bonds": "lookup"})]
    result = {**result, **model, "bonds": "model", "geometry_bonds": "lookup"}
    return Scored(molecules, report, result, details, "model", reference, qm9_like, "\n".join(lines), model_scores, model_novelty)


def run(args: argparse.Namespace) -> int:
    from molediff.metrics import PUBLISHED_QM9_DATA_PERCENT

    report_dir = output_folder(args.report, "--report") if args.report else None  # a bad folder is refused before the work
    progress = not args.quiet
    scored = score(args)
    result = scored.result
    print(scored.text)
    sections = [("molecules read", scored.read_report.summary()), ("scores", scored.text)]
    images = []
    if args.druglike:
        from molediff.metrics.report import format_druglike_table

        result["druglike"] = _druglike(args, scored.reference, progress)
        text = format_druglike_table(result["druglike"])
        print()
        print(text)
        sections.append(("drug-like metrics", text))
        images = [("drug-like properties", p) for p in result["druglike"].get("plots", []) if p.endswith("druglike_distributions.png")]
    if args.json:
        payload = {
            "inputs": [str(p) for p in args.paths],
            "read_report": scored.read_report.to_dict(),
            "metrics": result,
            "published_qm9_data_percent": PUBLISHED_QM9_DATA_PERCENT if args.bonds == "lookup" and scored.qm9_like else None,
        }
        _write_json(Path(args.json), payload)
        print(f"wrote {args.json}")
    if report_dir is not None:
        notes = [] if args.druglike else ["PoseBusters and MMFF94 relaxation per molecule: molediff evaluate FILE --druglike "
                                          "(about 0.2 s per drug-sized molecule)"]
        paths = write_report(report_dir, scored.molecules, result, scored.details, scored.bonds, model_scores=scored.model_scores,
                             novelty=scored.novelty, three_d=args.druglike, title="molediff evaluate " + " ".join(map(str, args.paths)),
                             sections=sections, images=images, notes=notes, progress=progress)
        for p in paths:
            print(f"wrote {p}")
    return 0
