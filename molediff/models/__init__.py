"""Denoiser networks, chosen by ``ModelConfig.arch`` and sized by the diffusion's state layout.

Every network follows one interface (:class:`Denoiser`, see :mod:`molediff.models.denoiser`):
``net(h, pos, graph, pair=None, **extra) -> (pos_out, h_out, pair_out)``; the diffusion layer knows
nothing else about it. What a network needs beyond that (the EGNN's fully connected edges) it builds
itself, in its own module here.
"""

from __future__ import annotations

import torch
from torch import nn

from molediff.config import ModelConfig
from molediff.errors import UserError
from molediff.models.denoiser import Denoiser, DenoiserInputs, DenoiserOutput
from molediff.models.egnn import EGNN, EGNNDenoiser

ARCHITECTURES = ("egnn",)


def build_network(model: ModelConfig, diffusion) -> nn.Module:
    """The network for ``model`` with the input/output widths of ``diffusion`` (a MolecularDiffusion),
    behind the :class:`Denoiser` interface."""
    if model.arch not in ARCHITECTURES:
        raise UserError(f"unknown network architecture {model.arch!r}; choose one of {ARCHITECTURES}")
    widths = diffusion.network_widths()
    pair_hidden = model.pair_hidden if "pair_in" in widths else 0
    return EGNNDenoiser(hidden=model.hidden, layers=model.layers, norm=model.norm, coord_range=model.coord_range,
                        pair_hidden=pair_hidden, **widths)


def _is_vocabulary(label: str) -> bool:
    """Whether a network column belongs to an entry of the vocabulary (an element or formal charge)."""
    return label.removeprefix("sc:").split(":")[0] in ("atom", "charge")


#: pair columns a warm start derives from others where the source lacks them: an aromatic bond starts as
#: the mean of a single and a double one (a model that adds the aromatic type to a Kekulé one)
_DERIVED = {"bond:aromatic": ("bond:single", "bond:double")}


def _derived(label: str) -> tuple[str, ...] | None:
    sc = "sc:" if label.startswith("sc:") else ""
    parts = _DERIVED.get(label.removeprefix("sc:"))
    return tuple(sc + p for p in parts) if parts else None


def _relabel(target: torch.Tensor, value: torch.Tensor, new: list[str], old: list[str], dim: int, what: str) -> None:
    """Copy ``value``'s columns (dim 1) or rows (dim 0) into ``target`` by label; new labels start at
    zero, or as the mean of the labels they derive from (:data:`_DERIVED`)."""
    target.zero_()
    src, dst = value.movedim(dim, 0), target.movedim(dim, 0)
    for k, label in enumerate(new):
        if label in old:
            dst[k] = src[old.index(label)]
        elif (parts := _derived(label)) and all(p in old for p in parts):
            dst[k] = torch.stack([src[old.index(p)] for p in parts]).mean(0)
    for label in old:
        if label not in new:
            raise UserError(f"the source network {what} {label!r}, which this model does not")


def transfer_weights(net: nn.Module, state: dict[str, torch.Tensor], new_labels: tuple[list[str], list[str]],
                     old_labels: tuple[list[str], list[str]],
                     pair_labels: tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]] | None = None) -> list[str]:
    """Load ``state`` (weights of a network with another state layout) into ``net``.

    Tensors of equal shape are copied; the input embedding's columns and the output layer's rows are
    copied by label (``(input labels, output labels)``, e.g. "atom:C", "time"), so a model that adds
    parts (charges, bonds) or elements starts from another model's weights: new input columns start at
    zero, so the network first computes what the source did; so do the pair read-in's and the edge layers'
    appended input columns (self-conditioning). Vocabulary columns the new model lacks (an element its
    data does not hold, e.g. H for a heavy-atom model) are dropped. ``pair_labels`` ``((new input, new
    output), (old input, old output))``: the per-pair read-in's columns and the pair head's rows are
    copied by label too, so a Kekulé model's bonds carry over to one with an aromatic type (which starts
    as the mean of single and double). Returns the names of parameters left at their initialisation (the
    new parts). Raises ``UserError`` on any other mismatch.
    """
    own = net.state_dict()
    (new_in, new_out), (old_in, old_out) = new_labels, old_labels
    fresh = [k for k in own if k not in state]
    for key, value in state.items():
        if key not in own:
            raise UserError(f"the source weights have {key}, which this network does not")
        target = own[key]
        if pair_labels is not None and pair_labels[0] != pair_labels[1]:
            (new_pin, new_pout), (old_pin, old_pout) = pair_labels
            if key == "pair_embed.weight" and value.shape[1] == len(old_pin) and target.shape[1] == len(new_pin):
                _relabel(target, value, new_pin, old_pin, 1, "reads pair input")
                fresh.append(key + " (new pair input columns)")
                continue
            if key.startswith("pair_head.2.") and value.shape[0] == len(old_pout) and target.shape[0] == len(new_pout):
                _relabel(target, value, new_pout, old_pout, 0, "writes pair output")
                fresh.append(key + " (new pair output rows)")
                continue
        relabelled_in = key == "embed.weight" and value.shape[1] == len(old_in) and new_in != old_in
        relabelled_out = key.startswith("out.") and value.shape[0] == len(old_out) and new_out != old_out
        if target.shape == value.shape and not relabelled_in and not relabelled_out:
            target.copy_(value)
        elif key == "embed.weight" and value.shape[1] == len(old_in) and target.shape[0] == value.shape[0]:
            target.zero_()
            for j, label in enumerate(old_in):
                if label not in new_in:
                    if _is_vocabulary(label):
                        continue
                    raise UserError(f"the source network reads input {label!r}, which this model does not have")
                target[:, new_in.index(label)] = value[:, j]
        elif (key == "pair_embed.weight" or key.endswith(".edge.weight")) and target.shape[0] == value.shape[0] \
                and target.shape[1] > value.shape[1]:
            # inputs appended at the end (self-conditioning's estimate) start at zero
            target.zero_()
            target[:, : value.shape[1]] = value
            fresh.append(key + " (new input columns)")
        elif key.startswith("out.") and value.shape[0] == len(old_out) and target.shape[1:] == value.shape[1:]:
            for j, label in enumerate(old_out):
                if label in new_out:
                    target[new_out.index(label)] = value[j]
                elif not _is_vocabulary(label):
                    raise UserError(f"the source network writes {label!r}, which this model does not")
            fresh.append(key + " (new rows)")
        else:
            raise UserError(f"{key}: shape {tuple(value.shape)} in the source, {tuple(target.shape)} here; "
                            "the architectures differ (width, layers)")
    net.load_state_dict(own)
    return fresh


__all__ = ["ARCHITECTURES", "Denoiser", "DenoiserInputs", "DenoiserOutput", "EGNN", "EGNNDenoiser", "build_network",
           "transfer_weights"]
