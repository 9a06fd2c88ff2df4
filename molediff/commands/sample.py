"""``molediff sample``: the command-line layer over :mod:`molediff.sampling` (argument checks, device
and rank set-up, streaming to the output file, shard merging, the summary).

The output appears atomically when sampling ends. Ctrl-C keeps the complete records written so far;
if none was written, nothing is published and an existing file at ``--out`` is left as it was. Two
live runs cannot write the same ``--out`` (a lock file beside it); a ``kill -9`` leaves at most a
hidden temporary file, which the next run writing the same output removes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys

import numpy as np
import time
from pathlib import Path

from molediff.atomic import AtomicFile, OutputLock, output_folder
from molediff.diffusion.sampler_table import SAMPLER_TABLE, SAMPLERS, SPACINGS
from molediff.conditioning import BY_NAME, DRUGLIKE_PROPERTIES, PROPERTIES, Range, parse_conditions
from molediff.config import BUNDLED_MODELS, COMPILE_MIN_MOLECULE_STEPS, DEFAULT_ETA, DEFAULT_NOISE_SCALE, DEFAULT_RESAMPLE, DEFAULT_RESTART_LEVEL, DEFAULT_STEPS, PRECISIONS, RESTART_FROM, WORKERS_MIN_MOLECULE_STEPS
from molediff.elements import QM9_ELEMENTS
from molediff.errors import UserError
from molediff.commands.evaluate import REPORT_HELP


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Generate 3D molecules with a bundled model (qm9-joint unless --model says another, e.g. druglike) or "
        "--checkpoint, and write them to an SDF "
        "(default) or XYZ file. Same --seed and --batch-size give the same molecules."
    )
    p.add_argument("-n", "--n", "--num-molecules", dest="n", type=int, default=1000,
                   help="number of molecules to write (default 1000); under torchrun use -n or --num-molecules")
    p.add_argument("--out", default="molediff_samples.sdf", help="output file (default molediff_samples.sdf); a folder gets samples.sdf inside")
    p.add_argument("--steps", type=int, default=None,
                   help=f"reverse steps of the sampler, up to the model's T (default {DEFAULT_STEPS}, or T if the model has "
                        f"fewer, or a distilled student's own count; the ddpm sampler always runs all T; see "
                        f"benchmarks/README.md for the trade-off)")
    p.add_argument("--seed", type=int, default=0, help="random seed, ≥ 0 (default 0)")
    p.add_argument("--batch-size", type=int, default=250, help="molecules sampled at once; bounds memory (default 250)")
    p.add_argument("--n-atoms", default=None,
                   help="molecule size N, or a range A-B drawn per molecule (default: sizes drawn from the training data; "
                        "with --fragment, from those larger than the fragment)")
    p.add_argument("--fragment", default=None, metavar="FRAG.sdf",
                   help="grow every molecule around this fragment (one 3D molecule in an SDF/MOL file): its atoms come first "
                        "in each output record at the file's coordinates, with its elements, charges and (joint models) bonds; "
                        "the rest is generated, by default with the fragment-conditioned model 'qm9-frag' (druglike is "
                        "fragment-conditioned too; models not trained on fragments inpaint, see --resample). Hydrogens are kept as given (a heavy-atom model, e.g. druglike, keeps their "
                        "count per atom and places them anew): remove those where new atoms should attach. A file without "
                        "any hydrogen atom gets RDKit's implicit hydrogens (with a warning): write them to choose the sites")
    p.add_argument("--resample", type=int, default=None,
                   help=f"RePaint rounds per reverse step with --fragment and a model not trained on fragments, so fragment "
                        f"and generated atoms agree (default {DEFAULT_RESAMPLE} for those, 1 for fragment-conditioned models; "
                        f"each round costs one more network evaluation; see benchmarks/README.md)")
    p.add_argument("--restarts", type=int, default=None, metavar="R",
                   help=f"rounds of local restarts (models that write bonds; with --fragment, fragment-conditioned ones such as "
                        f"druglike and qm9-frag, the fragment kept as given): after sampling, the atoms "
                        f"of a molecule that fail the valence rule (a ring with no Kekulé form, an atom a bond short, a stray "
                        f"fragment) and their neighbours are generated again from level {DEFAULT_RESTART_LEVEL:g}·T with the rest of "
                        f"the molecule's graph held (positions all new), up to R times; 0 turns them off (default: the model's own, 0 unless its "
                        f"card says otherwise). Each record says how often it was restarted (molediff_restarts); see "
                        f"benchmarks/README.md for validity and cost")
    p.add_argument("--restart-rings", action=argparse.BooleanOptionalAction, default=None,
                   help="local restarts also redraw the odd rings of valid molecules (non-aromatic rings with a double bond "
                        "inside, cyclohexene- or cyclohexadiene-like: rare in drug-like data, common in a model's samples), "
                        "and never leave a valid molecule invalid doing so (default: the model's own; on for druglike)")
    p.add_argument("--restart-ranges", action=argparse.BooleanOptionalAction, default=None,
                   help="with a drug-like --condition: local restarts also redraw, whole, the valid molecules whose "
                        "property (RDKit, on the written molecule) falls outside its range NAME=LO:HI, or outside the band "
                        "around its value NAME=VALUE (" + ", ".join(f"{p.name} ±{p.tolerance:g}" for p in DRUGLIKE_PROPERTIES
                                                                    if p.unit != "count") +
                        "; a count exactly), keeping the valid one where the new draw fails (default: on wherever restarts "
                        "run and a drug-like property is asked)")
    p.add_argument("--restart-from", default=None, choices=RESTART_FROM,
                   help="what a local restart draws again: 'region', the failing atoms and their neighbours with the rest "
                        "held (above), or 'noise', the whole molecule from noise, a fresh draw of its size (for a few-step "
                        "student, whose failures, a molecule in two pieces, are decided in its first steps: each round costs "
                        "a full sample of the molecules that fail; on a 'finish' grid a molecule in pieces where the "
                        "coarse steps end is drawn again there, for the cost of those steps; benchmarks/README.md) "
                        "(default: the model's own, 'region' unless its file says otherwise)")
    p.add_argument("--model", default=None, choices=tuple(BUNDLED_MODELS),
                   help="bundled model: 'qm9-joint' (default; generates the bond graph and formal charges with the geometry "
                        "and writes them), 'qm9' (atoms and coordinates only, bonds perceived by the lookup rule), "
                        "'qm9-cond' (the joint model conditioned on QM9 properties: use with --condition) or 'qm9-frag' "
                        "(the joint model trained to grow fragments: the default with --fragment), 'druglike' (drug-like "
                        "molecules with S, Cl, Br, F from MOSES: heavy-atom with hydrogens placed, an aromatic bond type, "
                        "6 rounds of --restarts with --restart-rings by default), 'druglike-cond' (druglike fine-tuned on eight "
                        "RDKit properties: use with --condition; it carries a property model that steers each molecule "
                        "towards its targets, and its restarts redraw molecules outside an asked range), 'qm9-fast' "
                        "(experimental: a few-step student of qm9-joint, 10 steps, the last four finishing ones, and up to 3 "
                        "redraws of failing molecules from noise, about 11.8 network evaluations per molecule and 3.2-3.5x faster "
                        "end to end; valid bonds and charges, lookup molecule stability 94.1%% against qm9-joint's 95.0%%); "
                        "model cards in molediff/pretrained/")
    units = ", ".join(f"{q.name} ({q.description}, {q.unit})" for q in PROPERTIES)
    drug_units = ", ".join(f"{q.name} ({q.description}, {q.unit})" for q in DRUGLIKE_PROPERTIES)
    p.add_argument("--condition", action="append", default=[], metavar="NAME=VALUE|NAME=LO:HI",
                   help=f"a property target for a conditional model, repeatable: a value, or a range LO:HI in which each "
                        f"molecule's target is drawn uniformly (e.g. --condition logp=2:3 --condition mw=300:400). QM9 "
                        f"models, in QM9's own units: {units}. Drug-like models, computed with RDKit as for their training "
                        f"molecules: {drug_units}. Properties not given are left free; values outside the model's training "
                        "range are refused. Sizes are drawn from the training molecules with properties nearest the targets "
                        "unless --n-atoms")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance weight w with --condition: ε = ε_uncond + w (ε_cond − ε_uncond); 1 (default) "
                        "the conditional model as trained, 0 unconditional, above 1 pushes harder towards the targets "
                        "(two network evaluations per step)")
    p.add_argument("--steer", type=float, default=None, metavar="S",
                   help="with --condition: correct each molecule's estimate in the late steps (t < 300 of 1000) towards its "
                        "targets, a gradient step of size S on a property model's error (0.1 measured on drug-like models "
                        "with restarts: each molecule's property much closer to its target, a point or two of stability "
                        "lost; see benchmarks/README.md); 0 turns it off. Default: the model's own (a model file that "
                        "carries a property model, e.g. druglike-cond), else none")
    p.add_argument("--property-model", default=None, metavar="FILE",
                   help="the property model --steer reads: a file 'molediff property-model' trained for this model "
                        "(default: the one the model file carries)")
    p.add_argument("--checkpoint", default=None, help="a model file or training checkpoint instead of a bundled model")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--format", choices=("sdf", "xyz"), default=None, help="output format (default: from the file extension, else sdf)")
    p.add_argument("--sampler", default="ddim", choices=SAMPLERS,
                   help="reverse-process solver (default ddim): " + "; ".join(f"'{k}': {v.help}" for k, v in SAMPLER_TABLE.items())
                        + "; see benchmarks/README.md for quality against steps")
    p.add_argument("--spacing", default=None, choices=SPACINGS,
                   help="where the reverse steps go: 'trailing' (evenly in t from the noisiest level t = T-1, the last "
                        "at about T/steps - 1), 'logsnr' (evenly in log signal-to-noise ratio, from t = T-1 to t = 0) or "
                        "'finish' (trailing for all but the last two steps, which sit where 75 trailing steps end: a "
                        "few-step student's grid; 'finish4' the last four there) (default: the model's own, trailing "
                        "unless its file names another)")
    p.add_argument("--eta", type=float, default=None,
                   help=f"DDIM stochasticity: 0 deterministic, 1 DDPM-like (default {DEFAULT_ETA:g}, better molecules at 100 "
                        "steps; a distilled few-step student's file says 0, the path it learned)")
    p.add_argument("--noise-scale", type=float, default=None,
                   help=f"scale of the noise injected at each reverse step (stochastic samplers only: refused for dpm++2m, "
                        f"dpm++3m and ddim at --eta 0, which inject none): 1 samples the model's own distribution, "
                        f"lower is a lower temperature: more stable and valid molecules, fewer novel ones "
                        f"(default: the model's own choice from its quality table, {DEFAULT_NOISE_SCALE:g} unless its card "
                        f"says otherwise; see benchmarks/README.md)")
    p.add_argument("--bonds", choices=("model", "lookup"), default="model",
                   help="bonds written to SDF: 'model' (default): the model's own bonds and formal charges, for models that "
                        "generate them; 'lookup': perceived from distances (the published rule; the only choice for atoms-only models)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch in all (default: torch's choice, with --workers one per worker)")
    p.add_argument("--workers", type=int, default=None, metavar="W",
                   help="sampling processes on this CPU, each on its share of the threads, each taking the next batch when "
                        "it is ready; the file is merged in batch order. Default: one per core (or per --threads) for a "
                        f"request of at least {WORKERS_MIN_MOLECULE_STEPS:,} molecule-steps with two or more batches, else 1 "
                        "(at most one per batch). On 2 cores, 1,000 drug-like molecules take 111 s with two single-thread "
                        "workers, 142 s as one process on two threads (benchmarks/README.md). Molecules depend on the threads each process uses "
                        "(rounding), not on which process sampled them: --workers 2 --threads 2 writes the file --workers 1 "
                        "--threads 1 writes. CPU only; under torchrun each rank is one process already")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the network: each step ~25%% cheaper on CPU after a warm-up of ~7 s (up to ~30 s the "
                        "first time on a machine). Default: on for requests of at least "
                        f"{COMPILE_MIN_MOLECULE_STEPS:,} molecule-steps (--n times --steps, e.g. --n 400 at 75 steps) when a "
                        "C++ compiler is found, off otherwise. If compiling fails, sampling goes on without it and says so")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="arithmetic of the network's matrix products: 'float32', or 'bfloat16' (about 2x faster per network step on a "
                        "CPU with native bfloat16, Intel AMX or AVX512-BF16, at the same molecule quality; emulated and slower "
                        "elsewhere); 'auto' (default) takes bfloat16 where the CPU has it natively, float32 otherwise. The "
                        "diffusion's own arithmetic stays float32 (benchmarks/README.md, \"sampling on two threads, and bfloat16 sampling\")")
    p.add_argument("--report", metavar="DIR", default=None, help=REPORT_HELP.replace("write a report", "after sampling, write a report of the molecules written", 1)
                   + "; for drug-like models also PoseBusters and the MMFF94 relaxation drop of every molecule (about 0.2 s each) "
                   "and novelty against the model's training molecules")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


#: molecules the drug-like summary checks with PoseBusters (its fast molecule checks, ~0.15 s each), split
#: evenly over the processes that sample (each checks its own first records, in parallel)
PB_SAMPLE = 100


def _druglike_summary(smiles: set[str], props: dict | None = None, pb: dict | None = None, training_hashes=None,
                      valid_smiles: list | None = None, generated: int | None = None, pb_label: str = "") -> str:
    """Lines for drug-like models: novelty of the distinct valid molecules (``smiles``) against the model's
    training molecules (when its file carries their hashes, ``training_hashes``), their QED and SA means
    (``props``: SMILES → (QED, SA, MolWt), :func:`_properties`; computed here where not given); the ring
    systems of the valid molecules (``valid_smiles``, duplicates kept) beside the MOSES test set's; and
    ``pb`` (:func:`_posebusters_counts`, summed over processes): the share of the first written molecules
    passing PoseBusters' molecule checks, of all and of the valid ones (``pb_label`` says which)."""
    from rdkit import Chem

    from molediff.chem.rdkit_mol import canonical_smiles
    from molediff.metrics.moses import hashed_novelty

    if props is None:
        props = _properties(smiles)
    line = "drug-likeness (distinct valid molecules): "
    mols = [m for m in (Chem.MolFromSmiles(s) for s in sorted(smiles)) if m is not None]
    if mols:
        if training_hashes is not None:
            novel = hashed_novelty((canonical_smiles(m) for m in mols), np.asarray(training_hashes))
            line += f"novel {100 * novel:.1f}% (of its {len(training_hashes):,} training molecules)  "
        values = np.array([props[s] for s in sorted(smiles) if s in props], dtype=np.float64).reshape(-1, 3)
        qed, sa, mw = (np.nanmean(values[:, k]) if len(values) else float("nan") for k in range(3))
        line += f"QED {qed:.3f}  SA {sa:.2f}  MolWt {mw:.0f}"
    else:
        line += "no valid molecule"
    lines = [line]
    if valid_smiles:
        from molediff.metrics.rings import ring_statistics

        rings = ring_statistics([Chem.MolFromSmiles(s) for s in valid_smiles], generated=generated)
        ref = _moses_rings()
        pct = lambda r, k: f"{100 * r[k]:.0f}%" if r and r.get(k) is not None else "n/a"  # noqa: E731
        per = lambda r: f"{r['aromatic_rings_per_molecule']:.2f}" if r and r.get("aromatic_rings_per_molecule") is not None else "n/a"  # noqa: E731
        lines.append(f"ring systems (valid molecules; MOSES test set in brackets): aromatic rings per molecule {per(rings)} "
                     f"({per(ref)}), none aromatic {pct(rings, 'without_aromatic_ring')} ({pct(ref, 'without_aromatic_ring')}), "
                     f"non-aromatic ring with a double bond {pct(rings, 'odd_ring')} ({pct(ref, 'odd_ring')}), "
                     f"3- or 4-membered ring {pct(rings, 'small_ring')} ({pct(ref, 'small_ring')}); valid without an odd "
                     f"ring {pct(rings, 'clean_of_generated')} of all written ({pct(ref, 'clean_of_generated')})")
    if pb is not None and pb.get("unavailable"):
        lines.append("(PoseBusters-valid: pip install 'molediff[posebusters]')")
    elif pb is not None and pb["present"]:
        label = pb_label or f"first {pb['checked']} molecules"
        lines.append(f"PoseBusters-valid ({label}): "
                     f"{100 * pb['passed'] / pb['checked']:.1f}% of all, {100 * pb['passed'] / pb['present']:.1f}% of the "
                     f"{pb['present']} valid ones; strain against RDKit's ETKDG: molediff evaluate FILE --druglike")
    return "\n".join(lines)


