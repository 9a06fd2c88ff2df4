"""Typed configuration, saved as JSON next to every set of weights (never a pickled namespace)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from molediff.elements import CHARGES, KEKULE_BOND_ORDERS, QM9_ELEMENTS, Vocabulary
from molediff.errors import UserError


# ---------------------------------------------------------------------------- data defaults
#: The most atoms (hydrogens included) a training molecule may have: the default of ``molediff data
#: --max-atoms`` and the limit ``molediff train --data`` reads with; the network runs on all atom
#: pairs, so cost grows with atoms².
TRAINING_MAX_ATOMS = 200


# ---------------------------------------------------------------------------- sampling defaults
#: default number of reverse (DDIM) steps. 75 keeps the 100-step quality of the default model within
#: noise (1,000 molecules, defaults, seeds 0 and 1: honest molecule stability 99.4 / 99.7%, connected
#: validity 98.0 / 97.7%, lookup molecule stability 95.0 / 96.6%; 100 steps: 99.4 / 98.0 / 96.0) for 3/4
#: of the network evaluations; 60 steps falls below it (lookup 94.5% at seed 1), and DPM-Solver++ does
#: not beat DDIM on this model at equal steps (benchmarks/README.md, "Few-step sampling")
DEFAULT_STEPS = 75
#: requests of at least this many molecule-steps (molecules x reverse steps) compile the network unless
#: told otherwise (``molediff sample``; :meth:`molediff.sampling.MoleculeGenerator.compile_pays`): a
#: compiled step is ~25% cheaper on CPU, and this much work repays the warm-up (~7 s with inductor's
#: cache warm, up to ~30 s on a fresh machine)
COMPILE_MIN_MOLECULE_STEPS = 30_000
#: requests of at least this many molecule-steps, in two or more batches, sample in one worker process per core
#: unless told otherwise (``molediff sample --workers``): on an idle 2-core machine two single-thread workers
#: took 9.2 s for 1,000 qm9-fast molecules (10,000 molecule-steps) against 11.7 s for one process on two
#: threads, and 6.2 against 7.0 s for 500 (benchmarks/README.md, issue 38)
WORKERS_MIN_MOLECULE_STEPS = 5_000
#: the choices of ``molediff sample --precision``, the arithmetic of the network's matrix products while
#: sampling (:mod:`molediff.models.precision`); here so that ``--help`` needs no torch
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")
#: the keep term of distillation (molediff.distill.keep_loss) applies at the student's steps at or below this
#: level, as a fraction of T: its finishing steps (the "finish4" grid's, 0.052 T down to 0.012 T), not its
#: coarse ones (the last of 8 trailing steps is at 0.125 T, of 6 at 0.166 T)
KEEP_LEVEL = 0.06
#: how a few-step student learns from its teacher (molediff.distill): progressive distillation or distribution matching
DISTILL_METHODS: tuple[str, ...] = ("progressive", "dmd")
#: default DDIM stochasticity for molecules. η = 1 (fresh noise at every strided step, DDPM-like)
#: beats deterministic η = 0 at 100 steps: atom stability 86.3% vs 81.9%, validity 52.3% vs 45.0%,
#: connected 81.7% vs 66.0% (x0 model, 1 CPU-h, 300 samples); η = 0 leaves atoms stranded.
DEFAULT_ETA = 1.0
#: default scale of the fresh noise at each sampling step (1 = the model's own distribution). A small
#: model's errors compound under full noise; at 0.8 the bundled 3.4 CPU-h model goes from molecule
#: stability 32.6% to 41.3% and validity 69.0% to 76.9%, novelty 91.6% -> 87.6%, and its atom types
#: come closer to QM9's (total variation 0.039 -> 0.008); 1,000 samples, 100 steps (benchmarks/README.md
#: has the sweep)
DEFAULT_NOISE_SCALE = 0.8
#: default RePaint rounds per reverse step when growing molecules around a fragment. Measured on the
#: joint model (QM9 test molecules with their last 3 atoms to fill, 100 steps, 40 outputs): lookup
#: validity 37.5% with 1 round, 65% with 5 (benchmarks/README.md has the table)
DEFAULT_RESAMPLE = 5
#: accepted noise scales (checked by the API and, before any output is created, by the CLI)
MAX_NOISE_SCALE = 2.0
#: where a local restart begins (molediff.restarts), as a share of the T levels (0.4: 400 of 1000).
#: Chemistry is settled in the middle of the trajectory (a model restores bonds from t ≤ 200 and loses
#: them from t ≈ 500): lower levels redraw too little to change a ring, higher ones lose the context the
#: held atoms give (druglike v2, 300 molecules, six rounds: connected validity 78% -> 94.7% from 0.25,
#: 96.7% from 0.4, 88.0% from 0.6)
DEFAULT_RESTART_LEVEL = 0.4
#: what a local restart draws again (molediff.restarts): the failing atoms' "region" from DEFAULT_RESTART_LEVEL
#: with the rest of the molecule's graph held, or the whole molecule from pure "noise" (a fresh draw of its
#: size: a few-step student's failures are a layout decided in its first steps, which a region cannot undo)
RESTART_FROM: tuple[str, ...] = ("region", "noise")


# ---------------------------------------------------------------------------- networks
@dataclass
class EGNNConfig:
    """The parameter block of the "egnn" architecture (:class:`molediff.models.egnn.EGNN`), saved as a
    config's ``model`` with ``"arch": "egnn"``."""

    arch: ClassVar[str] = "egnn"
    #: one line of ``molediff train --help`` per field (as ``--model-<field>``)
    HELP: ClassVar[dict[str, str]] = {
        "hidden": "EGNN width H (features and messages)",
        "layers": "number of EGNN layers (with --init-from: more than its model's appends layers that start as the identity, "
                  "so the deeper network first computes what that model did)",
        "norm": "constant Z dividing summed messages and position updates",
        "coord_range": "bound (Å) of the total position update across layers, through tanh",
        "pair_hidden": "width of the per-pair state of a model that generates bonds",
    }
    #: fields a warm start (``--init-from``) keeps from the model it starts from unless asked otherwise,
    #: and may set for the parts it adds (the pair state of a model that adds bonds, layers appended to
    #: a deeper network); the block's other fields are fixed by that model
    #: (:func:`molediff.runstate.model_shape`)
    SHAPE: ClassVar[tuple[str, ...]] = ("pair_hidden", "layers")

    hidden: int = 64
    layers: int = 4
    norm: float = 1.0
    coord_range: float = 15.0
    pair_hidden: int = 32  # width of the per-pair state, used when the model generates bonds

    def checks(self, diffusion: "DiffusionConfig") -> list[tuple[bool, str]]:
        """``(ok, message)`` per rule of this block (:meth:`TrainConfig.validate` raises the first failing one)."""
        return [(self.hidden >= 1 and self.layers >= 1, "--model-hidden and --model-layers must be ≥ 1"),
                (self.pair_hidden >= 1 or not diffusion.bonds, "--model-pair-hidden must be ≥ 1 for a model with bonds")]

    def warm_start(self, source: "EGNNConfig") -> "EGNNConfig":
        """This block for a warm start from a model of block ``source``: more layers than the source are
        appended to it and start as the identity (:func:`molediff.models.egnn.transfer_weights`), so the
        total position bound grows with them and every layer keeps the source's per-layer bound (the
        network first computes exactly what the source did); fewer layers are refused."""
        if self.layers == source.layers:
            return self
        if self.layers < source.layers:
            raise UserError(f"--model-layers {self.layers}: the model it starts from has {source.layers} layers; a warm start "
                            "can append layers (they start as the identity), not remove them")
        return dataclasses.replace(self, coord_range=source.coord_range * self.layers / source.layers)


