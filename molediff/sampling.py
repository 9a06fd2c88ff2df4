"""Sampling molecules: ``molediff sample`` and :func:`load_pretrained`.

Molecules are generated in batches; batch ``i`` uses a random stream derived from ``(seed, i)``
alone, so the same seed and batch size give the same molecules, and batches can be sharded across
processes without changing the result. Molecules whose sampling diverged (non-finite coordinates or
collapsed atoms) are never written: they are counted and more are sampled until ``n`` are delivered.
Output streams to the file record by record (memory stays bounded for any ``n``); it appears
atomically when sampling finishes, and an interrupted run keeps only complete records.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from molediff.checkpoint import load_model_file
from molediff.config import TrainConfig
from molediff.elements import ELEMENTS
from molediff.errors import UserError
from molediff.models import build_network
from molediff.molecular import DEFAULT_ETA, DEFAULT_NOISE_SCALE, MolecularDiffusion, finite_molecules, sizes_from_histogram

BUNDLED_MODEL = "qm9_ema.pt"
#: default number of reverse (DDIM) steps; see benchmarks/README.md for the quality/speed trade-off
DEFAULT_STEPS = 100
#: accepted noise scales (checked by the API and, before any output is created, by the CLI)
MAX_NOISE_SCALE = 2.0


def bundled_model_path() -> Path:
    return Path(str(resources.files("molediff") / "pretrained" / BUNDLED_MODEL))


def batch_generator(seed: int, index: int) -> torch.Generator:
    """The random stream of batch ``index`` for a user's ``seed`` (independent of other batches)."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass
class SampleStats:
    requested: int = 0
    delivered: int = 0
    diverged: int = 0
    batches: int = 0
    seconds: float = 0.0