def _properties(smiles) -> dict[str, tuple[float, float, float]]:
    """SMILES → (QED, SA score, MolWt) for the drug-like summary (RDKit; NaN where it fails)."""
    from rdkit import Chem

    from molediff.metrics.properties import druglike_properties

    keys = [s for s in smiles if Chem.MolFromSmiles(s) is not None]
    if not keys:
        return {}
    values = druglike_properties([Chem.MolFromSmiles(s) for s in keys])
    return {s: (float(values["qed"][i]), float(values["sa"][i]), float(values["mol_wt"][i])) for i, s in enumerate(keys)}


def _targets_met(conditions: dict, smiles: list[str]) -> str | None:
    """One summary line on how the valid molecules (``smiles``, duplicates kept) meet the drug-like
    ``conditions``: per property the mean ± sd of the written molecules' values (RDKit, as for the
    training molecules), the share inside a range or the mean absolute error to a value; None without
    drug-like conditions or valid molecules."""
    from molediff.chem.analysis import smiles_condition_values
    from molediff.conditioning import DRUGLIKE_CONDITION_NAMES, target_band

    names = [n for n in conditions if n in DRUGLIKE_CONDITION_NAMES]
    if not names or not smiles:
        return None
    table = smiles_condition_values(smiles, [BY_NAME[n].column for n in names])
    parts = []
    for n in names:
        v = table[:, names.index(n)]
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        target = conditions[n]
        if isinstance(target, Range):
            met = f"inside {target[0]:g}:{target[1]:g} {100 * np.mean((v >= target[0]) & (v <= target[1])):.1f}%"
        else:
            lo, hi = target_band(n, target)
            met = (f"MAE to {target:g} {np.mean(np.abs(v - target)):.3g}, "
                   f"within {target:g} ± {BY_NAME[n].tolerance:g} {100 * np.mean((v >= lo) & (v <= hi)):.1f}%")
        parts.append(f"{n} {v.mean():.3g} ± {v.std():.2g}, {met}")
    return f"properties of the {len(smiles)} valid molecules (RDKit): " + "; ".join(parts) if parts else None