#: every architecture's parameter block by name (its network: :data:`molediff.models.ARCHITECTURES`). A
#: saved config names it as ``model.arch``; one saved before that field existed holds an EGNN's
MODEL_CONFIGS: dict[str, type] = {"egnn": EGNNConfig}
#: the model block of a new config: the default architecture's (the EGNN's; the one architecture, so
#: there is no --model-arch option)
ModelConfig = EGNNConfig


@dataclass
class DiffusionConfig:
    """What is diffused (the parts of a molecule), at which scale, and how the network is trained.

    - ``parametrization``: "eps" (the network predicts ε) or "x0" (it predicts the clean molecule).
    - Parts: positions (Å) and atom types (one-hot × ``feature_scale``) always; formal charges
      (−1, 0, +1 one-hot × ``charge_scale``) when ``charges``; per unordered atom pair the bond type
      (none, single, double, triple; Kekulé form; one-hot × ``bond_scale``) when ``bonds``.
    - Losses: positions by ε-MSE (through the parametrisation); atom types by ε-MSE (``atom_loss``
      "mse") or cross-entropy ("ce"); charges and bonds by cross-entropy of the network's logits, whose
      softmax × scale is the x̂_0 of that part (the posterior mean of a one-hot). ``*_weight`` weigh the
      cross-entropy terms against the ε-MSE.
    """

    schedule: str = "polynomial_2"
    timesteps: int = 1000
    feature_scale: float = 0.25
    # x0-prediction won the fixed-budget recipe study (benchmarks/README.md): at 8 CPU-minutes it
    # scored atom stability 63.7% vs 39.3% for ε-prediction, validity 29.8% vs 20.2% (100 steps)
    parametrization: str = "x0"
    charges: bool = False
    bonds: bool = False
    charge_scale: float = 0.25
    # 1.0 (JODO's scale) beat 0.5 on every figure at equal CPU time (benchmarks/README.md, recipe table)
    bond_scale: float = 1.0
    atom_loss: str = "mse"
    atom_weight: float = 1.0
    charge_weight: float = 1.0
    bond_weight: float = 1.0
    # self-conditioning (Chen et al. 2022, "Analog Bits"): the network also reads its own estimate of
    # the clean molecule (atom and charge parts, bond part, distances of its estimated geometry); in
    # training, half of the batches get that estimate from a first no-gradient pass, in sampling the
    # previous step's estimate
    self_condition: bool = False
    # valence feedback (needs self_condition and bonds): the network also reads, per atom, what the
    # decoding rules say of its previous estimate: the atom's aromatic system has no Kekulé form, and the
    # atom's valence is not an allowed one (molediff.chem.kekule.valence_feedback). A global constraint the
    # per-pair bond head cannot see becomes a local input it can correct at the next step
    valence_feedback: bool = False
    # ring feedback (needs self_condition and bonds): the network also reads, per atom, the smallest ring
    # it lies in in the bond graph of its previous estimate (3, 4, 5, 6, 7 or more; molediff.chem.kekule.
    # ring_feedback): ring size, a property of whole cycles the per-pair bond head cannot see, as a local input
    ring_feedback: bool = False
    # property conditioning (molediff.conditioning): the properties the model reads, each dropped
    # ("not given") independently with condition_dropout in training, so one model samples with any
    # subset of them or none (classifier-free guidance); condition_stats {name: [mean, std, min, max]}
    # on the training data is filled when training starts (the network reads standardised values)
    conditions: list[str] = field(default_factory=list)
    condition_dropout: float = 0.5
    condition_stats: dict[str, list[float]] = field(default_factory=dict)
    # fragment conditioning (molediff.inpainting): above 0, the network reads a per-atom "fixed" flag and
    # this fraction of training molecules has a random piece held clean (draws.random_fragments),
    # so the model learns to grow a given fragment; the rest train it as an unconditional model
    fragments: float = 0.0
    # the model's vocabulary (molediff.elements.Vocabulary): the elements of its atom-type one-hot, the
    # formal charges of its charge one-hot and the bond orders of its bond one-hot. Empty elements /
    # charges: taken from the training data when training starts (a saved model always has them; a
    # config saved before these fields existed loads as QM9's vocabulary)
    elements: list[str] = field(default_factory=list)
    formal_charges: list[int] = field(default_factory=list)
    bond_orders: list[int] = field(default_factory=lambda: list(KEKULE_BOND_ORDERS))
    # heavy-atom model: hydrogens are not atoms of the state; each heavy atom carries a generated count
    # of attached hydrogens 0 .. max_hydrogens (a categorical part trained by cross-entropy), from which
    # the hydrogens are placed after sampling; 0 = hydrogens are atoms (QM9's explicit-H models)
    max_hydrogens: int = 0
    hydrogen_scale: float = 0.25
    hydrogen_weight: float = 1.0

    @property
    def vocabulary(self) -> Vocabulary:
        """The model's :class:`~molediff.elements.Vocabulary` (QM9's where elements were never set)."""
        elements = tuple(self.elements) or tuple(e for e in QM9_ELEMENTS if not (self.max_hydrogens and e == "H"))
        return Vocabulary(elements, tuple(self.formal_charges) or CHARGES, tuple(self.bond_orders), self.max_hydrogens)


