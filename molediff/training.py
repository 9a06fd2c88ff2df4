"""Training of the molecular diffusion model: ``molediff train`` and :func:`train`.

AdamW, an exponential moving average (EMA) of the weights, gradient clipping, a validation loss at
every evaluation, a small sampling check scored with the stability metrics, a progress bar and a
JSON-lines log (``log.jsonl``). Checkpoints (model, EMA, optimiser, step, data order and RNG state)
are written atomically every ``checkpoint_minutes`` and at the end; ``--resume`` continues exactly,
so an interrupted run (Ctrl-C, kill) loses at most that many minutes. No RDKit on this path: runs
on GPU machines without it (validity is then simply not reported during training).
"""

from __future__ import annotations

import functools
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from molediff import distributed
from molediff.checkpoint import atomic_torch_save, save_model_file, state_dict_digest
from molediff.conditioning import condition_family, drop_conditions
from molediff.runstate import CHECKPOINT, EMA_MODEL, LOG, mark_started, open_run, snapshot_path
from molediff.config import DEFAULT_ETA, TrainConfig
from molediff.data.molecules import MoleculeSet
from molediff.elements import CHARGES, ELEMENTS, QM9_ELEMENTS
from molediff.ema import EMA
from molediff.errors import UserError
from molediff.models import build_network, transfer_weights
from molediff.draws import random_fragments, sizes_from_histogram
from molediff.molecular import MolecularDiffusion
from molediff.state import MolState

__all__ = ["CHECKPOINT", "EMA_MODEL", "LOG", "Trainer", "train", "validation_loss", "sample_check", "load_training_data"]