def _posebusters_counts(kept_3d: list) -> dict:
    """PoseBusters' fast molecule checks of the records ``kept_3d`` (``(symbols, pos, bonds, charges)``, None
    for one that is not valid): ``{"checked", "present", "passed"}`` counts, or ``{"unavailable": True}``
    without the optional package."""
    from rdkit import Chem, rdBase

    from molediff.chem.model_bonds import written_molecule
    from molediff.metrics.errors import MetricUnavailable
    from molediff.metrics.posebusters import posebusters_checks

    built = []
    for record in kept_3d:
        if record is None:
            built.append(None)
            continue
        symbols, pos, bonds, charges = record
        mol = written_molecule(symbols, *bonds, charges, pos)
        with rdBase.BlockLogs():
            Chem.SanitizeMol(mol)
        built.append(mol)
    present = sum(m is not None for m in built)
    if not present:
        return {"checked": len(built), "present": 0, "passed": 0}
    try:
        pb = posebusters_checks(built, config="mol_fast")
    except MetricUnavailable:
        return {"unavailable": True}
    return {"checked": len(built), "present": present, "passed": int(round(pb["all_pass"] * len(built)))}


def _moses_rings() -> dict | None:
    """The MOSES test set's ring-system figures, or None without the molsets data files."""
    from molediff.data.reference import moses_test_reference
    from molediff.metrics.errors import MetricUnavailable

    try:
        return moses_test_reference().rings()
    except (MetricUnavailable, OSError):
        return None


