"""Typed configuration, saved as JSON next to every set of weights (never a pickled namespace)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from molediff.errors import UserError


@dataclass
class ModelConfig:
    """The EGNN noise predictor (see :class:`molediff.models.egnn.EGNN`)."""

    hidden: int = 64
    layers: int = 4
    distance_features: str = "squared"  # "squared" (EDM) or "rbf"
    num_rbf: int = 16
    norm: float = 1.0
    coord_range: float = 15.0


@dataclass
class DiffusionConfig:
    """How molecules are diffused and how the network's output becomes a prediction.

    - ``parametrization``: "eps" (network predicts ε), "x0" (predicts the clean molecule) or
      "precond" (Karras et al.'s preconditioned denoiser: x̂0 = c_skip·x_t + c_out·F(c_in·x_t)).
    - ``loss_weighting``: "uniform" (ε-MSE, DDPM's L_simple), "min_snr" (ε-MSE × min(1, γ/SNR)),
      "karras" (ε-MSE × (1 + 1/(SNR σ_data²)), i.e. unit weight on the preconditioned target).
    - ``time_sampling``: "uniform" over t, or "lognormal": log-SNR ~ N(mean, std) on the schedule's grid,
      for a fraction ``lognormal_mix`` of the draws (the rest uniform over t, so every noise level is
      still trained: a pure log-normal centred on the bond-deciding levels starves the high noise levels
      where a molecule's global shape forms).
    - ``sigma_data_pos`` / ``sigma_data_feat``: data standard deviations used by "precond"/"karras"
      (QM9 centred positions ≈ 1.5 Å per coordinate; one-hot × scale features ≈ 0.4 × scale).
    """

    schedule: str = "polynomial_2"
    timesteps: int = 1000
    feature_scale: float = 0.25
    # x0-prediction won the fixed-budget recipe study (benchmarks/README.md): at 8 CPU-minutes it
    # scored atom stability 63.7% vs 39.3% for ε-prediction, validity 29.8% vs 20.2% (100 steps)
    parametrization: str = "x0"
    loss_weighting: str = "uniform"
    min_snr_gamma: float = 5.0
    time_sampling: str = "uniform"
    logsnr_mean: float = 1.0
    logsnr_std: float = 2.5
    lognormal_mix: float = 1.0
    sigma_data_pos: float = 1.5
    sigma_data_feat: float = 0.1


#: one line per option of ``molediff train --help`` ("model." / "diffusion." for the nested configs)
HELP: dict[str, str] = {
    "model.hidden": "EGNN width H (features and messages)",
    "model.layers": "number of EGNN layers",
    "model.distance_features": "how messages see distances: 'squared' (d², EDM) or 'rbf' (Gaussian radial basis)",
    "model.num_rbf": "radial basis size when distance features are 'rbf'",
    "model.norm": "constant Z dividing summed messages and position updates",
    "model.coord_range": "bound (Å) of the total position update across layers, through tanh",
    "diffusion.schedule": "noise schedule: linear, cosine or polynomial_P (EDM's polynomial_2)",
    "diffusion.timesteps": "number of diffusion steps T",
    "diffusion.feature_scale": "atom types enter as one-hot × this scale (EDM: 0.25)",
    "diffusion.parametrization": "what the network predicts: 'eps', 'x0' (the clean molecule) or 'precond' (Karras)",
    "diffusion.loss_weighting": "weight of noise levels in the ε-MSE: 'uniform', 'min_snr' or 'karras'",
    "diffusion.min_snr_gamma": "γ of the min-SNR weighting",
    "diffusion.time_sampling": "training timesteps: 'uniform' over t, or 'lognormal' over log-SNR",
    "diffusion.logsnr_mean": "mean of the log-normal time sampling (log-SNR; 4 ≈ bond-deciding noise, σ ≈ 0.2 Å)",
    "diffusion.logsnr_std": "standard deviation of the log-normal time sampling",
    "diffusion.lognormal_mix": "fraction of timesteps drawn from the log-normal (the rest uniform)",
    "diffusion.sigma_data_pos": "data standard deviation of positions (Å) for 'precond' / 'karras'",
    "diffusion.sigma_data_feat": "data standard deviation of atom-type features for 'precond' / 'karras'",
    "data": "'qm9' (the committed train split) or a path to SDF/XYZ files or folders",
    "batch_size": "molecules per optimiser step (per rank under torchrun)",
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
}

#: diffusion fields that only shape training (which noise levels are drawn, how they are weighed), not
#: the function the network computes nor how it is sampled: a run started from a model may change them
TRAINING_ONLY_DIFFUSION_FIELDS = ("loss_weighting", "min_snr_gamma", "time_sampling", "logsnr_mean", "logsnr_std",
                                  "lognormal_mix")


@dataclass
class TrainConfig:
    """A training run on QM9 (or the user's molecules). Saved with every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: str = "qm9"  # "qm9" or a path to SDF/XYZ file(s) / folder
    batch_size: int = 64
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

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        try:
            model = ModelConfig(**d.pop("model", {}))
            diffusion = DiffusionConfig(**d.pop("diffusion", {}))
            return cls(model=model, diffusion=diffusion, **d)
        except TypeError as exc:
            raise UserError(f"config has an unknown or missing field: {exc}") from None

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read config {path}: {exc}") from None
