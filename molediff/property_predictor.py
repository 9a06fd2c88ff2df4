"""A property predictor for QM9 molecules: molediff's own judge of property-conditioned generation.

An invariant network on geometry and atom types (the EGNN's invariant features, pooled per
molecule by sum and by mean, then a small MLP) that predicts standardised properties. The EDM
protocol (Hoogeboom et al. 2022, after Satorras et al.) trains it on one half of the training split
and measures conditional generators trained on the other half by how far the predicted property
of each generated molecule lands from its target. No RDKit; used by
``benchmarks/property_conditioning.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from molediff.checkpoint import atomic_torch_save, safe_torch_load
from molediff.conditioning import PROPERTY_NAMES, property_stats
from molediff.data.molecules import MoleculeSet
from molediff.elements import ELEMENTS
from molediff.models.egnn import EGNN, FullyConnectedEdges


class PropertyPredictor(nn.Module):
    """``(atom_type [|V|], pos [|V|, 3] Å, ptr [B + 1])`` → standardised properties ``[B, K]``;
    invariant to rotations, reflections, translations and atom order."""

    def __init__(self, num_properties: int, hidden: int = 96, layers: int = 4) -> None:
        super().__init__()
        self.net = EGNN(len(ELEMENTS), hidden, hidden=hidden, layers=layers)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, num_properties))
        self.edges = FullyConnectedEdges()

    def forward(self, atom_type: torch.Tensor, pos: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
        edge_index, _ = self.edges(ptr)
        h = F.one_hot(atom_type, len(ELEMENTS)).to(pos.dtype)
        _, h, _ = self.net(h, pos, edge_index)
        counts = ptr[1:] - ptr[:-1]
        batch = torch.repeat_interleave(torch.arange(len(counts), device=pos.device), counts)
        total = torch.zeros(len(counts), h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, batch, h)
        mean = total / counts.clamp_min(1)[:, None].to(h.dtype)
        return self.head(torch.cat([total / 10.0, mean], dim=1))  # /10: QM9 molecules have ~18 atoms


class Predictor:
    """A trained :class:`PropertyPredictor` with its property names and statistics (dataset units)."""

    def __init__(self, net: PropertyPredictor, names: list[str], stats: dict[str, list[float]], info: dict[str, Any]) -> None:
        self.net, self.names, self.stats, self.info = net.eval(), names, stats, info

    @torch.no_grad()
    def predict(self, mols: MoleculeSet, batch_size: int = 256) -> torch.Tensor:
        """Properties ``[M, K]`` (dataset units) of ``mols``."""
        mean = torch.tensor([self.stats[n][0] for n in self.names], dtype=torch.float64)
        std = torch.tensor([self.stats[n][1] for n in self.names], dtype=torch.float64)
        out = []
        for start in range(0, len(mols), batch_size):
            sub = mols.subset(np.arange(start, min(start + batch_size, len(mols))))
            out.append(self.net(sub.atom_type, sub.pos.float(), sub.ptr).double() * std + mean)
        return torch.cat(out) if out else torch.zeros(0, len(self.names), dtype=torch.float64)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"state_dict": self.net.state_dict(), "names": self.names, "stats": self.stats,
                           "hidden": self.net.head[0].out_features, "layers": len(self.net.net.layers)}, folder / "predictor.pt")
        (folder / "predictor.json").write_text(json.dumps({"names": self.names, "stats": self.stats, **self.info}, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "Predictor":
        blob = safe_torch_load(Path(folder) / "predictor.pt")
        net = PropertyPredictor(len(blob["names"]), hidden=blob["hidden"], layers=blob["layers"])
        net.load_state_dict(blob["state_dict"])
        info = json.loads((Path(folder) / "predictor.json").read_text())
        return cls(net, list(blob["names"]), blob["stats"], info)


def train_predictor(train: MoleculeSet, valid: MoleculeSet, minutes: float, hidden: int = 96, layers: int = 4,
                    batch_size: int = 64, lr: float = 1e-3, seed: int = 0, log=print, max_steps: int = 0) -> Predictor:
    """Train on ``train`` (which carries ``props``) for ``minutes`` of wall time (or ``max_steps``
    steps when given), with the learning rate cosine-annealed over that budget and L1 loss on
    standardised targets; the weights with the lowest validation MAE (mean over properties,
    standardised) are kept."""
    names = list(PROPERTY_NAMES)
    stats = property_stats(train.props, names)
    mean = torch.tensor([stats[n][0] for n in names])
    std = torch.tensor([stats[n][1] for n in names])
    torch.manual_seed(seed)
    net = PropertyPredictor(len(names), hidden, layers)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-8)
    rng = np.random.default_rng(seed)
    predictor = Predictor(net, names, stats, {})
    best, best_state, step, epoch = float("inf"), None, 0, 0
    t0 = time.time()
    budget = minutes * 60
    def progress() -> float:
        return min(step / max_steps if max_steps else (time.time() - t0) / budget, 1.0)

    while progress() < 1.0:
        perm = rng.permutation(len(train))
        for start in range(0, len(perm) - batch_size + 1, batch_size):
            frac = progress()
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * frac))
            sub = train.subset(perm[start:start + batch_size])
            net.train()
            target = ((sub.props.float() - mean) / std)
            loss = F.l1_loss(net(sub.atom_type, sub.pos, sub.ptr), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            step += 1
            if frac >= 1.0:
                break
        epoch += 1
        net.eval()
        mae = mean_absolute_errors(predictor.predict(valid), valid.props, names)
        score = float(np.mean([mae[n] / stats[n][1] for n in names]))
        log(f"predictor epoch {epoch}, step {step}, {(time.time() - t0) / 60:.1f} min: validation MAE "
            + ", ".join(f"{n} {mae[n]:.4g}" for n in names))
        if score < best:
            best, best_state = score, {k: v.clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    predictor.info = {"steps": step, "epochs": epoch, "minutes": round((time.time() - t0) / 60, 1), "train_molecules": len(train)}
    return predictor


def mean_absolute_errors(pred: torch.Tensor, target: torch.Tensor, names: list[str]) -> dict[str, float]:
    """MAE per property (dataset units) over rows where the target is finite."""
    out = {}
    for k, name in enumerate(names):
        ok = torch.isfinite(target[:, k]) & torch.isfinite(pred[:, k])
        out[name] = float((pred[ok, k] - target[ok, k]).abs().mean()) if ok.any() else float("nan")
    return out
