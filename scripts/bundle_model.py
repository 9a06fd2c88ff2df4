#!/usr/bin/env python
"""Copy a training run's EMA weights into the package as the bundled model, with its model card.

    python scripts/bundle_model.py RUN_DIR [--quality benchmarks/results/qm9_quality.json] [--model qm9-joint]

Writes the bundled model's weights file (``molediff/pretrained/qm9_ema.pt`` for the default model
"qm9", ``qm9_joint_ema.pt`` for "qm9-joint": EMA weights, config, metadata, SHA-256; verified on load),
its config JSON and its model card (data split, steps, training time and hardware, the learning
curve from the run's log, and the quality figures when given).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from molediff.atomic import atomic_write
from molediff.checkpoint import load_model_file, save_model_file
from molediff.conditioning import BY_NAME
from molediff.config import RESTART_FROM
from molediff.diffusion.sampler_table import FINISH_GRIDS
from molediff.runstate import EMA_MODEL, LOG
from molediff.sampling import BUNDLED_MODELS

PRETRAINED = Path(__file__).resolve().parents[1] / "molediff" / "pretrained"
PERCENT = ("atom_stability", "molecule_stability", "validity", "strict_validity", "valid_x_unique")
#: the model-bond view (honest rule), for models that write bonds
MODEL_PERCENT = ("model_atom_stability", "model_molecule_stability", "model_connected_validity", "model_valid_x_unique")


def training_smiles_hashes(data: str):
    """:func:`molediff.metrics.moses.smiles_hashes` of the canonical SMILES of every molecule in a file
    data set (training and validation molecules alike: novelty against all it could have seen), as an
    int64 tensor [k]."""
    import torch
    from rdkit import Chem, rdBase

    from molediff.chem.rdkit_mol import canonical_smiles
    from molediff.metrics.moses import smiles_hashes

    root = Path(data)
    files = sorted(root.rglob("*.sdf")) if root.is_dir() else [root]
    smiles = []
    with rdBase.BlockLogs():
        for path in files:
            smiles += [canonical_smiles(m) for m in Chem.SDMolSupplier(str(path), removeHs=False) if m is not None]
    return torch.from_numpy(smiles_hashes(smiles))


def finish_text(spacing: str, steps: int, T: int) -> str:
    """How a card names a student's finishing grid: its name and where its steps sit."""
    from molediff.diffusion.schedule import finish_timesteps

    grid = finish_timesteps(T, steps, spacing).tolist()
    k = len(FINISH_GRIDS[spacing])
    return (f" on the '{spacing}' grid ({steps - k} trailing steps, then {k} finishing steps at the last levels of 75 "
            f"trailing steps: t = {', '.join(map(str, grid))} of {T})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--quality", help="qm9_quality.json to include in the card")
    ap.add_argument("--status", default="", help="one line on where this model stands (e.g. 'preview: below the quality floor')")
    ap.add_argument("--model", default="qm9", choices=tuple(BUNDLED_MODELS), help="which bundled model to write (default qm9)")
    ap.add_argument("--history", help="log.jsonl of the run this one started from with --init-from (a run's own weights "
                    "carry no curve): its evaluations before this run's first step open the learning curve")
    ap.add_argument("--conditioning", help="property_conditioning.json to include in the card (conditional models)")
    ap.add_argument("--inpainting", help="inpainting.json (benchmarks/inpainting.py) to include in the card (fragment models)")
    ap.add_argument("--data-text", help="how the card names a file data set (default: its path)")
    ap.add_argument("--druglike", help="druglike_quality.json (benchmarks/druglike_quality.py) to include in the card")
    ap.add_argument("--druglike-conditioning",
                    help="druglike_conditioning.json (benchmarks/druglike_conditioning.py) to include in the card")
    ap.add_argument("--drop-section", action="append", default=[], metavar="TITLE",
                    help="a handwritten section of the model's present card (its '## ' title, or the start of it) not to "
                         "carry over; repeatable (by default every section this script does not write is kept)")
    ap.add_argument("--default-noise-scale", type=float, default=None,
                    help="the noise scale `molediff sample` uses for this model unless told otherwise (chosen from its "
                         "quality table; default: molediff's global default)")
    ap.add_argument("--default-restarts", type=int, default=None,
                    help="rounds of local restarts `molediff sample` runs for this model unless told otherwise "
                         "(molediff.restarts; default: none)")
    ap.add_argument("--default-restart-from", default=None, choices=RESTART_FROM,
                    help="what the model's restarts draw again unless told otherwise (molediff sample --restart-from; "
                         "default: the failing region)")
    ap.add_argument("--restart-rings", action="store_true",
                    help="the model's restarts redraw odd rings of valid molecules too unless told otherwise")
    ap.add_argument("--property-model", default=None, metavar="FILE",
                    help="a property model ('molediff property-model') for this model: the model file carries it, and "
                         "`molediff sample --condition ...` steers with it (molediff.steering) unless told otherwise")
    ap.add_argument("--default-steer", type=float, default=None,
                    help="the steering step `molediff sample` takes with --condition for this model unless told otherwise "
                         "(needs --property-model)")
    ap.add_argument("--teacher", default=None,
                    help="how the card and metadata name a distilled student's teacher (e.g. a bundled model's name; "
                         "default: its file's path)")
    ap.add_argument("--started-from", default=None,
                    help="how the card and metadata name the model file the run started from with --init-from (e.g. a "
                         "bundled model's name and step; default: its path)")
    ap.add_argument("--hardware", default=f"{platform.machine()} CPU, 2 threads", help="what the run trained on")
    args = ap.parse_args()
    if (args.default_steer is not None) != bool(args.property_model):
        ap.error("--property-model and --default-steer go together")
    run = Path(args.run_dir)
    state, config, meta = load_model_file(run / EMA_MODEL)
    steering = None
    if args.property_model:
        from molediff.molecular import MolecularDiffusion
        from molediff.steering import PropertyModel

        steering = PropertyModel.load(args.property_model, MolecularDiffusion(config.diffusion))  # refused for another model's
        meta = {**meta, "property_model": steering.to_dict(), "default_steer": args.default_steer}
    # where the run started is provenance (kept in the card and metadata), not a setting to ship: a
    # user's `molediff train --config molediff/pretrained/config.json` must not chase this machine's path
    started_from, config.init_from = config.init_from, ""
    root = str(PRETRAINED.parents[1]) + "/"
    started_from = started_from.removeprefix(root)  # a path of this checkout, said relative to it
    if args.started_from and started_from:
        started_from = args.started_from
    config.compile = False  # a speed setting of the machine that trained it (needs a C++ compiler), not of the recipe
    # a distilled student: its teacher is provenance too (named as the package knows it, --teacher), and the
    # student samples in its own steps by its metadata (default_steps, default_eta), not by these fields
    teacher = args.teacher or config.distill_from.removeprefix(root)
    if started_from and started_from == config.distill_from.removeprefix(root):
        started_from = ""  # a student starts as a copy of its teacher: said once, as its teacher
    distill_steps, config.distill_from, config.distill_steps = config.distill_steps, "", 0
    method = config.distill_method
    d = config.diffusion
    columns = (MODEL_PERCENT if d.bonds else ()) + PERCENT
    PRETRAINED.mkdir(parents=True, exist_ok=True)
    records = [json.loads(x) for x in (run / LOG).read_text().splitlines() if x.strip()]
    evals = [r for r in records if r["event"] == "eval"]
    if args.history:
        first = min((r["step"] for r in records if "step" in r), default=0)
        earlier = [json.loads(x) for x in Path(args.history).read_text().splitlines() if x.strip()]
        evals = [r for r in earlier if r["event"] == "eval" and r["step"] < first] + evals
    # learning-rate changes made on --resume ("lr" events), as "5e-4 to step N, then 1e-4"
    changes = [r for r in records if r["event"] == "lr"]
    lr_text = f"{changes[0]['from'] if changes else config.lr:g}" + "".join(f" to step {c['step']}, then {c['to']:g}" for c in changes)
    # the curve travels inside the weights file, so a run started from them (--init-from) continues it
    meta = {**meta, "bundled": time.strftime("%Y-%m-%d"), "hardware": args.hardware,
            "learning_curve": [{k: v for k, v in e.items() if k != "event"} for e in evals],
            **({"started_from": started_from} if started_from else {}),
            **({"teacher": teacher} if distill_steps else {}),
            **({"default_noise_scale": args.default_noise_scale} if args.default_noise_scale is not None else {}),
            **({"default_restarts": args.default_restarts} if args.default_restarts is not None else {}),
            **({"restart_rings": True} if args.restart_rings else {}),
            **({"default_restart_from": args.default_restart_from} if args.default_restart_from else {})}
    if config.data.split(":")[0] != "qm9" and Path(config.data).exists():
        # so that `molediff sample` can say which molecules are new without the data (QM9 models: QM9's own split)
        meta["training_smiles_hashes"] = training_smiles_hashes(config.data)
        print(f"the model file carries {len(meta['training_smiles_hashes']):,} training-molecule hashes (novelty)")
    weights = PRETRAINED / BUNDLED_MODELS[args.model]
    prefix = "" if args.model == "qm9" else args.model.replace("-", "_") + "_"
    save_model_file(weights, state, config, meta)
    config.save_json(PRETRAINED / f"{prefix}config.json")
    vocab = d.vocabulary
    hist = meta.get("size_histogram") or []
    sizes = [n for n, c in enumerate(hist) if c]
    if config.data == "qm9":
        data_line = "- Data: QM9 train split (100,000 molecules; `data/qm9_split.npz`, seed 0), elements H C N O F."
    elif config.data.startswith("qm9:"):
        data_line = (f"- Data: QM9 `{config.data}` (half of the train split, 50,000 molecules, `molediff.data.qm9.train_halves`; "
                     "the other half trains the benchmark's property predictor), elements H C N O F.")
    else:
        data_line = (f"- Data: {args.data_text or config.data} ({sum(hist):,} training molecules); vocabulary from the data: "
                     f"elements {' '.join(vocab.elements)}, formal charges {', '.join(f'{c:+d}' for c in vocab.charges)}"
                     + (f"; sizes {sizes[0]}–{sizes[-1]} atoms (mean {sum(n * c for n, c in enumerate(hist)) / max(sum(hist), 1):.1f})"
                        if sizes else "") + ".")
    lines = [
        f"# molediff bundled model `{args.model}` (`molediff sample --model {args.model}`)",
        "",
        *([f"**Status:** {args.status}", ""] if args.status else []),
        data_line,
        *([f"- Heavy-atom model: hydrogens are not atoms of the state; each heavy atom carries a generated count of attached "
           f"hydrogens (0..{vocab.max_hydrogens}, one-hot × {d.hydrogen_scale}, cross-entropy × {d.hydrogen_weight:g}); sampled "
           "molecules get exactly those hydrogens placed (AddHs from the written bonds, then MMFF94 on the hydrogens alone). "
           "Sizes above count heavy atoms."] if vocab.heavy_atom else []),
        *([f"- Conditions: {', '.join(d.conditions)} (each hidden independently with probability {d.condition_dropout:g} "
           "in training, so any subset or none may be given; classifier-free guidance with `--guidance`). Training "
           "range (values outside it are refused): " + "; ".join(
               f"{n} [{d.condition_stats[n][2]:.4g}, {d.condition_stats[n][3]:.4g}] {BY_NAME[n].unit}" for n in d.conditions)
           + "."] if d.conditions else []),
        *(["- Self-conditioning: the network reads its previous estimate of the clean molecule."] if d.self_condition else []),
        *([f"- Fragments: {d.fragments:.0%} of the training molecules had a random connected piece held clean (grown "
           "breadth-first from one or two random atoms, 1 to n − 1 atoms; `molediff.molecular.random_fragments`) and only "
           "the rest scored; the network reads which atoms are fixed. `molediff sample --fragment` grows the given "
           "fragment directly (no RePaint rounds); without a fragment it samples unconditionally."] if d.fragments else []),
        f"- Architecture: EGNN {config.model.layers} layers × {config.model.hidden} hidden"
        + (f", pair state {config.model.pair_hidden} wide" if d.bonds else "")
        + f"; {sum(v.numel() for v in state.values() if v.is_floating_point()):,} weights (EMA {config.ema_decay}).",
        f"- Diffusion: {d.schedule} schedule, T = {d.timesteps}, parametrisation `{d.parametrization}`; parts: positions, "
        f"atom types (one-hot × {d.feature_scale}, {d.atom_loss})"
        + (f", formal charges (one-hot × {d.charge_scale}, cross-entropy × {d.charge_weight:g})" if d.charges else "")
        + (f", bond types per atom pair (one-hot × {d.bond_scale}, cross-entropy × {d.bond_weight:g})" if d.bonds else "") + ".",
        f"- Training: {meta.get('step')} optimiser steps of batch {config.batch_size} per rank ({meta.get('molecules_seen', 0):,} molecules"
        + (f", {meta.get('molecules_seen', 0) / 100_000:.1f} epochs)" if config.data == "qm9" else ", inherited steps included)")
        + f", {meta.get('train_seconds', 0) / 3600:.2f} h of training clock on {args.hardware}; "
        f"AdamW lr {lr_text}; gradient clip {config.grad_clip}, seed {config.seed}.",
        *([f"- Started from `{started_from}` (`molediff {'distill' if distill_steps else 'train'} --init-from`): its weights, step count, clock and "
           "learning curve (rows marked inherited in the log) continue; the optimiser restarted there."] if started_from else []),
        *([f"- A few-step student of `{teacher}` by progressive distillation (`molediff distill`; molediff/distill.py): "
           f"one deterministic DDIM step of it is trained to land where two of the teacher's do, so it samples in "
           f"{distill_steps} steps at η = 0 by default (its file says so); the teacher stays available by name. The "
           "curve's 64-molecule checks sample in the student's steps."] if distill_steps and method == "progressive" else []),
        *([f"- A few-step student of `{teacher}` by distribution matching (`molediff distill --method dmd`; "
           "molediff/distill.py): its own stochastic chain is pushed towards the teacher's distribution by the difference "
           "of the teacher's and an online-trained denoiser's estimates"
           + (f", with DMD's regression of {'its first estimate' if config.distill_regression_first else 'its deterministic chain'} "
              f"on {config.distill_pairs:,} teacher pairs (weight {config.distill_regression:g})" if config.distill_regression else "")
           + (f", and a keep term (weight {config.distill_keep:g}) that regresses its estimates at its finishing steps "
              "on the teacher's" if config.distill_keep else "")
           + f". It samples in {distill_steps} steps at η = 1, noise {meta.get('default_noise_scale', 1.0):g}"
           + (finish_text(meta["default_spacing"], distill_steps, config.diffusion.timesteps)
              if meta.get("default_spacing") in FINISH_GRIDS else "")
           + " by default (its file says so)"
           + (f", then up to {meta['default_restarts']} rounds of restarts that draw every molecule failing the honest rule "
              "again from noise (each costs a new sample of those molecules: the evaluations per molecule are counted in "
              "the quality table"
              + ("; a molecule in pieces where its coarse steps end is drawn again there, for those steps only"
                 if meta.get("default_spacing") in FINISH_GRIDS else "") + ")"
              if meta.get("default_restarts") and meta.get("default_restart_from") == "noise" else "")
           + "; the teacher stays available by name. The curve's 64-molecule checks sample in the student's steps, "
           "without restarts."] if distill_steps and method == "dmd" else []),
        *([f"- Steering (`molediff.steering`): the file carries a property model (a read-out EGNN, "
           f"{sum(v.numel() for v in steering.net.state_dict().values()):,} weights, trained "
           f"{steering.info.get('minutes', 0):.0f} min on the training molecules; validation MAE "
           + ", ".join(f"{k} {v:.3g}" for k, v in steering.info.get("valid_mae", {}).items())
           + f"); with `--condition`, each molecule's late estimates take gradient steps of size {args.default_steer:g} "
           "towards its targets unless `--steer` says otherwise (`--steer 0`: guidance alone)."] if steering else []),
        f"- Full config: `{prefix}config.json` beside this card. Integrity: the weights carry a SHA-256 checked on load.",
        "",
        "## Learning curve (EMA weights; hours = the run's training clock, CPU seconds per thread of the main process, "
        "evaluation excluded: with several ranks each hour is that many core-hours; "
        f"sampling checks: {config.eval_samples} molecules, {distill_steps or config.eval_sample_steps} DDIM steps with the η shown, noise 1; "
        "model_* columns: the model's own bonds by the honest rule, the others: lookup bonds on the geometry)",
        "",
        "| step | hours | val loss | η | " + " | ".join(columns) + " |",
        "|---|---|---|---|" + "---|" * len(columns),
    ]
    for e in evals:
        cells = [f"{100 * e[k]:.1f}" if k in e else "-" for k in columns]
        # evals logged before the record carried η sampled deterministically (η = 0)
        eta = f"{e.get('sample_eta', 0.0):g}" if "atom_stability" in e else "-"
        lines.append(f"| {e['step']} | {e['minutes'] / 60:.2f} | {e['val_loss']:.4f} | {eta} | " + " | ".join(cells) + " |")
    if args.quality:
        q = json.loads(Path(args.quality).read_text())
        lines += ["", f"## Quality (benchmarks/qm9_quality.py, {q['rows'][0]['n']} samples)", "",
                  "Noise scale 1 samples the model's own distribution (the protocol of published figures); "
                  "`molediff sample` defaults to a lower one (see benchmarks/README.md). model_* columns: the bonds and "
                  "charges the model wrote, honest rule (Kekulé valence sums with charges, no implicit H, one fragment); "
                  "the others: lookup bonds re-derived from the geometry (EDM's rule).", "",
                  "| steps | η | noise scale | restarts | seed | evaluations per molecule | " + " | ".join(columns)
                  + " | novelty | atom-type TV | ring-size TV | bond-type TV (written bonds) |",
                  "|---|---|---|---|---|---|" + "---|" * (len(columns) + 4)]
        for r in q["rows"]:
            eta = "ancestral" if r["steps"] == config.diffusion.timesteps else f"{r.get('eta', 0.0):g}"
            tv = " | ".join(f"{r[k]:.3f}" if r.get(k) is not None else "-" for k in ("atom_type_tv", "ring_size_tv", "model_bond_type_tv"))
            restarts = f"{r['restarts']}" + (f" from {r['restart_from']}" if r.get("restart_from") else "") if r.get("restarts") else "0"
            steps = f"{r['steps']}" + (f" ({r['spacing']})" if r.get("spacing") not in (None, "trailing") else "")
            lines.append(f"| {steps} | {eta} | {r.get('noise_scale', 1.0):g} | {restarts} | {r.get('seed', 0)} | "
                         f"{r.get('network_evaluations') or '-'} | "
                         + " | ".join(f"{100 * r[k]:.1f}" if r.get(k) is not None else "-" for k in columns)
                         + f" | {100 * (r.get('novelty') or 0):.1f} | {tv} |")
    if args.conditioning:
        c = json.loads(Path(args.conditioning).read_text())
        lines += ["", f"## Conditioning (benchmarks/property_conditioning.py, EDM protocol, {c['rows'][0]['n']} targets per row, "
                  f"{c['steps']} steps, noise scale {c['noise_scale']:g})", "",
                  "MAE between each target and molediff's property predictor (trained on the other half of the train split) "
                  "on the generated molecule; naive: the same predictions against shuffled targets; predictor: its own MAE "
                  "on the QM9 test split (the judge's error, a lower bound); EDM: Hoogeboom et al. 2022, Table 3. "
                  "Energies in meV.", "",
                  "| property | guidance | MAE | naive | predictor | EDM | model mol stab | model connected valid |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in c["rows"]:
            scale = 27211.386 if BY_NAME[r["property"]].unit == "Hartree" else 1.0
            lines.append(f"| {r['property']} | {r['guidance']:g} | {r['mae'] * scale:.3g} | {r['naive'] * scale:.3g} | "
                         f"{r['predictor_test_mae'] * scale:.3g} | {r['edm_mae'] * scale:.3g} | "
                         f"{100 * (r.get('model_molecule_stability') or 0):.1f} | {100 * (r.get('model_connected_validity') or 0):.1f} |")
    if args.inpainting:
        c = json.loads(Path(args.inpainting).read_text())
        lines += ["", f"## Growing fragments (benchmarks/inpainting.py, {c['rows'][0]['steps']} steps, noise scale "
                  f"{c['meta'].get('noise_scale', 'sampler default')})", "",
                  "Fragments cut from QM9 test molecules, regrown to the source's size. Kept: fixed atoms within 1e-3 Å; "
                  "lookup: bonds from the geometry; model: the model's own bonds by the honest rule; contains: valid "
                  "outputs holding the fragment's heavy-atom graph.", "",
                  "| fragment (atoms → size) | n | resample | kept | lookup valid | lookup mol stab | model connected valid | "
                  "model mol stab | contains | unique |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in c["rows"]:
            lines.append(f"| {r['fragment']} ({r['fragment_atoms']:g} → {r['size']:g}) | {r['n']} | {r['resample']} | "
                         + " | ".join(f"{100 * r.get(k, 0):.0f}" for k in ("kept_exactly", "lookup_validity",
                                      "lookup_molecule_stability", "model_connected_validity", "model_molecule_stability",
                                      "contains_fragment")) + f" | {r['unique_smiles']} |")
    if args.druglike:
        lines += ["", "## Quality (benchmarks/druglike_quality.py)", "", *druglike_table(json.loads(Path(args.druglike).read_text()))]
    if args.druglike_conditioning:
        lines += ["", "## Property targets (benchmarks/druglike_conditioning.py)", "",
                  *druglike_conditioning_table(json.loads(Path(args.druglike_conditioning).read_text()))]
    card = PRETRAINED / f"{prefix}MODEL_CARD.md"
    kept = handwritten_sections(card.read_text() if card.exists() else "", args.drop_section)
    for title, _ in kept:
        print(f"kept from the present card: '## {title}' (--drop-section to leave it out)")
    atomic_write(card, "\n".join(lines + [line for _, text in kept for line in ["", *text]]) + "\n")
    print(f"bundled {run / EMA_MODEL} -> {weights} ({weights.stat().st_size / 1e6:.2f} MB)")
    load_model_file(weights)  # readable and verified
    return 0


#: the titles of the sections this script writes (a card's other '## ' sections are handwritten)
GENERATED_SECTIONS = ("Learning curve", "Quality (benchmarks/", "Conditioning (benchmarks/", "Growing fragments (benchmarks/",
                      "Property targets (benchmarks/")


def handwritten_sections(card: str, drop: list[str]) -> list[tuple[str, list[str]]]:
    """The '## ' sections of a model card's text that this script does not write (``GENERATED_SECTIONS``),
    in order, as (title, lines without the trailing blank ones), except those whose title starts with
    one of ``drop``: a re-bundled model keeps its card's notes on where it stands and how it was made."""
    sections, current = [], None
    for line in card.splitlines():
        if line.startswith("## "):
            current = (line[3:].strip(), [line])
            sections.append(current)
        elif current is not None:
            current[1].append(line)
    out = []
    for title, text in sections:
        if title.startswith(GENERATED_SECTIONS) or any(title.startswith(d) for d in drop):
            continue
        while text and not text[-1].strip():
            text.pop()
        out.append((title, text))
    return out


def druglike_conditioning_table(c: dict) -> list[str]:
    """Markdown rows of a druglike_conditioning.json: per request, how close the written molecules' properties
    are to the asked value (MAE against the unconditional samples' MAE to the same value, the naive bound) or
    how many lie inside the asked range, or within a value's band (against the unconditional share), with
    their quality figures. "range restarts": whether restarts redrew molecules outside the range or band."""
    head = ("request", "guidance", "steer", "range restarts", "n", "MAE (naive)", "better than naive",
            "inside range / band, valid (naive)", "inside, of all", "mol stab", "conn valid", "odd ring", "no aromatic ring")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for r in c["rows"]:
        value = r["kind"] == "value"
        ranged = r["kind"] in ("range", "three ranges")
        out.append("| " + " | ".join([
            r["request"], "-" if r["guidance"] is None else f"{r['guidance']:g}", f"{r.get('steer', 0.0):g}",
            ("yes" if r.get("restart_ranges") else "no") if r["kind"] != "none" else "-", str(r["n"]),
            f"{r['mae']:.3g} ({r['naive_mae']:.3g})" if value else "-",
            f"{100 * r['reduction']:.0f}%" if value and r.get("reduction") is not None else "-",
            f"{pct(r['in_range'])} ({pct(r['naive_in_range'])})" if ranged
            else f"{pct(r['in_band'])} ({pct(r['naive_in_band'])}) ±{(r['band'][1] - r['band'][0]) / 2:g}" if "in_band" in r else "-",
            pct(r["in_range_of_all"]) if ranged else "-",
            pct(r["stability"]), pct(r["valid"]), pct(r["odd_ring"]), pct(r["without_aromatic_ring"])]) + " |")
    return out


def druglike_table(q: dict) -> list[str]:
    """Markdown rows of a druglike_quality.json: the honest view, the MOSES suite, drug-likeness, 3D."""
    head = ("row", "n", "mol stab", "conn valid", "unique", "novel", "FCD/Test", "SNN", "Frag", "Scaf", "IntDiv", "Filters",
            "QED", "SA", "logP", "MolWt", "PB-valid", "MMFF ΔE median", "S/Cl/Br mols (data)", "seconds")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    num = lambda v, f=".3f": "-" if v is None else format(v, f)  # noqa: E731
    for r in q["rows"]:
        dl = r["druglike"]
        m, props, pb, rx = dl["moses"], dl.get("properties") or {}, dl.get("posebusters") or {}, dl.get("relaxation") or {}
        out.append("| " + " | ".join([
            r["row"], str(r["n"]), pct(r["model_molecule_stability"]), pct(r["model_connected_validity"]),
            pct(r["uniqueness_among_valid"]), pct(r["novelty_among_unique"]), num(m.get("fcd"), ".2f"), num(m.get("snn")),
            num(m.get("frag")), num(m.get("scaf")), num(m.get("int_div")), num(m.get("filters")),
            *(num(props.get(k, {}).get("mean"), f) for k, f in (("qed", ".3f"), ("sa", ".2f"), ("logp", ".2f"), ("mol_wt", ".0f"))),
            pct(pb.get("all_pass")), num(rx.get("energy_drop_median_kcal_mol"), ".2f"),
            f"{pct(r['share_holding_S_Cl_Br'])} ({pct(r.get('share_holding_S_Cl_Br_data'))})",
            num(r.get("sampling_seconds"), ".0f")]) + " |")
    out += ["", *realism_table(q)]
    return out


def realism_table(q: dict) -> list[str]:
    """Markdown rows of the realism figures of a druglike_quality.json (issue 37): ring systems of the
    valid molecules (the MOSES test set's in the last row), PoseBusters of all and of the valid molecules,
    and the MMFF94 relaxation drop as written beside an ETKDGv3 conformer of the same graph."""
    head = ("row", "aromatic rings / mol", "no aromatic ring", "non-aromatic ring with a double bond", "3/4-ring", "PB-valid (all)",
            "PB-valid (valid)", "MMFF drop median, as written", "same graphs, ETKDGv3", "angle / torsion part (as written)")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    num = lambda v, f=".1f": "-" if v is None else format(v, f)  # noqa: E731
    ref = None
    for r in q["rows"]:
        dl = r["druglike"]
        rings, pb, st = dl.get("rings") or {}, dl.get("posebusters") or {}, dl.get("strain") or {}
        ref = dl.get("rings_reference") or ref
        terms = st.get("model_term_drop_median_kcal_mol") or {}
        out.append("| " + " | ".join([
            r["row"], num(rings.get("aromatic_rings_per_molecule"), ".2f"), pct(rings.get("without_aromatic_ring")),
            pct(rings.get("odd_ring")), pct(rings.get("small_ring")), pct(pb.get("all_pass")), pct(pb.get("all_pass_of_present")),
            num(st.get("model_drop_median_kcal_mol")), num(st.get("etkdg_drop_median_kcal_mol")),
            f"{num(terms.get('Angle'))} / {num(terms.get('Torsion'))}"]) + " |")
    if ref:
        out.append("| " + " | ".join([ref.get("source", "MOSES test"), num(ref.get("aromatic_rings_per_molecule"), ".2f"),
                                      pct(ref.get("without_aromatic_ring")), pct(ref.get("odd_ring")), pct(ref.get("small_ring")),
                                      "-", "-", "-", "-", "-"]) + " |")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
