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
import sys

import numpy as np
import time
from pathlib import Path

from molediff.atomic import AtomicFile, OutputLock, output_folder
from molediff.diffusion.sampler_table import SAMPLER_TABLE, SAMPLERS, SPACINGS
from molediff.conditioning import BY_NAME, DRUGLIKE_PROPERTIES, PROPERTIES, Range, parse_conditions
from molediff.config import BUNDLED_MODELS, COMPILE_MIN_MOLECULE_STEPS, DEFAULT_ETA, DEFAULT_NOISE_SCALE, DEFAULT_RESAMPLE, DEFAULT_RESTART_LEVEL, DEFAULT_STEPS, PRECISIONS
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
    p.add_argument("--model", default=None, choices=tuple(BUNDLED_MODELS),
                   help="bundled model: 'qm9-joint' (default; generates the bond graph and formal charges with the geometry "
                        "and writes them), 'qm9' (atoms and coordinates only, bonds perceived by the lookup rule), "
                        "'qm9-cond' (the joint model conditioned on QM9 properties: use with --condition) or 'qm9-frag' "
                        "(the joint model trained to grow fragments: the default with --fragment), 'druglike' (drug-like "
                        "molecules with S, Cl, Br, F from MOSES: heavy-atom with hydrogens placed, an aromatic bond type, "
                        "6 rounds of --restarts with --restart-rings by default); model cards in "
                        "molediff/pretrained/")
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
    p.add_argument("--checkpoint", default=None, help="a model file or training checkpoint instead of a bundled model")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--format", choices=("sdf", "xyz"), default=None, help="output format (default: from the file extension, else sdf)")
    p.add_argument("--sampler", default="ddim", choices=SAMPLERS,
                   help="reverse-process solver (default ddim): " + "; ".join(f"'{k}': {v.help}" for k, v in SAMPLER_TABLE.items())
                        + "; see benchmarks/README.md for quality against steps")
    p.add_argument("--spacing", default="trailing", choices=SPACINGS,
                   help="where the reverse steps go: 'trailing' (default: evenly in t from the noisiest level t = T-1, the last "
                        "at about T/steps - 1) or 'logsnr' (evenly in log signal-to-noise ratio, from t = T-1 to t = 0)")
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
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
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


#: molecules the drug-like summary checks with PoseBusters (its fast molecule checks, ~0.1 s each)
PB_SAMPLE = 100


