"""Denoiser networks, chosen from a registry (:data:`ARCHITECTURES`) by the model config's architecture
and sized by the diffusion's state layout.

Every network follows one interface (:class:`Denoiser`, see :mod:`molediff.models.denoiser`):
``net(h, pos, graph, pair=None, **extra) -> (pos_out, h_out, pair_out)``; the diffusion layer knows
nothing else about it. What a network needs beyond that (the EGNN's fully connected edges) it builds
itself, in its own module here. An architecture is one row of :data:`ARCHITECTURES`: its parameter
block (a dataclass in :mod:`molediff.config`, saved as the config's ``model``), its network class, how
that is built for a diffusion's widths, and how it takes another layout's weights (made of the label
operations of :mod:`molediff.models.transfer`). A second architecture (say a transformer) is a new
module with those three things, and one row here and in :data:`molediff.config.MODEL_CONFIGS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from molediff.config import EGNNConfig
from molediff.errors import UserError
from molediff.models import egnn
from molediff.models.denoiser import Denoiser, DenoiserInputs, DenoiserOutput
from molediff.models.egnn import EGNN, EGNNDenoiser


@dataclass(frozen=True)
class Architecture:
    """One network family: its parameter block (``params``, a dataclass of :mod:`molediff.config`), its
    network class, ``build(params, widths) -> network`` and ``transfer(net, state, new_labels,
    old_labels, pair_labels) -> fresh parameter names`` (see :func:`transfer_weights`)."""

    params: type
    network: type[nn.Module]
    build: Callable[[Any, dict[str, Any]], nn.Module]
    transfer: Callable[..., list[str]]


#: every network by the name its config gives (``ModelConfig.arch``)
ARCHITECTURES: dict[str, Architecture] = {
    "egnn": Architecture(EGNNConfig, EGNNDenoiser, egnn.build, egnn.transfer_weights),
}


def build_network(model: Any, diffusion) -> nn.Module:
    """The network of the parameter block ``model`` (e.g. :class:`~molediff.config.EGNNConfig`) with the
    input/output widths of ``diffusion`` (a MolecularDiffusion), behind the :class:`Denoiser` interface."""
    arch = ARCHITECTURES.get(model.arch)
    if arch is None or not isinstance(model, arch.params):
        raise UserError(f"unknown network architecture {model.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return arch.build(model, diffusion.network_widths())


def transfer_weights(net: nn.Module, state: dict[str, torch.Tensor], new_labels: tuple[list[str], list[str]],
                     old_labels: tuple[list[str], list[str]],
                     pair_labels: tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]] | None = None,
                     gains: dict[str, float] | None = None) -> list[str]:
    """Load ``state`` (weights of a network of the same architecture with another state layout) into
    ``net``, by its architecture's own transfer.

    Tensors of equal shape are copied; the input embedding's columns and the output layer's rows are
    copied by label (``(input labels, output labels)``, e.g. "atom:C", "time"), so a model that adds
    parts (charges, bonds) or elements starts from another model's weights: new input columns start at
    zero, so the network first computes what the source did; so do appended input columns
    (self-conditioning). Vocabulary columns the new model lacks (an element its data does not hold,
    e.g. H for a heavy-atom model) are dropped. ``pair_labels`` ``((new input, new output), (old input,
    old output))``: the per-pair read-in's columns and the pair head's rows are copied by label too, so a
    Kekulé model's bonds carry over to one with an aromatic type (which starts as the mean of single and
    double). Returns the names of parameters left at their initialisation (the new parts). Raises
    ``UserError`` on any other mismatch.
    """
    for arch in ARCHITECTURES.values():
        if isinstance(net, arch.network):
            return arch.transfer(net, state, new_labels, old_labels, pair_labels, gains)
    raise UserError(f"no weight transfer for a {type(net).__name__}; architectures: {', '.join(ARCHITECTURES)}")


__all__ = ["ARCHITECTURES", "Architecture", "Denoiser", "DenoiserInputs", "DenoiserOutput", "EGNN", "EGNNDenoiser",
           "build_network", "transfer_weights"]
