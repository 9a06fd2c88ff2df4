"""Steering sampling towards property targets with a property model read on x̂_0.

Classifier-free guidance moves a conditional drug-like model's samples towards the asked properties on
average, but each molecule's property stays about as spread as an unconditional one's
(benchmarks/README.md, issue 41). Steering corrects each molecule: a :class:`PropertyModel` predicts the
model's conditioning properties (standardised by the model's own statistics) from a clean-looking state,
and at each sampling step below :data:`STEER_BELOW` the network's x̂_0 takes a gradient step on its
features (atom types, charges, hydrogen counts, bonds; not positions) down the squared standardised
error between predicted and asked values (:func:`steer`). The next step is taken from the steered x̂_0,
so the denoiser, seeing it again, keeps it chemically consistent. Early steps are left alone: their x̂_0
is a blur the property model never saw, and steps there broke validity (benchmarks/README.md).

The property model is trained on the conditional model's training molecules, encoded as the model
encodes them and lightly noised (:func:`train_property_model`): x̂_0 of the late steps is near such a
state. It never sees RDKit at sampling time; its targets are RDKit's values, computed once when the
training molecules are read.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from molediff.state import MolState

__all__ = ["STEER_BELOW", "PropertyModel", "steer", "train_property_model"]

#: steps at timesteps at or above this leave x̂_0 alone (of 1,000; measured on the drug-like model)
STEER_BELOW = 300
#: the largest per-molecule noise level of the training inputs' features (× a feature's scale of 1); the
#: positions get twice it, in Å
AUGMENT = 0.08


def _read(net: torch.nn.Module, x: MolState) -> torch.Tensor:
    """The read-out network ``net`` on the state ``x``: its features, positions, graph and pair state."""
    return net(x.node[:, 3:], x.node[:, :3], x.graph, x.pair)


class PropertyModel:
    """A network that reads a state of a model's parts and gives its conditioning properties, standardised
    by the model's statistics: ``predict(x)`` → [B, K] in the order of ``names``."""

    def __init__(self, net: torch.nn.Module, names: list[str], stats: dict[str, list[float]], info: dict[str, Any]) -> None:
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.names, self.stats, self.info = list(names), stats, info

    @staticmethod
    def build(diffusion: Any, hidden: int = 64, layers: int = 4) -> torch.nn.Module:
        from molediff.models.readout import MoleculeReadout

        return MoleculeReadout(diffusion.node_width - 3, diffusion.pair_width, len(diffusion.cfg.conditions),
                               hidden=hidden, layers=layers)

    def predict(self, x: MolState) -> torch.Tensor:
        """Standardised properties [B, K] of the state ``x`` (an x̂_0 or an encoded molecule)."""
        return _read(self.net, x)

    def to_dict(self) -> dict[str, Any]:
        """What :meth:`save` writes (and a bundled model file's ``property_model`` holds): the weights,
        their SHA-256, names, statistics and training info."""
        from molediff.checkpoint import state_dict_digest

        weights = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        return {"kind": "property_model", "weights": weights, "sha256": state_dict_digest(weights), "names": self.names,
                "stats": self.stats, "info": self.info}

    def save(self, path: str | Path) -> None:
        from molediff.checkpoint import atomic_torch_save

        atomic_torch_save(self.to_dict(), Path(path))

    @classmethod
    def load(cls, path: str | Path, diffusion: Any) -> "PropertyModel":
        """Read a file written by :meth:`save`, for the model of ``diffusion``: refused (UserError) when
        it is not a property model or was trained for other conditions or statistics."""
        from molediff.checkpoint import safe_torch_load
        from molediff.errors import UserError

        try:
            state = safe_torch_load(Path(path))
        except FileNotFoundError:
            raise UserError(f"--property-model {path}: no such file") from None
        return cls.from_dict(state, diffusion, f"--property-model {path}")

    @classmethod
    def from_dict(cls, state: Any, diffusion: Any, where: str) -> "PropertyModel":
        """The property model of :meth:`to_dict`'s ``state`` for the model of ``diffusion``, checked as
        :meth:`load` (``where`` names its source in the errors) and against its SHA-256 where it has one."""
        from molediff.checkpoint import state_dict_digest
        from molediff.errors import UserError

        if not isinstance(state, dict) or state.get("kind") != "property_model":
            raise UserError(f"{where}: not a property model ('molediff property-model' writes one)")
        if list(state["names"]) != list(diffusion.cfg.conditions) or state["stats"] != diffusion.cfg.condition_stats:
            raise UserError(f"{where}: trained for another model's conditions ({', '.join(state['names'])}); "
                            "train one for this model with 'molediff property-model'")
        if "sha256" in state and state_dict_digest(state["weights"]) != state["sha256"]:
            raise UserError(f"{where}: failed its integrity check (weights do not match their SHA-256)")
        info = state.get("info", {})
        net = cls.build(diffusion, info.get("hidden", 64), info.get("layers", 4))
        net.load_state_dict(state["weights"])
        return cls(net, state["names"], state["stats"], info)