class _StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM while sampling: the first one is noted and sampling stops at the next
    reverse step or record (:meth:`check` raises KeyboardInterrupt there, inside the loop that handles
    it), so a signal that lands in the middle of other work (the first network call's torch.compile,
    hydrogen placement, a file write) cannot escape it; a second one stops at once. Signals the process
    was started ignoring (``nohup``, a background job) stay ignored. ``parent``: a worker's parent
    process id; the worker stops as if asked when that process is gone (it was killed).
    ``stop_at_once``: the signal that raises at once (the main process of ``--workers`` passes the first
    two on to its workers and gives up on them at the third)."""

    def __init__(self, verbose: bool, parent: int | None = None, stop_at_once: int = 2) -> None:
        self.requested = False
        self.verbose = verbose
        self.parent = parent
        self.stop_at_once = stop_at_once
        self.signals = 0
        self._old: dict = {}

    def install(self) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(s) is not signal.SIG_IGN:
                self._old[s] = signal.signal(s, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.signals += 1
        if self.signals >= self.stop_at_once:
            raise KeyboardInterrupt
        self.requested = True
        if self.verbose:
            print("\nstopping after this step (interrupt again to stop at once)", file=sys.stderr, flush=True)

    def check(self) -> None:
        if self.parent is not None and not self.requested and os.getppid() != self.parent:
            self.requested = True  # orphaned: nobody will merge or read what comes next
        if self.requested:
            raise KeyboardInterrupt

    def restore(self) -> None:
        import signal

        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


def _resolve_output(out: str, fmt: str | None) -> tuple[Path, str]:
    path = Path(out)
    if path.is_dir():
        path = path / f"samples.{fmt or 'sdf'}"
    fmt = fmt or ("xyz" if path.suffix.lower() == ".xyz" else "sdf")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise UserError(f"cannot write {path}: folder {parent} does not exist")
    try:
        probe = parent / f".molediff_write_test_{time.time_ns()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    return path, fmt


def _merge_shards(shards: list[Path], path: Path) -> None:
    """Concatenate per-rank files (multi-record SDF / multi-frame XYZ) into ``path`` atomically."""
    with AtomicFile(path) as out:
        for shard in shards:
            with open(shard) as f:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
    for shard in shards:
        shard.unlink()


def _file_records(f, fmt: str):
    """The records of an open multi-record SDF or multi-frame XYZ file, each as its text."""
    if fmt == "sdf":
        record: list[str] = []
        for line in f:
            record.append(line)
            if line.startswith("$$$$"):
                yield "".join(record)
                record = []
        return
    while header := f.readline():
        yield header + "".join(f.readline() for _ in range(int(header.split()[0]) + 1))


def _merge_by_batch(shards: list[Path | None], batches: list[list[tuple[int, int]]], path: Path, fmt: str) -> None:
    """Interleave the workers' files into ``path`` (atomically) in batch order, records renumbered as one
    process numbers them: ``batches[r]`` lists worker r's ``(batch index, records)`` in the order it wrote
    them (``shards[r]`` None: it wrote none). The shards are removed."""
    order = sorted((b, r, count) for r, own in enumerate(batches) for b, count in own)
    files = [open(s) if s is not None else None for s in shards]  # noqa: SIM115 - closed below
    try:
        readers = [_file_records(f, fmt) if f is not None else None for f in files]
        title = 0 if fmt == "sdf" else 1  # the line that names a record: each worker numbered its own
        index = 0
        with AtomicFile(path) as out:
            for _, r, count in order:
                for _ in range(count):
                    lines = next(readers[r]).split("\n")
                    lines[title] = re.sub(r"^molecule_\d+", f"molecule_{index}", lines[title])
                    out.write("\n".join(lines))
                    index += 1
    finally:
        for f in files:
            if f is not None:
                f.close()
    for s in shards:
        if s is not None:
            s.unlink()


def run(args: argparse.Namespace) -> int:
    if args.checkpoint is not None and args.model is not None:
        raise UserError("give --model or --checkpoint, not both")
    if args.n_atoms is not None:
        from molediff.inpainting import parse_size_range

        args.n_atoms = parse_size_range(args.n_atoms)
    if args.fragment is not None:
        from molediff.chem.io import read_one_molecule
        from molediff.inpainting import Fragment

        # read and checked before any output exists; its size against --n-atoms is checked once the model
        # is known (a heavy-atom model counts the fragment's heavy atoms only)
        args.fragment = Fragment(*read_one_molecule(args.fragment, what="--fragment"))
    args.conditions = parse_conditions(args.condition)  # checked against the model once it is loaded
    if args.report is not None:
        output_folder(args.report, "--report")  # a bad folder is refused before sampling
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    if args.threads < 0:
        raise UserError(f"--threads must be ≥ 0 (0: torch's choice), got {args.threads}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be ≥ 1, got {args.workers}")
    path, fmt = _resolve_output(args.out, args.format)
    import torch

    from molediff import distributed

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available")
    if (args.workers or 1) > 1 and not args.device.startswith("cpu"):
        raise UserError("--workers is for sampling on the CPU; on a GPU use one process (or torchrun, one rank per GPU)")
    if (args.workers or 1) > 1 and distributed.launched_by_torchrun():
        raise UserError("--workers cannot be combined with torchrun: each rank is one sampling process already")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ctx, device = distributed.init(args.device)
    lock = OutputLock(path).acquire() if ctx.is_main else None
    if lock is not None:  # worker files of a run that was killed (with the lock held, no live run owns them)
        for stale in path.parent.glob(f".{path.name}.worker*.part"):
            stale.unlink(missing_ok=True)
    try:
        return _sample(args, path, fmt, ctx, device)
    finally:
        if lock is not None:
            lock.release()


def _request(args: argparse.Namespace, gen):
    """The request of ``args``, checked once against the model before any output is created; fills in
    ``args.steps``, ``args.restarts``, ``args.restart_rings``, ``args.restart_ranges`` and ``args.restart_from`` with what it resolved."""
    req = gen.request(args.n, steps=args.steps, seed=args.seed, batch_size=args.batch_size, n_atoms=args.n_atoms, eta=args.eta,
                      noise_scale=args.noise_scale, fragment=args.fragment,
                      resample=args.resample if args.fragment is not None else None, conditions=args.conditions,
                      guidance=args.guidance, sampler=args.sampler, spacing=args.spacing, flags=True, restarts=args.restarts,
                      restart_rings=args.restart_rings, steer=args.steer, property_model=args.property_model,
                      restart_ranges=args.restart_ranges, restart_from=args.restart_from)
    args.steps, args.restarts, args.restart_rings, args.restart_ranges = req.steps, req.restarts, req.restart_rings, req.restart_ranges
    args.restart_from = req.restart_from
    args.steer = req.steer
    return req


def _worker_count(args: argparse.Namespace, gen, req, ctx) -> int:
    """How many worker processes sample ``req``: ``--workers`` (at most one per batch), else one per core
    (``--threads`` when given) where the request is big enough to repay their start, on the CPU only."""
    batches = -(-req.n // req.batch_size)
    if ctx.enabled or not args.device.startswith("cpu"):
        return 1
    if args.workers is not None:
        return max(1, min(args.workers, batches))
    from molediff.distributed import available_cores

    cores = args.threads if args.threads > 0 else available_cores()
    return min(cores, batches) if req.molecule_steps >= WORKERS_MIN_MOLECULE_STEPS else 1


def _druglike_checks(args: argparse.Namespace, gen, fmt: str) -> bool:
    """Whether the summary checks drug-likeness (a drug-like model's own bonds written to SDF)."""
    return fmt == "sdf" and gen.writes_bonds and args.bonds == "model" and _druglike_model(gen)


def _sample(args: argparse.Namespace, path: Path, fmt: str, ctx, device) -> int:
    """Sample into ``path`` (this rank's shard under torchrun; worker processes' shards with
    ``--workers``) and print the summary."""
    from molediff import distributed
    from molediff.sampling import DEFAULT_MODEL, FRAGMENT_MODEL, load_pretrained

    if args.checkpoint is None:
        args.model = args.model or (FRAGMENT_MODEL if args.fragment is not None else DEFAULT_MODEL)
    gen = load_pretrained(args.checkpoint, device=str(device), model=args.model or DEFAULT_MODEL)
    req = _request(args, gen)
    meta = {"molediff_model": Path(gen.source).name, "molediff_sampler": gen.request_tag(req), "molediff_seed": args.seed}
    workers = _worker_count(args, gen, req, ctx)
    if workers > 1:
        return _sample_with_workers(args, path, fmt, gen, req, meta, workers)
    # under torchrun, rank r samples batches r, r + W, r + 2W, ... (disjoint random streams) into its own
    # shard, with quotas summing to exactly --n; rank 0 merges the shards in rank order
    r, w = ctx.rank, ctx.world_size
    req = dataclasses.replace(req, n=args.n // w + (1 if r < args.n % w else 0), first_batch=r, batch_stride=w)
    target = path.with_name(f".{path.name}.rank{r}.part") if ctx.enabled else path
    t0 = time.time()
    stop = _StopRequest(ctx.is_main)
    bar = _bar(args, req.n, ctx.is_main)
    tally, interrupted = _sample_share(args, gen, req, [req], target, fmt, meta, stop, bar, -(-PB_SAMPLE // w))
    parts = distributed.gather_objects({**tally.counts(), "interrupted": interrupted}, ctx)
    interrupted = any(p["interrupted"] for p in parts)
    if ctx.enabled:
        distributed.barrier(ctx)
        if ctx.is_main and not interrupted:
            _merge_shards([path.with_name(f".{path.name}.rank{i}.part") for i in range(w)], path)
        distributed.barrier(ctx)
        distributed.finish(ctx)
    if not ctx.is_main:
        return 130 if interrupted else 0
    where = path if not (ctx.enabled and interrupted) else f"{w} per-rank files {path.parent}/.{path.name}.rank*.part"
    processes = f"{w} ranks" if ctx.enabled else ""
    return _finish(args, gen, path, fmt, parts, time.time() - t0, where, interrupted, processes, meta)


def _finish(args: argparse.Namespace, gen, path: Path, fmt: str, parts: list[dict], elapsed: float, where, interrupted: bool,
            processes: str, meta: dict) -> int:
    """The summary of all processes' records, the report, and the exit code."""
    summary, done = _summary(args, gen, path, fmt, parts, elapsed, where, interrupted, processes)
    if interrupted:
        kept = "" if done else f"; nothing written, {path} left as it was"
        print(f"interrupted after {done} of {args.n} molecules{kept}" + ("; no report written" if args.report else ""),
              file=sys.stderr)
        return 130
    if args.report:
        _write_report(args, gen, path, fmt, meta["molediff_sampler"], summary)
    return 0


def _sample_share(args: argparse.Namespace, gen, req, requests, target: Path, fmt: str, meta: dict, stop: "_StopRequest",
                  bar, pb_limit: int) -> tuple["_Tally", bool]:
    """One process's share of the request ``req`` (all of it, a torchrun rank's, or a worker's
    ``requests``: the batches it claims): compile where ``req`` pays for it, set the precision, write its
    records to ``target``, then the drug-like checks of its records (QED/SA and PoseBusters of its first
    ``pb_limit``), so that processes check in parallel."""
    if args.compile or (args.compile is None and gen.compile_pays(req)):  # by this process's expected share of the work
        gen.compile()
    meta["molediff_precision"] = gen.set_precision(args.precision).precision  # same seed, same precision: same molecules
    tally, interrupted = _write_records(args, gen, requests, target, fmt, meta, stop, bar)
    if not interrupted and _druglike_checks(args, gen, fmt):
        stop.install()
        try:
            tally.check(pb_limit)
            stop.check()
        except KeyboardInterrupt:  # the records are written; the summary of an interrupted run has no checks
            interrupted = True
        finally:
            stop.restore()
    return tally, interrupted


@dataclasses.dataclass
class _Tally:
    """What the summary counts of the records one process wrote (its SD flags), and what the drug-like
    summary checks further: the first records' 3D data (None: not valid) for PoseBusters, and every
    valid record's SMILES (duplicates kept) for the ring systems; ``batches``: (batch index, records) in
    the order written."""

    count: int = 0
    valid: int = 0
    stable: int = 0
    model_valid: int = 0
    model_stable: int = 0
    diverged: int = 0
    restarted: int = 0
    evaluations: int = 0  # network evaluations in molecules (SampleStats.evaluations)
    smiles: set = dataclasses.field(default_factory=set)
    kept_3d: list = dataclasses.field(default_factory=list)
    valid_smiles: list = dataclasses.field(default_factory=list)
    batches: list = dataclasses.field(default_factory=list)
    props: dict | None = None
    pb: dict | None = None

    def add(self, props: dict, symbols, pos, info: dict) -> None:
        self.valid += bool(props.get("molediff_valid"))
        self.stable += bool(props.get("molediff_stable"))
        self.model_valid += bool(props.get("molediff_model_valid"))
        self.model_stable += bool(props.get("molediff_model_stable"))
        if props.get("SMILES") and (props.get("molediff_model_valid") or "molediff_model_valid" not in props):
            self.smiles.add(props["SMILES"])
            if props.get("molediff_model_valid"):
                self.valid_smiles.append(props["SMILES"])
        if len(self.kept_3d) < PB_SAMPLE and "molediff_model_valid" in props:
            self.kept_3d.append((list(symbols), pos, info.get("bonds"), info.get("charges"))
                                if props.get("molediff_model_valid") else None)

    def written(self, batch: int) -> None:
        """One more record of batch ``batch`` written."""
        if self.batches and self.batches[-1][0] == batch:
            self.batches[-1] = (batch, self.batches[-1][1] + 1)
        else:
            self.batches.append((batch, 1))

    def check(self, pb_limit: int) -> None:
        """The drug-like checks of this process's records: QED/SA/MolWt of its distinct valid molecules,
        PoseBusters of its first ``pb_limit`` records."""
        self.props = _properties(self.smiles)
        self.pb = _posebusters_counts(self.kept_3d[:pb_limit]) if pb_limit and self.kept_3d else None
        self.kept_3d = []

    def count_run(self, stats) -> None:
        """Add a finished (or stopped) request's :class:`~molediff.sampling.SampleStats`."""
        self.diverged += stats.diverged
        self.restarted += stats.restarted
        self.evaluations += stats.evaluations

    def counts(self) -> dict:
        """What every process sends the main one."""
        return {k: getattr(self, k) for k in ("count", "valid", "stable", "smiles", "model_valid", "model_stable", "diverged",
                                              "restarted", "evaluations", "valid_smiles", "batches", "props", "pb")}


def _bar(args: argparse.Namespace, total: int, shown: bool):
    """The progress bar of a sampling run, counted in molecules."""
    from tqdm import tqdm

    return tqdm(total=total, unit="mol", disable=args.no_progress or not shown, dynamic_ncols=True, desc="sampling",
                bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}{postfix}]")


class _WorkerBar:
    """A worker's stand-in for the progress bar: what it would show goes to the main process's queue
    (at most every 0.2 s, and when it closes), where one bar adds up all workers."""

    def __init__(self, queue, rank: int) -> None:
        self.queue, self.rank = queue, rank
        self.n = 0.0
        self.note = ""
        self._sent = 0.0

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.note = text
        if refresh:
            self.refresh()

    def set_postfix(self, **kwargs) -> None:  # noqa: ARG002 - the main bar shows its own rate
        self.note = ""
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._sent >= 0.2:
            self._sent = now
            self.queue.put(("progress", self.rank, float(self.n), self.note))

    def close(self) -> None:
        self.refresh(force=True)


def _write_records(args: argparse.Namespace, gen, requests, target: Path, fmt: str, meta: dict, stop: "_StopRequest",
                   bar) -> tuple[_Tally, bool]:
    """Run the ``requests`` (an iterable: one request, or a worker's batches as it claims them) into
    ``target`` with a progress ``bar`` that moves with every reverse step; a signal (Ctrl-C, SIGTERM:
    ``stop``) stops at a safe point and keeps only complete records. Returns the tally and whether it
    was interrupted."""
    from molediff.chem.io import SDFWriter, XYZWriter
    from molediff.sampling import SampleStats

    # a signal from here on stops sampling cleanly (the writer's temporary file exists from the next line)
    stop.install()
    try:
        writer = SDFWriter(target, metadata=meta) if fmt == "sdf" else XYZWriter(target)
    except BaseException:
        stop.restore()
        bar.close()
        raise
    stats, tally = SampleStats(), _Tally()
    # the bar counts molecules and moves with every reverse step of a batch (a step of a batch of k
    # molecules sampled in S steps is k / S molecules' worth of work)
    interrupted = False
    t0 = time.time()
    steps_done = [0]  # reverse steps of the batch in flight
    quota, before = [0], [0]  # molecules of the requests so far; delivered by the ones finished
    if gen.compiled:  # the first step waits for the compiler: say why the bar stands still
        bar.set_postfix_str("compiling the network (--no-compile skips it)")

    def on_step(i: int, num_steps: int, size: int) -> None:  # noqa: ARG001
        stop.check()  # a Ctrl-C since the last step ends sampling here, at a safe point
        steps_done[0] += 1
        # written molecules plus the share of the batch in flight: the bar ends where the work ends
        done = before[0] + stats.delivered
        bar.n = min(quota[0], done + min(size, quota[0] - done) * min(steps_done[0] / num_steps, 1.0))
        if steps_done[0] > num_steps:  # local restart rounds (their count is not known in advance): say so
            bar.set_postfix_str(f"local restarts, step {steps_done[0] - num_steps}", refresh=False)
        elif steps_done[0] == 1:
            bar.set_postfix_str("", refresh=False)
        bar.refresh()

    def records():
        for req in requests:
            quota[0] += req.n
            yield from gen.run(req, stats, on_step)
            before[0] += stats.delivered
            tally.count_run(stats)
            stats.__init__()

    try:
        for symbols, pos, info in records():
            steps_done[0] = 0
            if fmt == "sdf":
                extra = {"molediff_fixed_atoms": " ".join(str(i + 1) for i in info["fixed_atoms"])} if "fixed_atoms" in info else {}
                extra.update({f"molediff_target_{k}": f"{v:.6g}" for k, v in info.get("conditions", {}).items()})
                if "restarts" in info:
                    extra["molediff_restarts"] = info["restarts"]
                props = writer.write(list(symbols), pos, {"molediff_batch": info["batch"], **extra},
                                     bonds=info.get("bonds") if args.bonds == "model" else None, charges=info.get("charges"))
                tally.add(props, symbols, pos, info)
            else:
                writer.write(list(symbols), pos)
            tally.written(info["batch"])
            bar.n = max(bar.n, before[0] + stats.delivered)  # the batch's steps already moved it this far: never backwards
            bar.set_postfix(written=writer.count, mol_s=f"{writer.count / max(time.time() - t0, 1e-9):.2f}")
            stop.check()
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        writer.abort()  # a crash publishes nothing
        raise
    finally:
        stop.restore()
        bar.close()
    if writer.count == 0 and interrupted:
        writer.abort()  # nothing to publish: an existing file at --out stays as it was
    else:
        writer.close()  # only complete records were written; the file appears now
    tally.count = writer.count
    tally.count_run(stats)  # the last request's, if stopped
    return tally, interrupted


# ---------------------------------------------------------------------------------- worker processes
def _batch_plan(req) -> list[int]:
    """The sizes of the batches of ``req`` as one process samples them (batch k: ``batch_generator(seed, k)``)."""
    return [min(req.batch_size, req.n - k * req.batch_size) for k in range(-(-req.n // req.batch_size))]


def _batch_request(req, gen, k: int, sizes: list[int], table=None):
    """Batch ``k`` of ``req`` as a request of its own: its size and random stream as in a one-process run
    (a molecule that diverges is retried in batch k + B, B batches in all, whoever samples it) and, for
    targets drawn in a range (``table``: all molecules' targets, drawn as one process draws them), its
    molecules' own targets."""
    conditions = req.conditions
    if table is not None:
        from molediff.conditioning import Range

        names = gen.config.diffusion.conditions
        rows = list(range(sum(sizes[:k]), sum(sizes[:k + 1])))
        conditions = {name: table[rows, names.index(name)].tolist() if isinstance(v, (Range, list)) else v
                      for name, v in conditions.items()}
    return dataclasses.replace(req, n=sizes[k], first_batch=k, batch_stride=len(sizes), conditions=conditions)


def _claimed_batches(req, gen, counter, stop: "_StopRequest"):
    """The batch requests a worker samples: the next unclaimed batch index (``counter``, shared by all
    workers) each time it is ready for one, so that no worker waits while batches are left."""
    import torch

    from molediff.conditioning import Range, condition_table

    sizes = _batch_plan(req)
    table = None
    if req.conditions and any(isinstance(v, (Range, list)) for v in req.conditions.values()):
        table = condition_table(req.conditions, gen.config.diffusion.conditions, req.n,
                                generator=torch.Generator().manual_seed(req.seed + 7919))
    while True:
        stop.check()
        with counter.get_lock():
            k = counter.value
            counter.value += 1
        if k >= len(sizes):
            return
        yield _batch_request(req, gen, k, sizes, table)


def _worker(rank: int, workers: int, threads: int, args: argparse.Namespace, gen, req, target: Path, fmt: str, meta: dict,
            queue, counter, parent: int) -> None:
    """A worker process (``--workers``): the batches of ``req`` it claims (``counter``) into ``target`` on
    ``threads`` threads, with the main process's model ``gen`` (forked) or its own (spawned: ``gen``
    None); sends ``("done", rank, counts, interrupted)`` or ``("error", rank, message, is_user_error)`` to
    ``queue``. Started with SIGINT ignored: the main process turns a Ctrl-C into SIGTERM for its workers."""
    try:
        import signal

        import torch

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # (a forked worker starts with the main process's handlers)
        stop = _StopRequest(False, parent=parent)
        stop.install()  # SIGTERM: stop at the next step
        torch.set_num_threads(threads)
        if gen is None:
            from molediff.sampling import load_pretrained

            gen = load_pretrained(args.checkpoint, model=args.model)
        share = dataclasses.replace(req, n=-(-req.n // workers))  # what it expects to sample (the compile decision)
        tally, interrupted = _sample_share(args, gen, share, _claimed_batches(req, gen, counter, stop), target, fmt, meta,
                                           stop, _WorkerBar(queue, rank), -(-PB_SAMPLE // workers))
        queue.put(("done", rank, tally.counts(), interrupted))
    except KeyboardInterrupt:  # stopped before it wrote anything (loading, compiling)
        queue.put(("done", rank, _Tally().counts(), True))
    except UserError as exc:
        queue.put(("error", rank, str(exc), True))
    except BaseException:  # noqa: BLE001 - reported to the main process, which stops the others
        import traceback

        queue.put(("error", rank, traceback.format_exc(), False))


def _sample_with_workers(args: argparse.Namespace, path: Path, fmt: str, gen, req, meta: dict, workers: int) -> int:
    """``--workers``: W processes (one share of the threads each) sample the batches, each claiming the
    next one when it is ready, into their own files; one progress bar adds them up; the files are merged
    in batch order; the summary adds up what each worker counted and checked. Ctrl-C or SIGTERM stops
    every worker at a safe point (a second one stops them at once), and the complete records so far are
    kept; a third abandons them and publishes nothing."""
    import multiprocessing
    import queue as queues
    import signal

    from molediff.distributed import available_cores

    threads = max(1, (args.threads if args.threads > 0 else available_cores()) // workers)
    shards = [path.with_name(f".{path.name}.worker{r}.part") for r in range(workers)]
    # forked workers start at once with the main process's imports and model; only where each runs on one
    # thread (no OpenMP thread pool to inherit: the main process has run no parallel work) and fork is
    # the platform's own way (Linux); elsewhere a fresh interpreter each (spawn), which loads the model
    fork = threads == 1 and sys.platform.startswith("linux")
    mp = multiprocessing.get_context("fork" if fork else "spawn")
    messages, counter = mp.Queue(), mp.Value("i", 0)  # progress and results; the next unclaimed batch
    stop = _StopRequest(True, stop_at_once=3)  # Ctrl-C / SIGTERM go on to the workers; a third abandons them
    stop.install()
    procs: list = []
    results: dict[int, tuple[dict, bool]] = {}
    failure: tuple[int, str, bool] | None = None
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workers start ignoring Ctrl-C (exec keeps SIG_IGN)
        try:
            for r in range(workers):
                p = mp.Process(target=_worker, name=f"molediff-sample-{r}",
                               args=(r, workers, threads, args, gen if fork else None, req, shards[r], fmt, meta, messages,
                                     counter, os.getpid()))
                p.start()
                procs.append(p)
        finally:
            signal.signal(signal.SIGINT, old)
        t0 = time.time()
        bar = _bar(args, req.n, True)
        bar.set_postfix_str(f"starting {workers} workers")
        progress, notes = [0.0] * workers, [""] * workers
        forwarded = 0
        while len(results) < workers and failure is None:
            if stop.signals > forwarded:  # each Ctrl-C / SIGTERM of the main process goes on to every worker
                forwarded = stop.signals
                for p in procs:
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGTERM)
            try:
                msg = messages.get(timeout=0.2)
            except queues.Empty:
                for r, p in enumerate(procs):
                    if r not in results and p.exitcode is not None and messages.empty():
                        if stop.requested:  # stopped by the signal before it could say so
                            results[r] = (_Tally().counts(), True)
                        else:
                            failure = (r, f"sampling worker {r} ended unexpectedly (exit code {p.exitcode})", False)
                continue
            if msg[0] == "progress":
                _, r, n, note = msg
                progress[r], notes[r] = n, note
                bar.n = min(req.n, sum(progress))
                bar.set_postfix_str(next((x for x in notes if x), ""), refresh=False)
                bar.refresh()
            elif msg[0] == "done":
                results[msg[1]] = (msg[2], msg[3])
            else:
                failure = msg[1:]
        bar.close()
    except KeyboardInterrupt:  # a third signal: the workers are abandoned, nothing is published
        _remove_shards(shards, procs)
        print(f"interrupted; nothing written, {path} left as it was", file=sys.stderr)
        return 130
    finally:
        stop.restore()
    if failure is not None:
        _remove_shards(shards, procs)
        rank, message, user = failure
        if user:
            raise UserError(message)
        raise RuntimeError(f"sampling worker {rank} failed:\n{message}")
    for p in procs:
        p.join(timeout=60)
    parts = [{**results[r][0], "interrupted": results[r][1]} for r in range(workers)]
    interrupted = any(p["interrupted"] for p in parts)
    written = [s if s.exists() else None for s in shards]
    if any(s is not None for s in written):
        _merge_by_batch(written, [p["batches"] for p in parts], path, fmt)
    return _finish(args, gen, path, fmt, parts, time.time() - t0, path, interrupted, f"{workers} workers", meta)


def _remove_shards(shards: list[Path], procs: list) -> None:
    """Stop the workers still running and remove their files (and the temporary file of one stopped
    mid-write)."""
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        p.join(timeout=30)
    for s in shards:
        s.unlink(missing_ok=True)
        for tmp in s.parent.glob(f".{s.name}.*"):
            tmp.unlink(missing_ok=True)


def _summary(args: argparse.Namespace, gen, path: Path, fmt: str, parts: list[dict], elapsed: float,
             where, interrupted: bool, processes: str = "") -> tuple[list[str], int]:
    """Print the summary of all processes' records (``parts``: each one's :meth:`_Tally.counts`);
    returns its lines (the report's too) and the number of molecules written."""
    done = sum(p["count"] for p in parts)
    valid, stable, diverged, model_valid, model_stable, restarted, evaluations = (
        sum(p[k] for p in parts) for k in ("valid", "stable", "diverged", "model_valid", "model_stable", "restarted", "evaluations"))
    smiles = set().union(*(p["smiles"] for p in parts))
    summary: list[str] = []

    def say(line: str) -> None:
        print(line)
        summary.append(line)

    wrote = (f"wrote {done} molecules to {where} in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.2f} mol/s"
             + (f", {evaluations / done:.2f} network evaluations a molecule" if done else "")
             + (f", {processes})" if processes else ")"))
    if interrupted:
        print(wrote, file=sys.stderr)
    else:
        say(wrote)
    if diverged:
        say(f"{diverged} diverged molecules (non-finite or collapsed) were discarded and replaced")
    if args.restarts:
        causes = ["failing atoms"] + ["odd rings"] * bool(args.restart_rings) + ["properties outside their asked band"] * bool(args.restart_ranges)
        what = " or ".join([", ".join(causes[:-1]), causes[-1]] if len(causes) > 1 else causes)
        again = "drawn again whole from noise" if args.restart_from == "noise" else "generated again"
        say(f"local restarts (up to {args.restarts} rounds): {restarted} "
            f"of {done} molecules had {what} {again} (SD property molediff_restarts; --restarts 0 turns them off)")
    if args.conditions:
        targets = ", ".join((f"{k}={v[0]:g}:{v[1]:g}" if isinstance(v, Range) else f"{k}={v:g}") + f" {BY_NAME[k].unit}"
                            for k, v in args.conditions.items())
        say(f"conditioned on {targets} (guidance {args.guidance:g}" + (f", steered at {args.steer:g}" if args.steer else "")
            + "; SD properties molediff_target_*)")
        met = None if interrupted else _targets_met(args.conditions, [s for p in parts for s in p["valid_smiles"]])
        if met:
            say(met)
    if fmt == "sdf" and done and gen.writes_bonds and args.bonds == "model":
        say(f"model bonds (written): connected valid {100 * model_valid / done:.1f}%  unique among them "
            f"{100 * len(smiles) / max(model_valid, 1):.1f}%  molecule stability {100 * model_stable / done:.1f}%  "
            f"(Kekulé valences with formal charges, no implicit H)")
        say(f"geometry, lookup bonds (published convention): valid {100 * valid / done:.1f}%  "
            f"molecule stability {100 * stable / done:.1f}%  (full scores: molediff evaluate {path} --bonds model)")
        if _druglike_model(gen) and not interrupted:
            props = {}
            for p in parts:
                props.update(p["props"] or {})
            pbs = [p["pb"] for p in parts if p["pb"] is not None]
            pb = ({"unavailable": True} if any(x.get("unavailable") for x in pbs) else
                  {k: sum(x[k] for x in pbs) for k in ("checked", "present", "passed")}) if pbs else None
            label = "" if len(pbs) <= 1 else f"{pb.get('checked', 0)} molecules: the first of each of {len(pbs)} processes"
            say(_druglike_summary(smiles, props, pb, gen.meta.get("training_smiles_hashes"),
                                  [s for p in parts for s in p["valid_smiles"]], generated=done, pb_label=label))
    elif fmt == "sdf" and done:
        say(f"valid {100 * valid / done:.1f}%  unique among valid {100 * len(smiles) / max(valid, 1):.1f}%  "
            f"molecule stability {100 * stable / done:.1f}%  (lookup bonds; full scores: molediff evaluate {path})")
    return summary, done


def _druglike_model(gen) -> bool:
    """A model of elements beyond QM9's (the drug-like summary and report checks apply)."""
    return tuple(gen.diffusion.vocab.elements) != QM9_ELEMENTS


def _write_report(args: argparse.Namespace, gen, path: Path, fmt: str, sampler: str, summary: list[str]) -> None:
    """``--report``: the report of ``molediff evaluate`` on the file just written (its bonds as written when
    the model writes them), with the sampling summary; for a drug-like model also PoseBusters and the MMFF94
    relaxation drop of every molecule and novelty against the model's training molecules."""
    from molediff.commands import evaluate

    bonds = "model" if fmt == "sdf" and gen.writes_bonds and args.bonds == "model" else "lookup"
    argv = [str(path), "--bonds", bonds, "--report", args.report] + (["--quiet"] if args.no_progress else [])
    scored = evaluate.score(evaluate.parse_arguments(argv))
    druglike = bonds == "model" and _druglike_model(gen)
    novelty = scored.novelty
    hashes = gen.meta.get("training_smiles_hashes")
    if novelty is None and druglike and hashes is not None:
        novelty = np.asarray(hashes, dtype=np.int64)  # novel against the model's own training molecules
    notes = [] if druglike else ["PoseBusters and MMFF94 relaxation per molecule: drug-like models, or "
                                 f"molediff evaluate {path} --druglike"]
    if druglike:
        print(f"report: PoseBusters and MMFF94 relaxation of {len(scored.molecules)} molecules (about 0.2 s each)", file=sys.stderr)
    paths = evaluate.write_report(args.report, scored.molecules, scored.result, scored.details, scored.bonds,
                                  model_scores=scored.model_scores, novelty=novelty, three_d=druglike,
                                  title=f"molediff sample: {Path(gen.source).name}, {sampler}, seed {args.seed}",
                                  sections=[("sampling", "\n".join(summary)),
                                            (f"scores of {path} (as molediff evaluate {path} --bonds {bonds} prints them)", scored.text)],
                                  notes=notes, progress=not args.no_progress)
    for p in paths:
        print(f"wrote {p}")