def _druglike_summary(smiles: set[str], kept_3d: list, training_hashes=None, valid_smiles: list | None = None,
                      generated: int | None = None) -> str:
    """Lines for drug-like models: novelty of the distinct valid molecules against the model's training
    molecules (when its file carries their hashes, ``training_hashes``), their QED and SA means; the ring
    systems of the valid molecules (``valid_smiles``, duplicates kept) beside the MOSES test set's; and
    the share of the first written molecules (``kept_3d``: ``None`` for one that is not valid) passing
    PoseBusters' molecule checks, of all and of the valid ones (when the optional package is there)."""
    from rdkit import Chem, rdBase

    from molediff.chem.model_bonds import written_molecule
    from molediff.chem.rdkit_mol import canonical_smiles
    from molediff.metrics.errors import MetricUnavailable
    from molediff.metrics.moses import hashed_novelty
    from molediff.metrics.posebusters import posebusters_checks
    from molediff.metrics.properties import druglike_properties

    mols = [m for m in (Chem.MolFromSmiles(s) for s in sorted(smiles)) if m is not None]
    line = "drug-likeness (distinct valid molecules): "
    if mols:
        if training_hashes is not None:
            novel = hashed_novelty((canonical_smiles(m) for m in mols), np.asarray(training_hashes))
            line += f"novel {100 * novel:.1f}% (of its {len(training_hashes):,} training molecules)  "
        props = druglike_properties(mols)
        line += f"QED {np.mean(props['qed']):.3f}  SA {np.mean(props['sa']):.2f}  MolWt {np.mean(props['mol_wt']):.0f}"
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
    if present:
        try:
            pb = posebusters_checks(built, config="mol_fast")
            lines.append(f"PoseBusters-valid (first {len(built)} molecules): {100 * pb['all_pass']:.1f}% of all, "
                         f"{100 * pb['all_pass_of_present']:.1f}% of the {present} valid ones; strain against RDKit's "
                         "ETKDG: molediff evaluate FILE --druglike")
        except MetricUnavailable:
            lines.append("(PoseBusters-valid: pip install 'molediff[posebusters]')")
    return "\n".join(lines)


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
    was started ignoring (``nohup``, a background job) stay ignored."""

    def __init__(self, verbose: bool) -> None:
        self.requested = False
        self.verbose = verbose
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
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.verbose:
            print("\nstopping after this step (interrupt again to stop at once)", file=sys.stderr, flush=True)

    def check(self) -> None:
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
    path, fmt = _resolve_output(args.out, args.format)
    import torch

    from molediff import distributed

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ctx, device = distributed.init(args.device)
    lock = OutputLock(path).acquire() if ctx.is_main else None
    try:
        return _sample(args, path, fmt, ctx, device)
    finally:
        if lock is not None:
            lock.release()


def _sample(args: argparse.Namespace, path: Path, fmt: str, ctx, device) -> int:
    """Sample into ``path`` (this rank's shard under torchrun) and print the summary."""
    from molediff import distributed
    from molediff.sampling import DEFAULT_MODEL, FRAGMENT_MODEL, load_pretrained

    default = FRAGMENT_MODEL if args.fragment is not None else DEFAULT_MODEL
    gen = load_pretrained(args.checkpoint, device=str(device), model=args.model or default)
    # the request, checked once against the model before any output is created
    req = gen.request(args.n, steps=args.steps, seed=args.seed, batch_size=args.batch_size, n_atoms=args.n_atoms, eta=args.eta,
                      noise_scale=args.noise_scale, fragment=args.fragment,
                      resample=args.resample if args.fragment is not None else None, conditions=args.conditions,
                      guidance=args.guidance, sampler=args.sampler, spacing=args.spacing, flags=True, restarts=args.restarts,
                      restart_rings=args.restart_rings)
    args.steps, args.restarts, args.restart_rings = req.steps, req.restarts, req.restart_rings
    meta = {"molediff_model": Path(gen.source).name, "molediff_sampler": gen.request_tag(req), "molediff_seed": args.seed}
    # under torchrun, rank r samples batches r, r + W, r + 2W, ... (disjoint random streams) into its own
    # shard, with quotas summing to exactly --n; rank 0 merges the shards in rank order
    r, w = ctx.rank, ctx.world_size
    req = dataclasses.replace(req, n=args.n // w + (1 if r < args.n % w else 0), first_batch=r, batch_stride=w)
    if args.compile or (args.compile is None and gen.compile_pays(req)):  # by this rank's own share of the work
        gen.compile()
    meta["molediff_precision"] = gen.set_precision(args.precision).precision  # same seed, same precision: same molecules
    target = path.with_name(f".{path.name}.rank{r}.part") if ctx.enabled else path
    t0 = time.time()
    tally, interrupted = _write_records(args, gen, req, target, fmt, meta, ctx)
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
    summary, done = _summary(args, gen, path, fmt, parts, tally, time.time() - t0, where, interrupted, w if ctx.enabled else 0)
    if interrupted:
        kept = "" if done else f"; nothing written, {path} left as it was"
        print(f"interrupted after {done} of {args.n} molecules{kept}" + ("; no report written" if args.report else ""),
              file=sys.stderr)
        return 130
    if args.report:
        _write_report(args, gen, path, fmt, meta["molediff_sampler"], summary)
    return 0


@dataclasses.dataclass
class _Tally:
    """What the summary counts of the records one rank wrote (its SD flags), and what the drug-like
    summary checks further: the first records' 3D data (None: not valid) for PoseBusters, and every
    valid record's SMILES (duplicates kept) for the ring systems."""

    count: int = 0
    valid: int = 0
    stable: int = 0
    model_valid: int = 0
    model_stable: int = 0
    diverged: int = 0
    restarted: int = 0
    smiles: set = dataclasses.field(default_factory=set)
    kept_3d: list = dataclasses.field(default_factory=list)
    valid_smiles: list = dataclasses.field(default_factory=list)

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

    def counts(self) -> dict:
        """What every rank sends the main one."""
        return {k: getattr(self, k) for k in ("count", "valid", "stable", "smiles", "model_valid", "model_stable", "diverged",
                                              "restarted")}


def _write_records(args: argparse.Namespace, gen, req, target: Path, fmt: str, meta: dict, ctx) -> tuple[_Tally, bool]:
    """Run the request into ``target`` with a progress bar that moves with every reverse step; a signal
    (Ctrl-C, SIGTERM) stops at a safe point and keeps only complete records. Returns the tally and
    whether it was interrupted."""
    from tqdm import tqdm

    from molediff.chem.io import SDFWriter, XYZWriter
    from molediff.sampling import SampleStats

    # a signal from here on stops sampling cleanly (the writer's temporary file exists from the next line)
    stop = _StopRequest(ctx.is_main)
    stop.install()
    try:
        writer = SDFWriter(target, metadata=meta) if fmt == "sdf" else XYZWriter(target)
    except BaseException:
        stop.restore()
        raise
    stats, tally, quota = SampleStats(), _Tally(), req.n
    # the bar counts molecules and moves with every reverse step of a batch (a step of a batch of k
    # molecules sampled in S steps is k / S molecules' worth of work)
    bar = tqdm(total=quota, unit="mol", disable=args.no_progress or not ctx.is_main, dynamic_ncols=True, desc="sampling",
               bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
    interrupted = False
    t0 = time.time()
    steps_done = [0]  # reverse steps of the batch in flight
    if gen.compiled:  # the first step waits for the compiler: say why the bar stands still
        bar.set_postfix_str("compiling the network (--no-compile skips it)")

    def on_step(i: int, num_steps: int, size: int) -> None:  # noqa: ARG001
        stop.check()  # a Ctrl-C since the last step ends sampling here, at a safe point
        steps_done[0] += 1
        # written molecules plus the share of the batch in flight: the bar ends where the work ends
        bar.n = min(quota, stats.delivered + min(size, quota - stats.delivered) * min(steps_done[0] / num_steps, 1.0))
        if steps_done[0] > num_steps:  # local restart rounds (their count is not known in advance): say so
            bar.set_postfix_str(f"local restarts, step {steps_done[0] - num_steps}", refresh=False)
        elif steps_done[0] == 1:
            bar.set_postfix_str("", refresh=False)
        bar.refresh()

    try:
        for symbols, pos, info in gen.run(req, stats, on_step):
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
            bar.n = max(bar.n, stats.delivered)  # the batch's steps already moved it this far: never backwards
            bar.set_postfix(written=stats.delivered, mol_s=f"{stats.delivered * req.batch_stride / max(time.time() - t0, 1e-9):.2f}")
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
    tally.count, tally.diverged, tally.restarted = writer.count, stats.diverged, stats.restarted
    return tally, interrupted


def _summary(args: argparse.Namespace, gen, path: Path, fmt: str, parts: list[dict], tally: _Tally, elapsed: float,
             where, interrupted: bool, ranks: int) -> tuple[list[str], int]:
    """Print the summary of all ranks' records (``parts``; the main rank's ``tally`` for the drug-like
    checks); returns its lines (the report's too) and the number of molecules written."""
    done = sum(p["count"] for p in parts)
    valid, stable, diverged, model_valid, model_stable, restarted = (
        sum(p[k] for p in parts) for k in ("valid", "stable", "diverged", "model_valid", "model_stable", "restarted"))
    smiles = set().union(*(p["smiles"] for p in parts))
    summary: list[str] = []

    def say(line: str) -> None:
        print(line)
        summary.append(line)

    wrote = (f"wrote {done} molecules to {where} in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.2f} mol/s"
             + (f", {ranks} ranks)" if ranks else ")"))
    if interrupted:
        print(wrote, file=sys.stderr)
    else:
        say(wrote)
    if diverged:
        say(f"{diverged} diverged molecules (non-finite or collapsed) were discarded and replaced")
    if args.restarts:
        what = "failing atoms or odd rings" if args.restart_rings else "failing atoms"
        say(f"local restarts (up to {args.restarts} rounds): {restarted} "
            f"of {done} molecules had {what} generated again (SD property molediff_restarts; --restarts 0 turns them off)")
    if args.conditions:
        targets = ", ".join((f"{k}={v[0]:g}:{v[1]:g}" if isinstance(v, Range) else f"{k}={v:g}") + f" {BY_NAME[k].unit}"
                            for k, v in args.conditions.items())
        say(f"conditioned on {targets} (guidance {args.guidance:g}; SD properties molediff_target_*)")
    if fmt == "sdf" and done and gen.writes_bonds and args.bonds == "model":
        say(f"model bonds (written): connected valid {100 * model_valid / done:.1f}%  unique among them "
            f"{100 * len(smiles) / max(model_valid, 1):.1f}%  molecule stability {100 * model_stable / done:.1f}%  "
            f"(Kekulé valences with formal charges, no implicit H)")
        say(f"geometry, lookup bonds (published convention): valid {100 * valid / done:.1f}%  "
            f"molecule stability {100 * stable / done:.1f}%  (full scores: molediff evaluate {path} --bonds model)")
        if _druglike_model(gen):
            say(_druglike_summary(smiles, tally.kept_3d, gen.meta.get("training_smiles_hashes"), tally.valid_smiles,
                                  generated=tally.count))
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