def steer(x0: MolState, cond: torch.Tensor, model: PropertyModel, scale: float) -> MolState:
    """One gradient step of ``x0``'s features (not its positions) down Σ_k given_k (ŷ_k − y_k)², the
    property model's standardised predictions ŷ against the targets ``cond`` [B, K] (dataset units, NaN =
    not given; the model's conditions, standardised by its statistics), times ``scale``. A molecule with no
    target is unchanged."""
    from molediff.conditioning import normalise

    z, given = normalise(cond.to(torch.float64), model.names, model.stats)
    z, given = torch.nan_to_num(z).to(x0.dtype), given.to(x0.dtype)
    with torch.enable_grad():
        feat = x0.node[:, 3:].detach().requires_grad_(True)
        pair = x0.pair.detach().requires_grad_(True)
        x = MolState(torch.cat([x0.node[:, :3].detach(), feat], dim=1), pair, x0.graph, x0.parts)
        err = (((model.predict(x) - z) ** 2) * given).sum()
        grads = torch.autograd.grad(err, (feat, pair), allow_unused=True)
    g_feat, g_pair = (g if g is not None else torch.zeros_like(v) for g, v in zip(grads, (feat, pair)))
    node = torch.cat([x0.node[:, :3], x0.node[:, 3:] - scale * g_feat], dim=1)
    return MolState(node, x0.pair - scale * g_pair, x0.graph, x0.parts)


def train_property_model(diffusion: Any, train: Any, valid: Any, minutes: float, batch_size: int = 64, lr: float = 1e-3,
                         seed: int = 0, hidden: int = 64, layers: int = 4,
                         report: Callable[[str], None] | None = None) -> PropertyModel:
    """A :class:`PropertyModel` for the conditional model of ``diffusion``, trained for ``minutes`` on the
    molecules ``train`` (a MoleculeSet in the model's form, with ``props``: RDKit's values of the
    model's conditions, NaN where unknown), encoded as the model encodes them with per-molecule noise
    up to :data:`AUGMENT`; ``valid``: held-out molecules whose mean absolute error per property (in the
    property's units) is reported (``report``) every few hundred steps and kept in its ``info``."""
    from molediff.conditioning import normalise, property_columns

    names, stats = list(diffusion.cfg.conditions), diffusion.cfg.condition_stats
    sd = torch.tensor([stats[n][1] for n in names])

    def targets(mols: Any) -> tuple[torch.Tensor, np.ndarray]:
        """Standardised targets [N, K] and the rows with every property known."""
        z, given = normalise(torch.as_tensor(mols.props[:, property_columns(names)], dtype=torch.float64), names, stats)
        return z.float(), np.nonzero(given.bool().all(1).numpy())[0]

    y_train, rows = targets(train)
    y_valid, valid_rows = targets(valid)
    if not len(rows) or not len(valid_rows):
        from molediff.errors import UserError

        raise UserError(f"need training and validation molecules with RDKit properties, have {len(rows)} and {len(valid_rows)}")
    batch_size = min(batch_size, len(rows))
    torch.manual_seed(seed)
    net = PropertyModel.build(diffusion, hidden, layers)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    pos_factor = torch.cat([torch.full((3,), 2.0), torch.ones(diffusion.node_width - 3)])

    def mae() -> list[float]:
        net.eval()
        errs = []
        with torch.no_grad():
            for i in range(0, len(valid_rows), 250):
                b = valid_rows[i : i + 250]
                x = diffusion.encode(valid.collate(b))
                errs.append((_read(net, x) - y_valid[b]).abs() * sd)
        net.train()
        return torch.cat(errs).mean(0).tolist()

    start, step = time.time(), 0
    while time.time() - start < minutes * 60:
        b = rng.choice(rows, batch_size, replace=False)
        x = diffusion.encode(train.collate(b))
        level = torch.rand(x.num_graphs, generator=g) * AUGMENT
        n = x.noise_like(g)
        x = MolState(x.node + n.node * level[x.graph.batch, None] * pos_factor, x.pair + n.pair * level[x.graph.pair_batch, None],
                     x.graph, x.parts)
        loss = ((_read(net, x) - y_train[b]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if report is not None and step % 500 == 0:
            report(f"step {step} ({(time.time() - start) / 60:.1f} min): validation MAE "
                   + ", ".join(f"{k} {v:.3g}" for k, v in zip(names, mae())))
    final = mae()
    info = {"steps": step, "minutes": round((time.time() - start) / 60, 2), "train_molecules": int(len(rows)),
            "valid_mae": dict(zip(names, [round(v, 4) for v in final])), "hidden": hidden, "layers": layers,
            "augment": AUGMENT}
    if report is not None:
        report(f"done: {step} steps; validation MAE " + ", ".join(f"{k} {v:.3g}" for k, v in zip(names, final)))
    return PropertyModel(net, names, stats, info)
