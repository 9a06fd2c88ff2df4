"""The denoiser interface: what the diffusion layer hands a network and what it takes back.

A denoiser is any callable (an ``nn.Module``) called as

    net(h, pos, graph, pair=None, **extra) -> (pos_out, h_out, pair_out)

Inputs (assembled by :meth:`molediff.molecular.MolecularDiffusion.network_inputs` as a
:class:`DenoiserInputs`):

- ``h`` [|V|, F]: invariant per-atom inputs, the columns of
  :meth:`~molediff.molecular.MolecularDiffusion.input_labels` (noisy features, time, and the
  self-conditioning, property and fragment columns of models that have them);
- ``pos`` [|V|, 3] Å: the noisy positions;
- ``graph``: the :class:`~molediff.graph.MolGraph` (``batch`` [|V|], ``ptr`` [B + 1], ``pair_index``
  [2, |P|], ``pair_batch``, ``pair_ptr``, ``fixed``). The network builds whatever edges it needs from it
  (the EGNN: fully connected edges, see :class:`~molediff.models.egnn.EGNNDenoiser`);
- ``pair`` [|P|, Fp]: invariant per-pair inputs (noisy bond one-hots, time, ...), None for atoms-only models;
- ``extra``: ``x_cond`` [|V|, 3] Å, the previous estimate's positions (self-conditioning models only),
  and the caller's ``model_kwargs``.

Outputs: ``pos_out`` [|V|, 3] Å (x̂_0's positions for x_0-prediction; for ε-prediction ``pos_out − pos``
is read as ε̂), ``h_out`` [|V|, out_features] (per invariant atom part: x̂_0's values or logits, or ε̂),
``pair_out`` [|P|, pair_out] or None. Widths: :meth:`~molediff.molecular.MolecularDiffusion.network_widths`.
Positions must move with rotations, reflections and translations of ``pos`` (and ``x_cond``), the
other outputs must not; the diffusion layer projects the result into the state's subspace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from molediff.graph import MolGraph

DenoiserOutput = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]


class Denoiser(Protocol):
    """``net(h, pos, graph, pair=None, **extra) -> (pos_out, h_out, pair_out)``; see the module docstring."""

    def __call__(self, h: torch.Tensor, pos: torch.Tensor, graph: MolGraph, pair: torch.Tensor | None = None,
                 **extra: Any) -> DenoiserOutput: ...


@dataclass
class DenoiserInputs:
    """One call's inputs: ``h`` [|V|, F], ``pos`` [|V|, 3] Å, ``graph``, ``pair`` [|P|, Fp] or None, and
    ``x_cond`` [|V|, 3] Å (self-conditioning models) or None."""

    h: torch.Tensor
    pos: torch.Tensor
    graph: MolGraph
    pair: torch.Tensor | None = None
    x_cond: torch.Tensor | None = None

    def apply(self, net: Denoiser, **extra: Any) -> DenoiserOutput:
        """``net`` on these inputs: the one place a network is called. ``x_cond`` is passed only where
        given, so a network without self-conditioning need not accept it."""
        if self.x_cond is not None:
            extra = {**extra, "x_cond": self.x_cond}
        return net(self.h, self.pos, self.graph, self.pair, **extra)


__all__ = ["Denoiser", "DenoiserInputs", "DenoiserOutput"]