#: fields of earlier versions' configs that named recipe-study variants since removed from the core;
#: a saved config may carry them at the value that means "not used" (the bundled model does)
_RETIRED = {
    "model": {"distance_features": ("squared",), "num_rbf": None},
    "diffusion": {"loss_weighting": ("uniform",), "min_snr_gamma": None, "time_sampling": ("uniform",), "logsnr_mean": None,
                  "logsnr_std": None, "lognormal_mix": None, "sigma_data_pos": None, "sigma_data_feat": None},
}


#: one line per option of ``molediff train --help`` ("model." / "diffusion." for the nested configs; the
#: model block's lines are its architecture's own, ``ModelConfig.HELP``)
HELP: dict[str, str] = {
    **{f"model.{name}": text for name, text in ModelConfig.HELP.items()},
    "diffusion.schedule": "noise schedule: linear, cosine or polynomial_P (EDM's polynomial_2)",
    "diffusion.timesteps": "number of diffusion steps T",
    "diffusion.feature_scale": "atom types enter as one-hot × this scale (EDM: 0.25)",
    "diffusion.parametrization": "what the network predicts: 'eps' (the noise) or 'x0' (the clean molecule)",
    "diffusion.charges": "also generate formal charges (−1, 0, +1) per atom",
    "diffusion.bonds": "also generate the bond type (none/single/double/triple) of every atom pair: the joint model",
    "diffusion.charge_scale": "formal charges enter as one-hot × this scale",
    "diffusion.bond_scale": "bond types enter as one-hot × this scale (1.0 measured best; the bundled joint models use it)",
    "diffusion.atom_loss": "atom-type loss: 'mse' (ε-MSE like positions) or 'ce' (cross-entropy)",
    "diffusion.atom_weight": "weight of the atom-type cross-entropy (atom_loss 'ce')",
    "diffusion.charge_weight": "weight of the formal-charge cross-entropy",
    "diffusion.bond_weight": "weight of the bond-type cross-entropy",
    "diffusion.self_condition": "the network also reads its previous estimate of the clean molecule (self-conditioning; "
                                "needs x0 parametrisation; a warm start may add it: the new inputs start at zero)",
    "diffusion.valence_feedback": "the network also reads which atoms of its previous estimate break the decoding rules "
                                  "(aromatic system without a Kekulé form; valence not allowed); needs self-conditioning "
                                  "and bonds; a warm start may add it: the new inputs start at zero",
    "diffusion.ring_feedback": "the network also reads the smallest ring each atom lies in (3, 4, 5, 6, 7+) in the bond graph "
                               "of its previous estimate; needs self-conditioning and bonds; a warm start may add it: the "
                               "new inputs start at zero",
    "diffusion.conditions": "comma-separated properties to condition on: QM9 ones (alpha, gap, homo, lumo, mu, cv) or drug-like ones (qed, logp, mw, tpsa, hbd, hba, rotb, arom); empty: unconditional",
    "diffusion.condition_stats": "not an option: mean, std, min and max of each condition on the training data, filled when training starts",
    "diffusion.fragments": "fraction of training molecules that get a random fragment held fixed (0: none); above 0 the "
                           "model reads which atoms are fixed and grows fragments given to 'molediff sample --fragment'",
    "diffusion.elements": "comma-separated elements of the model's vocabulary (e.g. C,N,O,F,S,Cl,Br); empty: those of the "
                          "training data (H left out for a heavy-atom model)",
    "diffusion.formal_charges": "comma-separated formal charges the model generates; empty: -1,0,1 and any other the data holds",
    "diffusion.bond_orders": "bond types of the bond one-hot: 0,1,2,3 (none, single, double, triple: Kekulé form, the default) "
                             "or 0,1,2,3,4 (4 = aromatic, kekulized after sampling; file data only)",
    "diffusion.max_hydrogens": "heavy-atom model: hydrogens are removed from the training molecules and the model generates "
                               "each heavy atom's count of attached hydrogens, 0 .. this (4 covers CH4 and NH4+); after "
                               "sampling they are placed from the geometry. 0: hydrogens are atoms (explicit H)",
    "diffusion.hydrogen_scale": "hydrogen counts enter as one-hot × this scale",
    "diffusion.hydrogen_weight": "weight of the hydrogen-count cross-entropy",
    "diffusion.condition_dropout": "probability that a condition is hidden from the network in a training example (each independently)",
    "data": "'qm9' (the committed train split), 'qm9:train-a' / 'qm9:train-b' (its two halves, for the conditioning "
            "benchmark) or a path to SDF/XYZ files or folders",
    "batch_size": "molecules per optimiser step (per rank under torchrun)",
    "batch_pairs": "atom pairs per optimiser step instead of a molecule count (0: use --batch-size): the network's cost and "
                   "memory grow with pairs, n(n-1)/2 per molecule, so this bounds them for data of mixed sizes (e.g. 20,000 "
                   "≈ 64 drug-sized heavy-atom molecules); per rank under torchrun",
    "lr": "AdamW learning rate",
    "weight_decay": "AdamW weight decay",
    "ema_decay": "decay of the exponential moving average of the weights (the weights that are sampled)",
    "grad_clip": "gradient norm clipping",
    "seed": "seed of initialisation, data order, timesteps and noise",
    "max_steps": "stop after this many optimiser steps (0: no limit)",
    "max_minutes": "stop after this many training minutes (0: no limit; evaluation time not counted)",
    "clock": "what --max-minutes counts: 'wall' seconds, or 'cpu' seconds of this process per thread",
    "threads": "torch CPU threads (0: torch's default)",
    "compile": "compile the network with torch.compile (inductor; needs a C++ compiler on CPU): 1.2-1.8x faster "
               "training steps on a 2-core CPU after a one-minute warm-up; results equal eager ones up to float rounding",
    "checkpoint_minutes": "write checkpoint.pt and ema_model.pt this often (wall minutes)",
    "eval_every_steps": "validation loss and a sampling check every this many steps (0: only at the end)",
    "eval_samples": "molecules sampled at each evaluation (0: no sampling check)",
    "eval_sample_steps": "reverse steps of the evaluation's sampling",
    "valid_molecules": "validation molecules used for the validation loss",
    "init_from": "start from a model file's weights (e.g. molediff/pretrained/qm9_ema.pt); its architecture is kept",
    "distill_from": "train a few-step student of this model file by progressive distillation (it starts as a copy of "
                    "it: --init-from is implied); the student's file samples with --distill-steps deterministic DDIM steps",
    "distill_steps": "the student's steps (each is two of the teacher's: distil a 75-step model with 38, that student "
                     "with 19, ...)",
    "distill_method": "how the student learns: 'progressive' (one deterministic step for two of the teacher's; the student "
                      "samples at eta 0, bound to the teacher's deterministic path) or 'dmd' (distribution matching: the "
                      "student's own stochastic chain is pushed towards the teacher's distribution by the difference of the "
                      "teacher's and a second, online-trained denoiser's estimates; it samples at eta 1, in any steps; "
                      "experimental, see benchmarks/README.md)",
    "distill_gan": "with distribution matching: weight of an adversarial term (DMD2) in the student's loss: a "
                   "discriminator head on the fake denoiser's features learns to tell noised training molecules from "
                   "noised student samples and the student learns to fool it (the one term that reads training "
                   "molecules: what the matching direction cannot see or drifts from, e.g. a sample in two pieces, a "
                   "surplus of one bond type); 0: none",
    "distill_regression": "with distribution matching: weight of DMD's regression term in the student's loss: the run "
                          "first draws --distill-pairs noises and the teacher's deterministic endpoint for each (saved in "
                          "the run directory as they are made; resumable), then each step regresses the student's "
                          "deterministic chain from such a noise on the teacher's endpoint (it ties the student's global "
                          "layout, e.g. a molecule in one piece, to the teacher's); 0: none",
    "distill_regression_first": "with --distill-regression: regress only the student's first estimate (from the pair's "
                                "pure noise, where a molecule's layout, one piece or two, is decided), leaving its later, "
                                "stochastic steps to the matching; off: a random step of its deterministic chain, which "
                                "pulls those steps towards a mean (benchmarks/README.md)",
    "distill_spacing": "the student's grid, as molediff sample --spacing: 'trailing' (evenly spaced steps), 'finish' "
                       "(trailing for all but the last two steps, which sit where 75 trailing steps end, t = 26 and 12 "
                       "of 1000: the student's own finishing steps, for exact bond lengths) or 'finish4' (the last four "
                       "there: t = 52, 39, 26, 12); its file samples on it",
    "distill_keep": "with distribution matching: weight of a keep term: at the student's low-noise steps (its "
                    "finishing steps) its estimate is regressed on the teacher's estimate of the same state, so that "
                    "it finishes its molecules as the teacher would; 0: none",
    "distill_keep_level": "with --distill-keep: the term acts at the student's steps at or below this level, a fraction of "
                          f"T: {KEEP_LEVEL:g} reaches the finishing steps of the finish grids only, a higher level its "
                          "coarse steps too (0.35: t = 332 and 166 of finish4), where a drug-like molecule's rings are decided",
    "distill_fake_updates": "with distribution matching: updates of the online (fake) denoiser per student update, each "
                            "on the student's latest samples at fresh noise levels: a fake denoiser that lags the "
                            "student biases the matching direction (DMD2 uses 5; a fresh student takes 1)",
    "distill_pairs": "with --distill-regression: how many teacher pairs to draw (the teacher's full sampling each, "
                     "split over the ranks; only those the honest rule passes are regressed on)",
}