# ---------------------------------------------------------------------------- data
def load_training_data(config: TrainConfig, progress: bool = True) -> tuple[MoleculeSet, MoleculeSet]:
    """(train, validation) sets: the QM9 split, or the user's files split 95/5 with the run's seed."""
    if config.data.split(":")[0] == "qm9":
        from molediff.data.qm9 import load_qm9

        if config.diffusion.vocabulary.aromatic:
            raise UserError("an aromatic bond type (--diffusion-bond-orders 0,1,2,3,4) needs file data (--data FILES); "
                            "the QM9 cache holds Kekulé bonds only")

        props = bool(config.diffusion.conditions)
        split = config.data.partition(":")[2] or "train"
        return load_qm9(split, progress=progress, properties=props), load_qm9("valid", progress=progress, properties=props)
    mols = read_training_files(config)
    if len(mols) < 2:
        raise UserError(f"{config.data}: need at least 2 usable molecules to train, found {len(mols)}")
    perm = np.random.default_rng(config.seed).permutation(len(mols))
    n_valid = max(1, len(mols) // 20)
    return mols.subset(perm[n_valid:]), mols.subset(perm[:n_valid])


def read_training_files(config: TrainConfig, limit: int | None = None) -> MoleculeSet:
    """The molecules of the run's data files (``config.data``), read as its model trains on them (size
    cap, bonds, hydrogen counts, aromatic bonds per its vocabulary); the first ``limit`` usable ones
    (None: all). Prints the read report and size outliers."""
    from molediff.data.build import is_build, built_files
    from molediff.config import TRAINING_MAX_ATOMS
    from molediff.data.files import read_molecule_files

    # a 'molediff data' build is read through its manifest: an unfinished or damaged one is refused
    sources = built_files(config.data) if is_build(config.data) else [config.data]
    mols, report = read_molecule_files(sources, max_atoms=TRAINING_MAX_ATOMS, limit=limit, bonds=config.diffusion.bonds,
                                       implicit_hydrogens="count" if config.diffusion.max_hydrogens else "refuse",
                                       overlapping="refuse", aromatic=config.diffusion.vocabulary.aromatic)
    print(report.summary())
    warn_size_outliers(mols)
    return mols


def set_vocabulary(dcfg: Any, sets: tuple[MoleculeSet, ...], source: str) -> None:
    """Fill the vocabulary fields a new run left empty from its data ``sets`` (training and validation):
    the elements they hold (in table order; QM9's five for QM9 data), and the formal charges −1, 0, +1
    with any other they hold."""
    if not dcfg.elements:
        if source.split(":")[0] == "qm9":
            present = list(QM9_ELEMENTS)
        else:
            counts = sum(torch.bincount(d.atom_type, minlength=len(ELEMENTS)) for d in sets)
            present = [e for e, c in zip(ELEMENTS, counts.tolist()) if c]
        dcfg.elements = [e for e in present if not (dcfg.max_hydrogens and e == "H")]
    if not dcfg.formal_charges:
        dcfg.formal_charges = sorted(set(CHARGES).union(*(d.charge.unique().tolist() for d in sets)))


def check_vocabulary(dcfg: Any, data: MoleculeSet, source: str) -> None:
    """Refuse data the model's vocabulary cannot hold, naming what is outside it."""
    vocab = dcfg.vocabulary
    counts = torch.bincount(data.atom_type, minlength=len(ELEMENTS))
    outside = [e for e, c in zip(ELEMENTS, counts.tolist()) if c and e not in vocab.elements]
    if outside:
        raise UserError(f"{source}: elements {', '.join(outside)} are outside the model's vocabulary "
                        f"({', '.join(vocab.elements)}); train a new model on these molecules, or give --diffusion-elements")
    if dcfg.charges:
        charges = sorted(set(data.charge.unique().tolist()) - set(vocab.charges))
        if charges:
            raise UserError(f"{source}: formal charges {charges} are outside the model's ({list(vocab.charges)}); "
                            "give --diffusion-formal-charges")
    if vocab.heavy_atom and data.hydrogens is not None and len(data.hydrogens) and int(data.hydrogens.max()) > vocab.max_hydrogens:
        raise UserError(f"{source}: an atom carries {int(data.hydrogens.max())} hydrogens, more than "
                        f"--diffusion-max-hydrogens {vocab.max_hydrogens}")


def warn_size_outliers(mols: MoleculeSet, factor: float = 3.0) -> list[str]:
    """Say which molecules are far larger than the rest: the network runs on all atom pairs of a
    molecule, so time and memory per molecule grow with atoms² (a 500-atom molecule among QM9-sized
    ones costs ~800× a 18-atom one and can make each step take many seconds). Returns the warnings."""
    counts = mols.num_atoms.double()
    median = float(counts.median()) if len(counts) else 0.0
    big = torch.nonzero(counts > max(factor * median, 64)).flatten().tolist()
    lines = []
    if big:
        worst = max(big, key=lambda i: int(counts[i]))
        name = mols.names[worst] if mols.names else str(worst)
        lines.append(f"warning: {len(big)} molecule(s) have more than {factor:g}x the median size ({median:.0f} atoms), "
                     f"the largest {int(counts[worst])} atoms ({name}); time and memory per molecule grow with atoms², "
                     f"so one such molecule in a batch slows every step. Leave them out of the training files if that is not intended.")
    for line in lines:
        print(line)
    return lines


class EpochSampler:
    """Shuffled mini-batches, one permutation per epoch derived from (seed, epoch): resumable exactly.

    By molecule count (``batch_size`` molecules a step; the last partial batch is dropped) or, with
    ``pair_budget`` > 0 and the molecules' ``sizes`` [n], by atom pairs: the permuted molecules are cut
    where their running pair count n(n−1)/2 passes a multiple of the budget, so a step's pairs (the
    network's cost and memory) stay within budget + one molecule's pairs whatever the molecules' sizes,
    and every epoch has the same number of steps (total pairs / budget, rounded up). A molecule larger
    than the budget counts as the budget (so no step is empty): its step holds its own pairs plus up to
    one budget of others'. Under torchrun each rank takes its share of a step's molecules by count.
    """

    def __init__(self, n: int, batch_size: int, seed: int, sizes: np.ndarray | None = None, pair_budget: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.pair_budget = n, batch_size, seed, pair_budget
        if pair_budget:
            if sizes is None or len(sizes) != n:
                raise ValueError("a pair budget needs the size of every molecule")
            sizes = np.asarray(sizes, dtype=np.int64)
            # a 1-atom molecule still takes a share; capped at the budget so no batch is left empty
            self._pairs = np.clip(sizes * (sizes - 1) // 2, 1, pair_budget)
            self.steps_per_epoch = max(1, -(-int(self._pairs.sum()) // pair_budget))
        else:
            self.steps_per_epoch = max(1, n // batch_size)  # the last partial batch is dropped

    def batch(self, step: int) -> tuple[int, np.ndarray]:
        epoch, i = divmod(step, self.steps_per_epoch)
        perm = self._perm(epoch)
        if not self.pair_budget:
            return epoch, perm[i * self.batch_size : (i + 1) * self.batch_size]
        return epoch, perm[self._bounds[i] : self._bounds[i + 1]]

    def _perm(self, epoch: int) -> np.ndarray:
        if getattr(self, "_cached_epoch", None) != epoch:
            self._cached_epoch = epoch
            self._cached = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            if self.pair_budget:
                # molecule k ends at running pair count end[k]; batch i holds those ending in
                # (i·budget, (i + 1)·budget]; with counts capped at the budget no such range is empty
                end = np.cumsum(self._pairs[self._cached])
                edges = np.arange(self.steps_per_epoch + 1, dtype=np.int64) * self.pair_budget
                self._bounds = np.searchsorted(end, edges, side="right")
        return self._cached


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def validation_loss(diffusion: MolecularDiffusion, net: torch.nn.Module, data: MoleculeSet, batch_size: int = 256,
                    seed: int = 1234, fragments: float | None = None) -> dict[str, float]:
    """Mean training losses over ``data`` with fixed noise and timesteps (comparable across evaluations).
    ``fragments``: the share of molecules with a fragment held (default: the model's training share)."""
    g = torch.Generator().manual_seed(seed)
    fragments = diffusion.cfg.fragments if fragments is None else fragments
    device = next(net.parameters()).device
    totals: dict[str, float] = {}
    for start in range(0, len(data), batch_size):
        idx = list(range(start, min(start + batch_size, len(data))))
        batch = data.collate(idx).to(device)
        x0 = diffusion.encode(batch, random_fragments(batch, fragments, g) if fragments else None)
        t = diffusion.sample_timesteps(len(idx), generator=g, device=device)
        losses = diffusion.training_losses(net, x0, t, x0.noise_like(g), cond=diffusion.condition_values(batch), generator=g)
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(idx)
    return {k: v / max(len(data), 1) for k, v in totals.items()}


@torch.no_grad()
def sample_check(diffusion: MolecularDiffusion, net: torch.nn.Module, histogram: torch.Tensor, n: int, steps: int,
                 seed: int = 0, eta: float = DEFAULT_ETA, noise_scale: float = 1.0, spacing: str = "trailing",
                 bond_types: dict[str, int] | None = None) -> dict[str, float]:
    """Sample ``n`` molecules and score them (stability always; validity when RDKit is present; the
    model-bond view too for models that generate bonds, with ``bond_types`` their bond-type TV), on the
    ``spacing`` grid.

    Full noise (``noise_scale`` 1) by default: the learning curve follows the model's own distribution.
    """
    from molediff.metrics import sample_metrics

    g = torch.Generator().manual_seed(seed)
    sizes = sizes_from_histogram(histogram, n, generator=g)
    mols = diffusion.sample(net, sizes, num_steps=steps, generator=g, eta=eta, noise_scale=noise_scale, spacing=spacing).cpu()
    return {**sample_metrics(mols, bond_types), "sample_eta": eta, "sample_noise_scale": noise_scale}


class Trainer:
    """A training run: network, EMA, optimiser, run directory. :meth:`run` trains until a limit or a signal.

    ``config`` may be None with ``resume`` (the run's own config is used).
    """

    def __init__(self, config: TrainConfig | None, run_dir: str | Path, resume: bool = False, device: str | torch.device = "cpu",
                 progress: bool = True, ctx: distributed.Context | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.ctx = ctx or distributed.Context()
        self.progress = progress and self.ctx.is_main
        self.device = torch.device(device)
        start = open_run(config, self.run_dir, resume, check_log=self.ctx.is_main)
        config, state, init = start.config, start.checkpoint, start.init
        if state is None and self.ctx.is_main:
            mark_started(config, self.run_dir)
        self._lr_before: float | None = start.lr_before
        self.config = config
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        self._load_data(fresh_run=state is None, progress=progress)
        torch.manual_seed(config.seed)
        self.diffusion = MolecularDiffusion(config.diffusion)
        self.net = build_network(config.model, self.diffusion).to(self.device)
        self.ema = EMA(self.net, config.ema_decay)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay, amsgrad=True)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.molecules_seen = 0
        self.fresh_parameters: list[str] = []
        self._inherited_curve: list[dict[str, Any]] = []
        if state is not None:
            self._restore(state)
        if init is not None:
            self._warm_start(*init)
        self.ema.num_updates = self.step
        self.teacher, self.teacher_meta, self.teacher_steps = None, {}, 0
        if config.distill_from:  # the frozen teacher of a few-step student
            from molediff.distill import load_teacher

            self.teacher, self.teacher_meta, self.teacher_steps = load_teacher(
                config.distill_from, config.model, self.diffusion, self.device, config.compile)
        # distribution matching: the fake denoiser, a trainable copy of the teacher fitted online to the student's samples
        self.fake, self.fake_opt = None, None
        if config.distill_method == "dmd":
            self.fake = build_network(config.model, self.diffusion).to(self.device)
            self.fake.load_state_dict(self.teacher.state_dict())
            self.fake_opt = torch.optim.AdamW(self.fake.parameters(), lr=config.lr, weight_decay=config.weight_decay, amsgrad=True)
            if state is not None and "fake" in state:
                self.fake.load_state_dict(state["fake"])
                self.fake_opt.load_state_dict(state["fake_optimizer"])
                for group in self.fake_opt.param_groups:
                    group["lr"] = config.lr
        # its adversarial term: a discriminator head on the fake denoiser's features, from scratch (also when a
        # run without one is continued with one)
        self.disc, self.disc_opt = None, None
        if self.fake is not None and config.distill_gan > 0:
            from molediff.distill import DISC_LR, Discriminator

            pair_hidden = self.fake.pair_embed.out_features if hasattr(self.fake, "pair_embed") else 0
            self.disc = Discriminator(self.fake.embed.out_features, pair_hidden, self.diffusion.schedule.num_train_timesteps).to(self.device)
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=DISC_LR, weight_decay=config.weight_decay)
            if state is not None and "disc" in state:
                try:
                    self.disc.load_state_dict(state["disc"])
                    self.disc_opt.load_state_dict(state["disc_optimizer"])
                except (RuntimeError, ValueError):  # a run of the earlier, from-scratch EGNN discriminator
                    if self.ctx.is_main:
                        print("the run's discriminator is of an earlier form (an EGNN on raw states); a head on the fake "
                              "denoiser's features starts from scratch")
        #: the regression term's teacher pairs (:meth:`_teacher_pairs`, drawn when the run starts)
        self.pairs: list[dict[str, torch.Tensor]] | None = None
        #: per-step figures of the step's parts beside its loss (distribution matching), averaged into the log
        self._stats: dict[str, list[float]] = {}
        if config.compile:
            # in place (Module.compile), so parameter names and checkpoints are those of the eager
            # network; dynamic shapes because every batch has a different number of atoms and edges
            self.net.compile(dynamic=True)
            if self.fake is not None:
                self.fake.compile(dynamic=True)
        if config.valid_molecules and len(self.valid_set) > config.valid_molecules:
            self.valid_set = self.valid_set.subset(np.arange(config.valid_molecules))
        self.histogram = self.train_set.size_histogram()
        self.condition_table: dict[str, Any] | None = None
        if config.diffusion.conditions:
            self._condition_statistics()
        self._batches()
        self._stop = False

    def _load_data(self, fresh_run: bool, progress: bool) -> None:
        """The training and validation sets, as this model reads them (with bonds, heavy atoms), and a
        new run's vocabulary from them. The data comes first: a new run takes its vocabulary (elements,
        charges) from it, and a heavy-atom model its hydrogen counts; rank 0 reads (and on a fresh
        machine builds) the data caches, the others wait for it rather than all building the same cache at once."""
        config = self.config
        if self.ctx.enabled and not self.ctx.is_main:
            distributed.barrier(self.ctx)
        self.train_set, self.valid_set = load_training_data(config, progress=progress and self.ctx.is_main)
        if self.ctx.enabled and self.ctx.is_main:
            distributed.barrier(self.ctx)
        if condition_family(config.diffusion.conditions) == "druglike":  # computed from each molecule, every rank alike
            from molediff.data.files import with_condition_properties

            self.train_set, self.valid_set = (with_condition_properties(s, config.diffusion.conditions, progress and self.ctx.is_main)
                                              for s in (self.train_set, self.valid_set))
        if config.diffusion.bonds:
            self.train_set, self.valid_set = self._with_bonds(self.train_set, "training"), self._with_bonds(self.valid_set, "validation")
        if config.diffusion.max_hydrogens:
            self.train_set, self.valid_set = self._heavy(self.train_set, "training"), self._heavy(self.valid_set, "validation")
        if fresh_run:
            set_vocabulary(config.diffusion, (self.train_set, self.valid_set), config.data)
        check_vocabulary(config.diffusion, self.train_set, config.data)
        check_vocabulary(config.diffusion, self.valid_set, config.data)

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue a run from its checkpoint ``state``: weights, EMA, optimiser, random streams, progress."""
        try:
            self.net.load_state_dict(state["model"])
            self.ema.model.load_state_dict(state["ema"])
        except RuntimeError as exc:
            raise UserError(f"{self.run_dir / CHECKPOINT}: its weights do not fit the network its config describes "
                            f"(another architecture or a damaged file): {str(exc).splitlines()[0]}") from None
        self.opt.load_state_dict(state["optimizer"])
        for group in self.opt.param_groups:  # the optimiser state keeps the old rate; the config decides
            group["lr"] = self.config.lr
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.elapsed, self.molecules_seen = state["step"], state["elapsed"], state["molecules_seen"]

    def _warm_start(self, weights: dict[str, torch.Tensor], src: TrainConfig, meta: dict[str, Any]) -> None:
        """Start from a model file (``--init-from``): its weights carried over by label into this layout
        (:func:`~molediff.models.transfer_weights`), its step count, clock and learning curve continued,
        so learning curves line up across machines; the data order and RNG follow from (seed, step) as in
        any run."""
        self._inherited_curve = list(meta.get("learning_curve") or [])
        src_diffusion = MolecularDiffusion(src.diffusion)
        self.fresh_parameters = transfer_weights(
            self.net, weights, (self.diffusion.input_labels(), self.diffusion.output_labels()),
            (src_diffusion.input_labels(), src_diffusion.output_labels()),
            (self.diffusion.pair_labels(), src_diffusion.pair_labels()), self.diffusion.output_gains(src_diffusion))
        self.ema.model.load_state_dict(self.net.state_dict())
        if self.config.distill_from and self.config.init_from == self.config.distill_from:
            # a new student (a copy of its teacher): its own steps, clock and curve, so that --max-steps and
            # --max-minutes count the distillation and its card's curve is the student's
            self._inherited_curve = []
            return
        self.step = int(meta.get("step") or 0)
        self.elapsed = float(meta.get("train_seconds") or 0.0)
        self.molecules_seen = int(meta.get("molecules_seen") or 0)

    def _batches(self) -> None:
        """The batch order and, across ranks, DDP: one global batch of batch_size × world molecules per
        step, the same on every rank; each rank trains on its contiguous share and DDP averages the
        gradients (= the global-batch gradient)."""
        config = self.config
        self.global_batch = config.batch_size * self.ctx.world_size
        self.sampler = EpochSampler(len(self.train_set), self.global_batch, config.seed, self.train_set.num_atoms.numpy(),
                                    config.batch_pairs * self.ctx.world_size)
        self.ddp = self.fake_ddp = self.disc_ddp = None
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.net, device_ids=ids)
            if self.fake is not None:
                self.fake_ddp = DistributedDataParallel(self.fake, device_ids=ids)
            if self.disc is not None:
                # its last layer's position update is computed but not read (the logit is invariant)
                self.disc_ddp = DistributedDataParallel(self.disc, device_ids=ids, find_unused_parameters=True)

    def _with_bonds(self, data: MoleculeSet, what: str) -> MoleculeSet:
        """A model that generates bonds learns only from molecules whose bonds are known; say how many are not."""
        missing = int((~data.has_bonds).sum())
        if missing and self.ctx.is_main:
            names = ", ".join(data.names[i] for i in torch.nonzero(~data.has_bonds).flatten()[:10].tolist())
            print(f"{missing} {what} molecules have no bond assignment and are left out of this joint model's data: {names}")
        return data.subset(data.has_bonds) if missing else data

    def _heavy(self, data: MoleculeSet, what: str) -> MoleculeSet:
        """The molecules without hydrogen atoms, with attached-hydrogen counts (a heavy-atom model); say
        which could not be converted."""
        heavy, left_out = data.heavy_atoms()
        if left_out and self.ctx.is_main:
            print(f"{len(left_out)} {what} molecules have a hydrogen not bonded to exactly one heavy atom and are left out "
                  f"of this heavy-atom model's data: {', '.join(left_out[:10])}")
        return heavy

    def _condition_statistics(self, table_rows: int = 10_000) -> None:
        """Statistics of the conditions on the training data (kept from the source model when it has them;
        the network reads values standardised by them), and a table of (size, values) of up to
        ``table_rows`` training molecules from which sampling draws sizes p(n | c)."""
        from molediff.conditioning import property_columns, property_stats

        dcfg = self.config.diffusion
        cols = property_columns(dcfg.conditions)
        values = self.train_set.props[:, cols]
        missing = [n for n in dcfg.conditions if n not in dcfg.condition_stats]
        if missing:
            dcfg.condition_stats.update(property_stats(values[:, [dcfg.conditions.index(n) for n in missing]], missing))
        rows = np.random.default_rng(self.config.seed).permutation(len(self.train_set))[:table_rows]
        rows = np.sort(rows)
        self.condition_table = {"sizes": self.train_set.num_atoms[rows].tolist(),
                                "values": values[rows].tolist(), "names": list(dcfg.conditions)}

    # ------------------------------------------------------------------ persistence
    def model_meta(self) -> dict[str, Any]:
        """What a model file carries beside the weights: progress, the size histogram, the data, and for
        conditional models the table of sizes and property values behind p(n | c)."""
        meta = {"step": self.step, "train_seconds": round(self.elapsed, 1), "molecules_seen": self.molecules_seen,
                "size_histogram": self.histogram.tolist(), "data": self.config.data}
        if self.condition_table is not None:
            meta["condition_table"] = self.condition_table
        if self.teacher is not None:  # a student samples as it was distilled: its steps, DDIM at eta 0, and
            # otherwise as its teacher does (restarts), knowing the same training molecules
            meta.update(self.teacher_meta)
            from molediff.distill import STUDENT_SAMPLING

            meta.update(default_steps=self.config.distill_steps, teacher=self.config.distill_from,
                        **STUDENT_SAMPLING[self.config.distill_method])
            if self.config.distill_spacing != "trailing":  # the grid it learned (the sampler's default is trailing)
                meta["default_spacing"] = self.config.distill_spacing
        return meta

    def save(self) -> None:
        state = {
            "config": self.config.to_dict(),
            "model": self.net.state_dict(),
            "ema": self.ema.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "elapsed": self.elapsed,
            "molecules_seen": self.molecules_seen,
            "histogram": self.histogram,
        }
        if self.fake is not None:
            state.update(fake=self.fake.state_dict(), fake_optimizer=self.fake_opt.state_dict())
        if self.disc is not None:
            state.update(disc=self.disc.state_dict(), disc_optimizer=self.disc_opt.state_dict())
        atomic_torch_save(state, self.run_dir / CHECKPOINT)
        save_model_file(self.run_dir / EMA_MODEL, self.ema.model.state_dict(), self.config, self.model_meta())
        self.config.save_json(self.run_dir / "config.json")

    def log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / LOG, "a") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"event": "eval", "step": self.step, "minutes": round(self.elapsed / 60, 2),
                               "molecules_seen": self.molecules_seen}
        ema_losses = validation_loss(self.diffusion, self.ema.model, self.valid_set, fragments=self.fragments)
        rec["val_loss"] = ema_losses["total"]
        rec.update({f"val_{k}": v for k, v in ema_losses.items() if k != "total"})
        self.net.eval()
        rec["val_loss_raw"] = validation_loss(self.diffusion, self.net, self.valid_set, fragments=self.fragments)["total"]
        if self.config.eval_samples > 0:
            t0 = time.time()
            # a student is checked as it samples: its own steps and its method's η and noise (STUDENT_SAMPLING)
            student = self.teacher is not None
            how = {}
            if student:
                from molediff.distill import STUDENT_SAMPLING

                how = {k.removeprefix("default_"): v for k, v in STUDENT_SAMPLING[self.config.distill_method].items()}
                how["spacing"] = self.config.distill_spacing
            rec.update(sample_check(self.diffusion, self.ema.model, self.histogram, self.config.eval_samples,
                                    self.config.distill_steps if student else self.config.eval_sample_steps,
                                    bond_types=self.valid_bond_types, **how))
            rec["sample_seconds"] = round(time.time() - t0, 1)
        # each evaluation keeps its EMA weights (small), so the learning curve can be re-scored later
        save_model_file(snapshot_path(self.run_dir, self.step), self.ema.model.state_dict(), self.config,
                        self.model_meta())
        self.log(rec)
        return rec

    @functools.cached_property
    def valid_bond_types(self) -> dict[str, int] | None:
        """The validation molecules' bond-type counts, as the model writes bonds (its hydrogens as atoms or
        counted), the reference of the checks' ``model_bond_type_tv``; None for a model that writes none."""
        if not self.config.diffusion.bonds or not bool(self.valid_set.has_bonds.any()):
            return None
        from molediff.metrics import written_bond_types

        return written_bond_types(self.valid_set)

    @property
    def fragments(self) -> float:
        """The share of this run's batches with a fragment held: the model's, except for a distribution-matching
        student, which samples whole molecules (its chain starts from noise, no atom held) even where its
        teacher was trained to grow fragments."""
        return self.config.diffusion.fragments if self.fake is None else 0.0

    # ------------------------------------------------------------------ training
    def train_step(self, index: np.ndarray) -> float:
        """One optimiser step on the global batch ``index``; returns this rank's loss."""
        b = self.train_set.collate(index)
        fragments = self.fragments
        x0 = self.diffusion.encode(b, random_fragments(b, fragments, self.generator) if fragments else None)
        # timesteps and noise for the whole global batch, drawn identically on every rank
        t = self.diffusion.sample_timesteps(len(index), generator=self.generator)
        noise = x0.noise_like(self.generator)
        r, w = self.ctx.rank, self.ctx.world_size
        lo, hi = r * len(index) // w, (r + 1) * len(index) // w
        dev = self.device
        x0, noise = x0.slice(lo, hi), noise.slice(lo, hi)
        if dev.type != "cpu":
            x0, noise = _to(x0, dev), _to(noise, dev)
        cond = self.diffusion.condition_values(b)
        if cond is not None:  # each condition hidden independently: one model for every subset (CFG)
            cond = drop_conditions(cond, self.config.diffusion.condition_dropout, generator=self.generator)[lo:hi].to(dev)
        self.net.train()
        if self.fake is not None:  # distribution matching: the student's step, then the fake denoiser's
            return self._dmd_step(x0, cond, t[lo:hi].to(dev), noise)
        if self.teacher is not None:  # a few-step student: the teacher's two steps are its target
            from molediff.distill import distillation_loss

            loss = distillation_loss(self.diffusion, self.ddp or self.net, self.teacher, x0, self.config.distill_steps,
                                     generator=self.generator, cond=cond)["total"]
        else:
            loss = self.diffusion.training_losses(self.ddp or self.net, x0, t[lo:hi].to(dev), noise, cond=cond,
                                                  generator=self.generator)["total"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip)
        self.opt.step()
        self.ema.update(self.net)
        return float(loss.detach())

    def _dmd_step(self, x0: MolState, cond: torch.Tensor | None, t: torch.Tensor, noise: MolState) -> float:
        """One step of distribution matching (:func:`molediff.distill.dmd_generator_loss`) on molecules of
        the batch's sizes: the student moves its samples towards the teacher's distribution, then the fake
        denoiser learns the student's new samples by the ordinary training loss (the batch's timesteps and
        noise; ``distill_fake_updates`` > 1: as many updates, the later ones at fresh levels and noise), then the discriminator (``distill_gan`` > 0) tells the batch's molecules from them.
        Returns the student's loss."""
        from molediff.distill import discriminator_loss, dmd_generator_loss

        out = dmd_generator_loss(self.diffusion, self.ddp or self.net, self.teacher, self.fake, x0.graph,
                                 self.config.distill_steps, generator=self.generator, cond=cond, disc=self.disc,
                                 gan_weight=self.config.distill_gan, spacing=self.config.distill_spacing,
                                 keep_weight=self.config.distill_keep, keep_level=self.config.distill_keep_level)
        total = out["total"]
        if self.pairs:
            regression = self._regression(x0.num_graphs)
            total = total + self.config.distill_regression * regression
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip)
        self.opt.step()
        self.ema.update(self.net)
        self.fake.train()
        for k in range(self.config.distill_fake_updates):
            if k:  # a further update on the same samples at fresh levels and noise (distill_fake_updates)
                t = self.diffusion.sample_timesteps(out["sample"].num_graphs, generator=self.generator).to(t.device)
                noise = out["sample"].noise_like(self.generator)
            fake_loss = self.diffusion.training_losses(self.fake_ddp or self.fake, out["sample"], t, noise, cond=cond,
                                                       generator=self.generator)["total"]
            self.fake_opt.zero_grad(set_to_none=True)
            fake_loss.backward()
            torch.nn.utils.clip_grad_norm_(self.fake.parameters(), self.config.grad_clip)
            self.fake_opt.step()
        stats = {"dmd": float(out["dmd"])}
        if not torch.isnan(out["keep"]):  # the keep term ran at this step (one of the student's finishing steps)
            stats["keep"] = float(out["keep"])
        if self.pairs:
            stats["regression"] = float(regression.detach())
        if self.disc is not None:
            self.disc.train()
            d = discriminator_loss(self.diffusion, self.disc_ddp or self.disc, self.fake, x0, out["sample"], generator=self.generator)
            self.disc_opt.zero_grad(set_to_none=True)  # also drops what the student's loss left on its weights
            d["total"].backward()
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), self.config.grad_clip)
            self.disc_opt.step()
            stats.update(gan=float(out["gan"]), disc_loss=float(d["total"].detach()), disc_accuracy=float(d["accuracy"]))
        for k, v in stats.items():
            self._stats.setdefault(k, []).append(v)
        return float(total.detach())

    def _regression(self, n: int) -> torch.Tensor:
        """The regression term (:func:`molediff.distill.regression_loss`) on up to ``n`` valid pairs of one
        of this rank's chunks, drawn from the run's generator."""
        from molediff.distill import regression_loss
        from molediff.graph import MolGraph

        chunk = self.pairs[int(torch.randint(len(self.pairs), (1,), generator=self.generator))]
        ok = torch.nonzero(chunk["valid"]).flatten()
        pick = ok[torch.randperm(len(ok), generator=self.generator)[:n]].sort().values
        graph, atoms, pairs = MolGraph.from_ptr(chunk["ptr"]).select(pick)
        graph = graph.to(self.device)
        state = lambda node, pair: MolState(node[atoms].to(self.device), pair[pairs].to(self.device), graph, self.diffusion.parts)  # noqa: E731
        # the bare network: DDP takes one forward with gradient per step (the matching loss's); this term's
        # gradient joins it on the same parameters before their all-reduce
        return regression_loss(self.diffusion, self.net, state(chunk["z_node"], chunk["z_pair"]),
                               state(chunk["x_node"], chunk["x_pair"]), self.config.distill_steps, self.generator,
                               first=self.config.distill_regression_first, spacing=self.config.distill_spacing)

    def _teacher_pairs(self) -> list[dict[str, torch.Tensor]]:
        """The regression term's teacher pairs of this rank (:func:`molediff.distill.teacher_pairs`): chunk i
        of ``run_dir/teacher_pairs/`` belongs to rank i mod world; each missing one is drawn (from a
        generator seeded by the run's seed and i, sizes from the training histogram, the teacher's own
        steps) and saved as soon as it is made, so a stopped run continues where it was. Stops early, with
        the chunks it has, when a stop is requested."""
        from molediff.distill import PAIR_CHUNK, teacher_pairs
        from molediff.graph import MolGraph, ptr_from_counts

        c = self.config
        folder = self.run_dir / "teacher_pairs"
        folder.mkdir(exist_ok=True)
        count = math.ceil(c.distill_pairs / PAIR_CHUNK)
        if count < self.ctx.world_size:  # every rank sees the same numbers: all stop alike
            raise UserError(f"--distill-pairs {c.distill_pairs}: {count} chunk(s) of {PAIR_CHUNK} for {self.ctx.world_size} "
                            f"ranks; give each rank one at least (--distill-pairs ≥ {PAIR_CHUNK * self.ctx.world_size})")
        chunks = [i for i in range(count) if i % self.ctx.world_size == self.ctx.rank]
        missing = [i for i in chunks if not (folder / f"chunk_{i:04d}.pt").exists()]
        steps, out, started = self.teacher_steps, [], time.time()
        for done, i in enumerate(missing):
            if self._stop:
                break
            g = torch.Generator().manual_seed(c.seed * 1_000_003 + i)
            size = min(PAIR_CHUNK, c.distill_pairs - i * PAIR_CHUNK)
            graph = MolGraph.from_ptr(ptr_from_counts(sizes_from_histogram(self.histogram, size, g))).to(self.device)
            chunk = teacher_pairs(self.diffusion, self.teacher, graph, steps, g)
            atomic_torch_save(chunk, folder / f"chunk_{i:04d}.pt")
            if self.ctx.is_main:
                print(f"teacher pairs for the regression term: {done + 1} of {len(missing)} chunks of {PAIR_CHUNK} drawn "
                      f"({100 * float(chunk['valid'].float().mean()):.0f}% valid, {time.time() - started:.0f} s; the teacher's "
                      f"{steps} deterministic steps each)", file=sys.stderr, flush=True)
        for i in chunks:
            path = folder / f"chunk_{i:04d}.pt"
            if path.exists():
                out.append(torch.load(path, weights_only=True))
        return [chunk for chunk in out if bool(chunk["valid"].any())]

    def _request_stop(self, signum, frame) -> None:  # noqa: ARG002
        if self._stop:  # a second Ctrl-C stops at once, even inside a long evaluation
            raise KeyboardInterrupt
        self._stop = True
        if self.ctx.is_main:
            print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                  "(interrupt again to stop at once, without one)", file=sys.stderr, flush=True)

    def _install_stop_handlers(self) -> dict:
        """Ctrl-C / SIGTERM request a graceful stop: the handlers this run replaced (to restore). Only
        from the main thread (signal handlers cannot be set elsewhere: a run there stops by its limits),
        and a signal the process was started ignoring (``nohup``, a background job) stays ignored."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(s) is not signal.SIG_IGN:
                old[s] = signal.signal(s, self._request_stop)
        return old

    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        c = self.config
        main = self.ctx.is_main
        if c.clock not in ("wall", "cpu"):
            raise UserError(f"clock must be 'wall' or 'cpu', got {c.clock!r}")
        if main:
            self._open_log()
        old_handlers = self._install_stop_handlers()
        # "cpu" divides process CPU time by the thread count: a budget that contention from other
        # processes does not eat into (used by the recipe study for equal-budget comparisons)
        clock = time.time if c.clock == "wall" else (lambda: time.process_time() / torch.get_num_threads())
        start_clock = clock()
        start_elapsed = self.elapsed
        # the first checkpoint comes after one minute, so a run killed early loses little
        last_ckpt = time.time() - max(0.0, c.checkpoint_minutes - 1.0) * 60
        running, window_t, window_mols = [], time.time(), 0
        bar = tqdm(total=c.max_steps or None, initial=self.step, disable=not self.progress, unit="step", dynamic_ncols=True)
        last = None
        try:
            if c.distill_regression > 0 and self.pairs is None:
                # drawing the teacher's pairs is not training: off the budget clock, like evaluation
                before = clock()
                self.pairs = self._teacher_pairs()
                start_clock += clock() - before
                if not self.pairs and not self._stop:
                    raise UserError("no teacher pair passed the honest rule: the regression term has nothing to "
                                    "regress on (is the teacher trained? --distill-regression 0 trains without it)")
            while True:
                over = bool(c.max_steps and self.step >= c.max_steps) or bool(c.max_minutes and self.elapsed >= c.max_minutes * 60)
                # every rank stops at the same step, whichever rank saw the signal or the time limit
                if distributed.any_true(self._stop or over, self.ctx, self.device):
                    break
                epoch, index = self.sampler.batch(self.step)
                loss = self.train_step(index)
                if not math.isfinite(loss):
                    raise RuntimeError(f"loss became {loss} at step {self.step}; lower the learning rate")
                self.step += 1
                self.molecules_seen += len(index)
                self.elapsed = start_elapsed + (clock() - start_clock)
                running.append(loss)
                window_mols += len(index)
                bar.update(1)
                if not main:
                    continue
                if self.step % 50 == 0:
                    rate = window_mols / max(time.time() - window_t, 1e-9)
                    rec = {"event": "train", "step": self.step, "epoch": epoch, "loss": float(np.mean(running)),
                           "mol_per_s": round(rate, 1), "minutes": round(self.elapsed / 60, 2)}
                    rec.update({k: round(float(np.mean(v)), 4) for k, v in self._stats.items()})
                    self._stats = {}
                    self.log(rec)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", mol_s=f"{rate:.0f}", epoch=epoch)
                    running, window_t, window_mols = [], time.time(), 0
                if c.eval_every_steps and self.step % c.eval_every_steps == 0:
                    # evaluation (validation loss, sampling) is not training: keep it off the budget clock
                    before = clock()
                    last = self.evaluate()
                    start_clock += clock() - before
                    bar.write(_format_eval(last))
                if time.time() - last_ckpt >= c.checkpoint_minutes * 60:
                    self.save()
                    last_ckpt = time.time()
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        return self._finish(last)

    def _open_log(self) -> None:
        """Rank 0 at the start of a session: the run folder, its config, the inherited learning curve of a
        warm start, a changed learning rate, the distributed batch."""
        c = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        c.save_json(self.run_dir / "config.json")
        if self._inherited_curve and not (self.run_dir / LOG).exists():
            # the source model's learning curve opens this run's log, so the curve reads as one
            for rec in self._inherited_curve:
                self.log({"event": "eval", **rec, "inherited_from": c.init_from})
        if self._lr_before is not None and self._lr_before != c.lr:
            self.log({"event": "lr", "step": self.step, "from": self._lr_before, "to": c.lr})
            print(f"learning rate {self._lr_before:g} -> {c.lr:g} from step {self.step}")
        if self.ctx.enabled:
            print(f"distributed: {self.ctx.world_size} ranks × batch {c.batch_size} = effective batch {self.global_batch}, "
                  f"lr {c.lr:g} (not rescaled: pass --lr to change it)")

    def _finish(self, last: dict[str, Any] | None) -> dict[str, Any]:
        """The end of a session on every rank: the checkpoint, a final evaluation unless stopped by a
        signal; returns the last evaluation record with ``interrupted``."""
        stopped = distributed.any_true(self._stop, self.ctx, self.device)
        self._check_ranks_in_sync()
        if self.ctx.is_main:
            self.save()
            if not stopped and (last is None or last["step"] != self.step):
                last = self.evaluate()
                print(_format_eval(last))
            if stopped:
                print(f"stopped at step {self.step}; checkpoint saved to {self.run_dir / CHECKPOINT} (continue with --resume)")
        distributed.barrier(self.ctx)
        return {**(last or {}), "interrupted": stopped}

    def _check_ranks_in_sync(self) -> None:
        """Distributed runs: all ranks must hold identical weights (DDP's invariant); logged by rank 0."""
        if not self.ctx.enabled:
            return
        digests = distributed.gather_objects(state_dict_digest(self.net.state_dict()), self.ctx)
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks diverged: parameter digests differ across {self.ctx.world_size} ranks")
        if self.ctx.is_main:
            self.log({"event": "ranks_in_sync", "step": self.step, "world_size": self.ctx.world_size, "digest": digests[0]})


def _to(x: MolState, device: torch.device) -> MolState:
    return MolState(x.node.to(device), x.pair.to(device), x.graph.to(device), x.parts)


def _format_eval(rec: dict[str, Any]) -> str:
    parts = [f"step {rec['step']}", f"{rec['minutes']:.1f} min", f"val_loss {rec['val_loss']:.4f}"]
    for key in ("atom_stability", "molecule_stability", "validity", "model_atom_stability", "model_molecule_stability",
                "model_connected_validity"):
        if key in rec:
            parts.append(f"{key} {100 * rec[key]:.1f}%")
    if rec.get("model_bond_type_tv") is not None:
        parts.append(f"bond-type TV {rec['model_bond_type_tv']:.3f}")
    return "eval: " + ", ".join(parts)


def train(config: TrainConfig, run_dir: str | Path, resume: bool = False, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Train (or continue) a run in ``run_dir``; returns the last evaluation record.

    Under ``torchrun`` (WORLD_SIZE > 1) this joins the process group and trains with DDP.
    """
    ctx, dev = distributed.init(device)
    try:
        return Trainer(config, run_dir, resume=resume, device=dev, progress=progress, ctx=ctx).run()
    finally:
        distributed.finish(ctx)