class MoleculeGenerator:
    """A trained model ready to sample. Build with :func:`load_pretrained` or :meth:`from_file`."""

    def __init__(self, net: torch.nn.Module, config: TrainConfig, histogram: torch.Tensor, meta: dict, source: str) -> None:
        self.net = net.eval()
        self.diffusion = MolecularDiffusion(config.diffusion)
        self.config = config
        self.histogram = histogram
        self.meta = meta
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path, device: str = "cpu") -> "MoleculeGenerator":
        state, config, meta = load_model_file(path)
        net = build_network(config.model, MolecularDiffusion(config.diffusion))
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"{path}: weights do not fit the saved config ({exc})") from None
        hist = meta.get("size_histogram")
        if hist is None:
            from molediff.data.qm9 import train_size_histogram

            hist = train_size_histogram()
        return cls(net.to(device), config, torch.as_tensor(hist), meta, str(path))

    @property
    def writes_bonds(self) -> bool:
        """Whether the model generates its own bonds and formal charges (a joint model)."""
        return self.config.diffusion.bonds

    def compile(self) -> "MoleculeGenerator":
        """Compile the network with ``torch.compile`` (in place; returns self).

        On a 2-core CPU, 1,000 molecules took 76 s instead of 111 s (the 15-30 s warm-up included);
        100 molecules do not repay the warm-up. Coordinates agree with eager ones to ~1e-4 Å (float
        rounding). Needs a C++ compiler on CPU (inductor).
        """
        self.net.compile(dynamic=True)  # dynamic: every batch has its own atom and edge counts
        return self

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def sample_arrays(
        self,
        n: int,
        steps: int | None = DEFAULT_STEPS,
        seed: int = 0,
        batch_size: int = 250,
        n_atoms: int | None = None,
        eta: float = DEFAULT_ETA,
        noise_scale: float = DEFAULT_NOISE_SCALE,
        stats: SampleStats | None = None,
        first_batch: int = 0,
        batch_stride: int = 1,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
        """Yield ``n`` molecules as ``(symbols [k] str, positions [k, 3] Å, info)``; for models that write
        bonds, ``info["bonds"]`` = ``(src, dst, order)`` (local indices, Kekulé orders 1–3) and
        ``info["charges"]`` [k].

        ``first_batch``/``batch_stride`` select every stride-th batch index (for sharding across
        processes); the default is all batches. ``noise_scale`` multiplies the noise injected at each
        reverse step: 1 samples the model's own distribution, the default 0.8 a lower-temperature one
        (more stable and valid molecules, somewhat fewer novel ones; see benchmarks/README.md).
        """
        if n < 0:
            raise UserError("number of molecules must be ≥ 0")
        if not 0.0 <= noise_scale <= MAX_NOISE_SCALE:
            raise UserError(f"noise scale must be between 0 and {MAX_NOISE_SCALE:g}, got {noise_scale:g}")
        stats = stats if stats is not None else SampleStats()
        stats.requested = n
        max_atoms = len(self.histogram) - 1
        if n_atoms is not None and not 1 <= n_atoms <= max(max_atoms, 1) * 2:
            raise UserError(f"--n-atoms must be between 1 and {max(max_atoms, 1) * 2} for this model, got {n_atoms}")
        symbols_table = np.array(ELEMENTS)
        index = first_batch
        t0 = time.time()
        while stats.delivered < n:
            if stats.batches > 20 and stats.diverged > 10 * max(stats.delivered, 1):
                raise RuntimeError(f"sampling diverges: {stats.diverged} of {stats.diverged + stats.delivered} molecules failed")
            g = batch_generator(seed, index)
            size = min(batch_size, n - stats.delivered)
            sizes = torch.full((size,), n_atoms) if n_atoms else sizes_from_histogram(self.histogram, size, generator=g)
            mols = self.diffusion.sample(self.net, sizes, num_steps=steps, generator=g, eta=eta, noise_scale=noise_scale).cpu()
            pos, types, ptr = mols.pos, mols.atom_type, mols.ptr
            ok = finite_molecules(pos, ptr)
            stats.diverged += int((~ok).sum())
            stats.batches += 1
            for i in range(len(sizes)):
                if not ok[i]:
                    continue
                a, b = int(ptr[i]), int(ptr[i + 1])
                stats.delivered += 1
                info = {"batch": index, "index_in_batch": i}
                if mols.bond_order is not None:
                    p0, p1 = int(mols.pair_ptr[i]), int(mols.pair_ptr[i + 1])
                    order = mols.bond_order[p0:p1]
                    keep = order > 0
                    src, dst = (mols.pair_index[:, p0:p1][:, keep] - a).numpy()
                    info["bonds"] = (src, dst, order[keep].numpy())
                    info["charges"] = mols.charge[a:b].numpy()
                yield symbols_table[types[a:b].numpy()], pos[a:b].double().numpy(), info
            index += batch_stride
            stats.seconds = time.time() - t0

    def sample(self, n: int, **kwargs) -> list:
        """``n`` molecules as RDKit ``Mol`` objects with 3D conformers: the model's own bonds and formal
        charges for models that write them (unsanitized, no implicit hydrogens), else lookup bonds."""
        from molediff.chem import build_molecule
        from molediff.chem.model_bonds import written_molecule

        out = []
        for s, p, info in self.sample_arrays(n, **kwargs):
            if "bonds" in info:
                out.append(written_molecule(list(s), *info["bonds"], info["charges"], p))
            else:
                out.append(build_molecule(list(s), p))
        return out


def load_pretrained(path: str | Path | None = None, device: str = "cpu") -> MoleculeGenerator:
    """The bundled QM9 model (or the model file / training checkpoint at ``path``)."""
    path = Path(path) if path is not None else bundled_model_path()
    if not path.exists():
        if path == bundled_model_path():
            raise UserError("this installation has no bundled model; pass --checkpoint PATH (a run's ema_model.pt or checkpoint.pt)")
        raise UserError(f"checkpoint {path} does not exist")
    return MoleculeGenerator.from_file(path, device=device)


# ---------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Generate 3D molecules with the bundled QM9 model (or --checkpoint) and write them to an SDF "
        "(default) or XYZ file. Same --seed and --batch-size give the same molecules."
    )
    p.add_argument("-n", "--n", "--num-molecules", dest="n", type=int, default=1000,
                   help="number of molecules to write (default 1000); under torchrun use -n or --num-molecules")
    p.add_argument("--out", default="molediff_samples.sdf", help="output file (default molediff_samples.sdf); a folder gets samples.sdf inside")
    p.add_argument("--steps", type=int, default=None,
                   help=f"reverse steps: fewer than the model's T uses the DDIM sampler, T runs full ancestral DDPM "
                        f"(default {DEFAULT_STEPS}, or T if the model has fewer; see benchmarks/README.md for the trade-off)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--batch-size", type=int, default=250, help="molecules sampled at once; bounds memory (default 250)")
    p.add_argument("--n-atoms", type=int, default=None, help="fixed molecule size (default: sizes drawn from the training data)")
    p.add_argument("--checkpoint", default=None, help="model file or training checkpoint (default: the bundled QM9 model)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--format", choices=("sdf", "xyz"), default=None, help="output format (default: from the file extension, else sdf)")
    p.add_argument("--eta", type=float, default=DEFAULT_ETA,
                   help=f"DDIM stochasticity: 0 deterministic, 1 DDPM-like (default {DEFAULT_ETA:g}, better molecules at 100 steps)")
    p.add_argument("--noise-scale", type=float, default=DEFAULT_NOISE_SCALE,
                   help=f"scale of the noise injected at each reverse step: 1 samples the model's own distribution, "
                        f"lower is a lower temperature: more stable and valid molecules, fewer novel ones "
                        f"(default {DEFAULT_NOISE_SCALE:g}; see benchmarks/README.md)")
    p.add_argument("--bonds", choices=("model", "lookup"), default="model",
                   help="bonds written to SDF: 'model' (default): the model's own bonds and formal charges, for models that "
                        "generate them; 'lookup': perceived from distances (the published rule; the only choice for atoms-only models)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network: about 1.5x faster from ~1,000 molecules on, after a 15-30 s warm-up "
                        "(needs a C++ compiler on CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


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
    tmp = path.with_name(f".{path.name}.merge.tmp")
    with open(tmp, "w") as out:
        for shard in shards:
            with open(shard) as f:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
    os.replace(tmp, path)
    for shard in shards:
        shard.unlink()


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from molediff import distributed
    from molediff.chem.io import SDFWriter, XYZWriter

    if args.n < 1:
        raise UserError(f"--n must be ≥ 1, got {args.n}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    if not 0.0 <= args.eta <= 1.0:
        raise UserError(f"--eta must be between 0 and 1, got {args.eta:g}")
    if not 0.0 <= args.noise_scale <= MAX_NOISE_SCALE:
        raise UserError(f"--noise-scale must be between 0 and {MAX_NOISE_SCALE:g}, got {args.noise_scale:g}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    path, fmt = _resolve_output(args.out, args.format)
    ctx, device = distributed.init(args.device)
    gen = load_pretrained(args.checkpoint, device=str(device))
    if args.compile:
        gen.compile()
    T = gen.config.diffusion.timesteps
    if args.steps is None:
        args.steps = min(DEFAULT_STEPS, T)
    if not 1 <= args.steps <= T:
        raise UserError(f"--steps must be between 1 and {T}, got {args.steps}")
    steps = None if args.steps == T else args.steps
    sampler = ("ddpm" if steps is None else f"ddim{args.steps}_eta{args.eta:g}") + f"_noise{args.noise_scale:g}"
    meta = {"molediff_model": Path(gen.source).name, "molediff_sampler": sampler,
            "molediff_seed": args.seed}
    # under torchrun, rank r samples batches r, r + W, r + 2W, ... (disjoint random streams) into its own
    # shard, with quotas summing to exactly --n; rank 0 merges the shards in rank order
    r, w = ctx.rank, ctx.world_size
    quota = args.n // w + (1 if r < args.n % w else 0)
    target = path.with_name(f".{path.name}.rank{r}.part") if ctx.enabled else path
    writer = SDFWriter(target, metadata=meta) if fmt == "sdf" else XYZWriter(target)
    stats = SampleStats()
    valid = stable = model_valid = model_stable = 0
    smiles: set[str] = set()
    bar = tqdm(total=quota, unit="mol", disable=args.no_progress or not ctx.is_main, dynamic_ncols=True, desc="sampling")
    interrupted = False
    t0 = time.time()
    try:
        for symbols, pos, info in gen.sample_arrays(quota, steps=steps, seed=args.seed, batch_size=args.batch_size,
                                                    n_atoms=args.n_atoms, eta=args.eta, noise_scale=args.noise_scale, stats=stats, first_batch=r, batch_stride=w):
            if fmt == "sdf":
                props = writer.write(list(symbols), pos, {"molediff_batch": info["batch"]},
                                     bonds=info.get("bonds") if args.bonds == "model" else None, charges=info.get("charges"))
                valid += bool(props.get("molediff_valid"))
                stable += bool(props.get("molediff_stable"))
                model_valid += bool(props.get("molediff_model_valid"))
                model_stable += bool(props.get("molediff_model_stable"))
                if props.get("SMILES") and (props.get("molediff_model_valid") or "molediff_model_valid" not in props):
                    smiles.add(props["SMILES"])
            else:
                writer.write(list(symbols), pos)
            bar.update(1)
            bar.set_postfix(mol_s=f"{stats.delivered * w / max(time.time() - t0, 1e-9):.2f}")
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        writer.abort()  # a crash publishes nothing
        raise
    finally:
        bar.close()
    writer.close()  # only complete records were written; the file appears now
    parts = distributed.gather_objects({"count": writer.count, "valid": valid, "stable": stable, "smiles": smiles,
                                        "model_valid": model_valid, "model_stable": model_stable,
                                        "diverged": stats.diverged, "interrupted": interrupted}, ctx)
    interrupted = any(p["interrupted"] for p in parts)
    if ctx.enabled:
        distributed.barrier(ctx)
        if ctx.is_main and not interrupted:
            _merge_shards([path.with_name(f".{path.name}.rank{i}.part") for i in range(w)], path)
        distributed.barrier(ctx)
        distributed.finish(ctx)
    if not ctx.is_main:
        return 130 if interrupted else 0
    done = sum(p["count"] for p in parts)
    valid, stable, diverged, model_valid, model_stable = (
        sum(p[k] for p in parts) for k in ("valid", "stable", "diverged", "model_valid", "model_stable"))
    smiles = set().union(*(p["smiles"] for p in parts))
    elapsed = time.time() - t0
    where = path if not (ctx.enabled and interrupted) else f"{w} per-rank files {path.parent}/.{path.name}.rank*.part"
    print(f"wrote {done} molecules to {where} in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.2f} mol/s"
          + (f", {w} ranks)" if ctx.enabled else ")"), file=sys.stderr if interrupted else sys.stdout)
    if diverged:
        print(f"{diverged} diverged molecules (non-finite or collapsed) were discarded and replaced")
    if fmt == "sdf" and done and gen.writes_bonds and args.bonds == "model":
        print(f"model bonds (written): connected valid {100 * model_valid / done:.1f}%  unique among them "
              f"{100 * len(smiles) / max(model_valid, 1):.1f}%  molecule stability {100 * model_stable / done:.1f}%  "
              f"(Kekulé valences with formal charges, no implicit H)")
        print(f"geometry, lookup bonds (published convention): valid {100 * valid / done:.1f}%  "
              f"molecule stability {100 * stable / done:.1f}%  (full scores: molediff evaluate {path} --bonds model)")
    elif fmt == "sdf" and done:
        print(f"valid {100 * valid / done:.1f}%  unique among valid {100 * len(smiles) / max(valid, 1):.1f}%  "
              f"molecule stability {100 * stable / done:.1f}%  (lookup bonds; full scores: molediff evaluate {path})")
    if interrupted:
        print(f"interrupted after {done} of {args.n} molecules", file=sys.stderr)
        return 130
    return 0