@dataclass
class TrainConfig:
    """A training run on QM9 (or the user's molecules). Saved with every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)  # the network's parameter block (its architecture's)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: str = "qm9"  # "qm9" or a path to SDF/XYZ file(s) / folder
    batch_size: int = 64
    batch_pairs: int = 0  # > 0: batches hold this many atom pairs (per rank) instead of batch_size molecules
    lr: float = 5e-4
    weight_decay: float = 1e-12
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    max_steps: int = 0  # 0 = no step limit
    max_minutes: float = 0.0  # 0 = no time limit
    clock: str = "wall"  # what max_minutes counts: "wall" seconds, or this process's "cpu" seconds / threads
    threads: int = 0  # torch threads; 0 = torch's default
    compile: bool = False  # torch.compile the network (speed only; may change on --resume)
    checkpoint_minutes: float = 5.0
    eval_every_steps: int = 2000  # validation loss + a small sampling check; 0 = only at the end
    eval_samples: int = 100
    eval_sample_steps: int = 100
    valid_molecules: int = 2000  # validation subset size for the loss
    # a model file (EMA weights, e.g. the bundled model) to start from; its architecture and recipe are
    # kept, its step, training time and molecules seen continue; the optimiser starts afresh
    init_from: str = ""
    # progressive distillation (molediff.distill): the teacher's model file and the student's step count;
    # the student starts from the teacher's weights and samples with DDIM at eta 0 in distill_steps steps
    distill_from: str = ""
    distill_steps: int = 0
    # how the student learns (DISTILL_METHODS): "progressive" (molediff.distill.distillation_loss; samples at
    # eta 0) or "dmd", distribution matching with a second, online-trained denoiser (samples at eta 1)
    distill_method: str = "progressive"
    # distribution matching's adversarial term (molediff.distill.Discriminator, on the fake's features): its weight in the student's
    # loss, 0 for none
    distill_gan: float = 0.0
    # distribution matching's regression term (molediff.distill.regression_loss): its weight, and how many
    # teacher pairs (noise -> the teacher's deterministic endpoint) the run draws first
    distill_regression: float = 0.0
    distill_pairs: int = 2000
    # the regression term on the student's first estimate only (from the pair's pure noise), not on a
    # random step of its deterministic chain
    distill_regression_first: bool = False
    # the student's grid (SPACINGS of molediff.diffusion.sampler_table): where its steps go, in training and
    # in its file's sampling; "finish" puts its last two at the teacher's finishing levels
    distill_spacing: str = "trailing"
    # distribution matching's keep term (molediff.distill.keep_loss): its weight, 0 for none
    distill_keep: float = 0.0
    # the level (a fraction of T) at and below which the keep term acts: the finishing steps unless told
    distill_keep_level: float = KEEP_LEVEL
    # distribution matching: the fake denoiser's updates per student update
    distill_fake_updates: int = 1

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = {"arch": self.model.arch, **d["model"]}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        parts = {}
        arch = (d.get("model") or {}).get("arch", "egnn")  # configs saved before "arch" hold an EGNN's
        model_config = MODEL_CONFIGS.get(arch)
        if model_config is None:
            raise UserError(f"config: model.arch {arch!r} is not a network this molediff has; it has {', '.join(MODEL_CONFIGS)}")
        for part in ("model", "diffusion"):
            sub = dict(d.pop(part, {}))
            if part == "model":
                sub.pop("arch", None)
            for name, neutral in _RETIRED[part].items():
                if name in sub:
                    value = sub.pop(name)
                    if neutral is not None and value not in neutral:
                        raise UserError(f"config: {part}.{name} = {value!r} names a recipe this molediff no longer has "
                                        f"(only {neutral[0]!r} is supported)")
            parts[part] = sub
        unknown = [f"{prefix}{k}" for prefix, given, kind in (("model.", parts["model"], model_config),
                                                              ("diffusion.", parts["diffusion"], DiffusionConfig), ("", d, cls))
                   for k in given if k not in {f.name for f in dataclasses.fields(kind)}]
        if unknown:
            from molediff._version import __version__

            raise UserError(f"the config has unknown fields: {', '.join(unknown)} (a typo, or a file written by a newer "
                            f"molediff than this {__version__}: upgrade molediff to use it)")
        try:
            return cls(model=model_config(**parts["model"]), diffusion=DiffusionConfig(**parts["diffusion"]), **d)
        except TypeError as exc:
            raise UserError(f"config has an unknown or missing field: {exc}") from None

    def validate(self) -> "TrainConfig":
        """Check every value (the one place that does); raises :class:`UserError` naming the option."""
        from molediff.diffusion.sampler_table import SPACINGS

        m, dcfg = self.model, self.diffusion
        checks = m.checks(dcfg) + [
            (dcfg.parametrization in ("eps", "x0"), f"--diffusion-parametrization must be 'eps' or 'x0', got {dcfg.parametrization!r}"),
            (dcfg.atom_loss in ("mse", "ce"), f"--diffusion-atom-loss must be 'mse' or 'ce', got {dcfg.atom_loss!r}"),
            (dcfg.parametrization == "x0" or (dcfg.atom_loss == "mse" and not dcfg.charges and not dcfg.bonds),
             "cross-entropy parts (charges, bonds, --diffusion-atom-loss ce) need --diffusion-parametrization x0"),
            (dcfg.parametrization == "x0" or not dcfg.self_condition, "--diffusion-self-condition needs --diffusion-parametrization x0"),
            (not dcfg.valence_feedback or (dcfg.self_condition and dcfg.bonds),
             "--diffusion-valence-feedback needs --diffusion-self-condition and --diffusion-bonds"),
            (not dcfg.ring_feedback or (dcfg.self_condition and dcfg.bonds),
             "--diffusion-ring-feedback needs --diffusion-self-condition and --diffusion-bonds"),
            (0 <= dcfg.fragments <= 1, f"--diffusion-fragments must be in [0, 1], got {dcfg.fragments}"),
            (0 <= dcfg.condition_dropout <= 1, f"--diffusion-condition-dropout must be in [0, 1], got {dcfg.condition_dropout}"),
            (not dcfg.conditions or (self.data.split(":")[0] == "qm9") == (_condition_family(dcfg.conditions) == "qm9"),
             "--diffusion-conditions: QM9 properties need QM9 data (--data qm9 or qm9:train-b), drug-like properties "
             "(computed with RDKit from each molecule) need molecule files"),
            (self.data.split(":")[0] != "qm9" or self.data in ("qm9", "qm9:train-a", "qm9:train-b"),
             f"--data {self.data!r}: QM9 data is 'qm9', 'qm9:train-a' or 'qm9:train-b'"),
            (dcfg.timesteps >= 1, "--diffusion-timesteps must be ≥ 1"),
            (dcfg.max_hydrogens == 0 or dcfg.bonds, "a heavy-atom model (--diffusion-max-hydrogens) must generate bonds "
             "(--diffusion-bonds): its hydrogens are placed along them"),
            (dcfg.hydrogen_scale > 0 and dcfg.hydrogen_weight >= 0, "hydrogen scale must be > 0 and its weight ≥ 0"),
            (min(dcfg.feature_scale, dcfg.charge_scale, dcfg.bond_scale) > 0, "part scales must be > 0"),
            (min(dcfg.atom_weight, dcfg.charge_weight, dcfg.bond_weight) >= 0, "loss weights must be ≥ 0"),
            (self.batch_size >= 1, f"--batch-size must be ≥ 1, got {self.batch_size}"),
            (not self.distill_from or self.distill_steps >= 1, "--distill-from needs --distill-steps N (the student's steps, ≥ 1)"),
            (not self.distill_steps or self.distill_from, "--distill-steps applies with --distill-from TEACHER"),
            (not self.distill_from or dcfg.parametrization == "x0", "distillation needs an x0-parametrised teacher"),
            (self.distill_method in DISTILL_METHODS,
             f"--distill-method must be one of {', '.join(DISTILL_METHODS)}, got {self.distill_method!r}"),
            (self.distill_gan >= 0 and (not self.distill_gan or self.distill_method == "dmd"),
             "--distill-gan is a non-negative weight, used with --distill-method dmd"),
            (self.distill_regression >= 0 and (not self.distill_regression or self.distill_method == "dmd"),
             "--distill-regression is a non-negative weight, used with --distill-method dmd"),
            (not self.distill_regression or not dcfg.conditions,
             "--distill-regression: the teacher's pairs are drawn unconditionally; not for a conditional model"),
            (self.distill_regression or not self.distill_regression_first,
             "--distill-regression-first needs --distill-regression W > 0"),
            (self.distill_spacing in SPACINGS,
             f"--distill-spacing must be one of {', '.join(SPACINGS)}, got {self.distill_spacing!r}"),
            (self.distill_spacing == "trailing" or self.distill_method == "dmd",
             "--distill-spacing applies to --distill-method dmd (a progressive student's grid halves its teacher's)"),
            (0 < self.distill_keep_level <= 1, f"--distill-keep-level must be in (0, 1], got {self.distill_keep_level}"),
            (self.distill_fake_updates >= 1 and (self.distill_fake_updates == 1 or self.distill_method == "dmd"),
             f"--distill-fake-updates must be ≥ 1, used with --distill-method dmd, got {self.distill_fake_updates}"),
            (self.distill_keep or self.distill_keep_level == KEEP_LEVEL, "--distill-keep-level applies with --distill-keep W"),
            (self.distill_keep >= 0 and (not self.distill_keep or self.distill_method == "dmd"),
             "--distill-keep is a non-negative weight, used with --distill-method dmd"),
            (not self.distill_regression or self.distill_pairs >= 1, f"--distill-pairs must be ≥ 1, got {self.distill_pairs}"),
            (self.distill_method == "progressive" or self.distill_from, "--distill-method dmd needs --distill-from TEACHER"),
            (self.batch_pairs >= 0, f"--batch-pairs must be ≥ 0, got {self.batch_pairs}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (0 <= self.ema_decay < 1, f"--ema-decay must be in [0, 1), got {self.ema_decay}"),
            (self.max_steps >= 0 and self.max_minutes >= 0, "--max-steps and --max-minutes must be ≥ 0"),
            (self.clock in ("wall", "cpu"), f"--clock must be 'wall' or 'cpu', got {self.clock!r}"),
            (self.checkpoint_minutes > 0, "--checkpoint-minutes must be > 0"),
            (self.eval_every_steps >= 0 and self.eval_samples >= 0 and self.eval_sample_steps >= 1,
             "evaluation cadence and sizes must be ≥ 0 (sample steps ≥ 1)"),
            (self.seed >= 0, f"--seed must be ≥ 0, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        from molediff.conditioning import check_names

        check_names(dcfg.conditions)
        try:
            dcfg.vocabulary  # noqa: B018 - checks the vocabulary fields
        except ValueError as exc:
            raise UserError(f"vocabulary: {exc}") from None
        try:
            from molediff.diffusion.schedule import NoiseSchedule

            schedule = NoiseSchedule.from_name(dcfg.schedule, dcfg.timesteps)
        except ValueError as exc:
            raise UserError(f"--diffusion-schedule: {exc}") from None
        if self.distill_steps and self.distill_method == "dmd":
            from molediff.diffusion.sampler_table import FINISH_GRIDS

            try:
                grid = schedule.set_timesteps(self.distill_steps, self.distill_spacing)
            except ValueError as exc:
                raise UserError(f"--distill-spacing {self.distill_spacing}: {exc}") from None
            if self.distill_keep and int(grid.min()) > self.distill_keep_level * dcfg.timesteps:
                raise UserError(f"--distill-keep acts at the student's steps at or below t = {self.distill_keep_level * dcfg.timesteps:g}, "
                                f"and its {self.distill_steps} {self.distill_spacing} steps end at t = {int(grid.min())}: "
                                f"use --distill-spacing {' or '.join(FINISH_GRIDS)}")
        return self

    def save_json(self, path: str | Path) -> None:
        from molediff.atomic import atomic_write

        atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read config {path}: {exc}") from None


#: the models shipped in the package, by name (files under molediff/pretrained/, each with its card); here,
#: in a module without torch, so that `molediff sample --model` takes its choices from it
BUNDLED_MODELS: dict[str, str] = {
    "qm9": "qm9_ema.pt",  # atoms-only EGNN (bonds perceived by the lookup rule); the default until 2026-11-24
    "qm9-joint": "qm9_joint_ema.pt",  # the default: generates bonds and formal charges with the geometry
    "qm9-cond": "qm9_cond_ema.pt",  # the joint model conditioned on six QM9 properties (classifier-free guidance)
    "qm9-frag": "qm9_frag_ema.pt",  # the joint model trained to grow given fragments (reads which atoms are fixed)
    # drug-like (MOSES-3D): a heavy-atom joint model with generated hydrogen counts (hydrogens placed on
    # sampling); it passed the drug-like shipping floor on 2026-12-02 (its card; until then "druglike-preview")
    "druglike": "druglike_ema.pt",
    # druglike fine-tuned on eight RDKit properties (classifier-free guidance), carrying a property model that
    # steers each molecule towards its targets, and restarts that redraw molecules outside an asked range or band
    "druglike-cond": "druglike_cond_ema.pt",
    # a few-step student of qm9-joint (distribution matching, 10 steps, the last four finishing its geometry) whose
    # restarts draw failing molecules again from noise: ~11.8 network evaluations per molecule
    "qm9-fast": "qm9_fast_ema.pt",
}


def _condition_family(names: list[str]) -> str | None:
    """Which property table a model's conditions come from (molediff.conditioning.condition_family)."""
    from molediff.conditioning import condition_family

    return condition_family(names)
