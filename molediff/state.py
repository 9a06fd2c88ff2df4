"""The state of a batch of molecules in diffusion space and its frames (torch only; below the molecular
diffusion and its helpers, beside :mod:`molediff.graph`).

A batch of molecules is a :class:`MolState`: per-atom parts stacked in ``node`` ``[|V|, Dn]`` —
positions (Å, 3 columns, zero centre of mass per molecule), atom types (one-hot × scale) and, for
joint models, formal charges and (heavy-atom models) hydrogen counts — and per-pair parts stacked in
``pair`` ``[|P|, Dp]`` over the unordered atom pairs (i < j) of each molecule — bond types (one-hot ×
scale) — on a :class:`~molediff.graph.MolGraph`. States support ``+ − × ÷`` and ``noise_like``, so the
schedule's math and the samplers apply to every part unchanged; adding a part is a change of
:func:`layout` only.

Frames: without a fragment a molecule lives in the zero-centre-of-mass subspace (:func:`remove_mean`);
with one (the graph's ``fixed`` mask) its origin is the fragment's centroid (:func:`fixed_centroid`,
:func:`centre`, :func:`in_frame`, :func:`project`). :class:`Molecules` are decoded states;
:func:`finite_molecules` says which of them sampled without diverging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from molediff.config import DiffusionConfig
from molediff.diffusion.noise import randn
from molediff.graph import MolGraph

__all__ = ["MolState", "Molecules", "Part", "centre", "finite_molecules", "fixed_centroid", "in_frame", "layout",
           "part_columns", "project", "remove_mean"]


# ---------------------------------------------------------------------------- parts
@dataclass(frozen=True)
class Part:
    """One part of the state: ``level`` "atom" (a row per atom) or "pair" (a row per unordered pair),
    ``width`` columns, one-hot × ``scale`` (positions: Å, scale 1), trained by ``loss`` "mse" (ε-MSE
    through the parametrisation) or "ce" (cross-entropy of logits) with ``weight``."""

    name: str
    level: str
    width: int
    scale: float
    loss: str
    weight: float = 1.0
    labels: tuple[str, ...] = ()


def layout(cfg: DiffusionConfig) -> tuple[Part, ...]:
    """The parts of a model's state, in column order (positions first); widths and labels from the
    model's vocabulary (``cfg.vocabulary``)."""
    vocab = cfg.vocabulary
    parts = [Part("pos", "atom", 3, 1.0, "mse", labels=("x", "y", "z")),
             Part("atom", "atom", len(vocab.elements), cfg.feature_scale, cfg.atom_loss, cfg.atom_weight, vocab.elements)]
    if cfg.charges:
        parts.append(Part("charge", "atom", len(vocab.charges), cfg.charge_scale, "ce", cfg.charge_weight,
                          tuple(f"{c:+d}" for c in vocab.charges)))
    if vocab.heavy_atom:
        parts.append(Part("hydrogens", "atom", vocab.max_hydrogens + 1, cfg.hydrogen_scale, "ce", cfg.hydrogen_weight,
                          tuple(f"{k}H" for k in range(vocab.max_hydrogens + 1))))
    if cfg.bonds:
        parts.append(Part("bond", "pair", len(vocab.bond_orders), cfg.bond_scale, "ce", cfg.bond_weight, vocab.bond_names))
    return tuple(parts)


def part_columns(parts: tuple[Part, ...], level: str) -> dict[str, slice]:
    """The columns of each part of ``level`` ("atom": of ``node``, "pair": of ``pair``), by name."""
    out, start = {}, 0
    for p in parts:
        if p.level == level:
            out[p.name] = slice(start, start + p.width)
            start += p.width
    return out


# ---------------------------------------------------------------------------- frames
def remove_mean(pos: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Subtract each molecule's centroid: ``pos`` [|V|, 3], ``batch`` [|V|] → [|V|, 3] with zero mean per molecule."""
    sums = torch.zeros(num_graphs, pos.shape[1], dtype=pos.dtype, device=pos.device).index_add_(0, batch, pos)
    counts = torch.bincount(batch, minlength=num_graphs).clamp(min=1).to(pos.dtype)
    return pos - (sums / counts[:, None])[batch]


def fixed_centroid(pos: torch.Tensor, graph: MolGraph, fixed: torch.Tensor | None = None) -> torch.Tensor:
    """Centroid [B, 3] (Å) of each molecule's atoms marked by ``fixed`` [|V|] bool (default: the graph's
    fragment); zeros for a molecule with none. The one home of the fragment's origin: training's frame
    (:func:`centre`), inpainting's placement and its output frame."""
    fixed = graph.fixed if fixed is None else fixed
    sums = torch.zeros(graph.num_graphs, 3, dtype=pos.dtype, device=pos.device).index_add_(0, graph.batch[fixed], pos[fixed])
    counts = torch.bincount(graph.batch[fixed], minlength=graph.num_graphs).clamp(min=1).to(pos.dtype)
    return sums / counts[:, None]


def centre(pos: torch.Tensor, graph: MolGraph) -> torch.Tensor:
    """Positions [|V|, 3] in each molecule's frame: centred on its fixed atoms' centroid where it has a
    fragment (the fragment fixes the frame, so nothing else is projected), else zero centre of mass."""
    centred = remove_mean(pos, graph.batch, graph.num_graphs)
    if graph.fixed is None:
        return centred
    return torch.where(graph.anchored()[graph.batch, None], pos - fixed_centroid(pos, graph)[graph.batch], centred)


def in_frame(pos: torch.Tensor, graph: MolGraph) -> torch.Tensor:
    """Positions or a displacement [|V|, 3] in the state's frame: zero mean per molecule without a
    fragment; unchanged in a molecule with one (the fragment's centroid is its origin, nothing to project)."""
    projected = remove_mean(pos, graph.batch, graph.num_graphs)
    if graph.fixed is None:
        return projected
    return torch.where(graph.anchored()[graph.batch, None], pos, projected)


def project(pos: torch.Tensor, graph: MolGraph) -> torch.Tensor:
    """A displacement or noise [|V|, 3] in the state's subspace: zero mean per molecule without a
    fragment; with one, unchanged for free atoms and zero for fixed ones."""
    out = in_frame(pos, graph)
    return out if graph.fixed is None else out.masked_fill(graph.fixed[:, None], 0.0)


# ---------------------------------------------------------------------------- the state
class MolState:
    """A batch of molecules in diffusion space: ``node`` [|V|, Dn], ``pair`` [|P|, Dp] on ``graph``.

    Arithmetic acts on both tensors (with scalars, 0-d tensors or another state on the same graph),
    so DDPM formulas written for tensors apply to every part unchanged.
    """

    __slots__ = ("node", "pair", "graph", "parts")

    def __init__(self, node: torch.Tensor, pair: torch.Tensor, graph: MolGraph, parts: tuple[Part, ...]) -> None:
        self.node, self.pair, self.graph, self.parts = node, pair, graph, parts

    # -- arithmetic
    def _zip(self, other: Any, op: Callable) -> "MolState":
        if isinstance(other, MolState):
            return MolState(op(self.node, other.node), op(self.pair, other.pair), self.graph, self.parts)
        return MolState(op(self.node, other), op(self.pair, other), self.graph, self.parts)

    def __add__(self, o): return self._zip(o, lambda a, b: a + b)  # noqa: E704
    def __radd__(self, o): return self._zip(o, lambda a, b: b + a)  # noqa: E704
    def __sub__(self, o): return self._zip(o, lambda a, b: a - b)  # noqa: E704
    def __rsub__(self, o): return self._zip(o, lambda a, b: b - a)  # noqa: E704
    def __mul__(self, o): return self._zip(o, lambda a, b: a * b)  # noqa: E704
    def __rmul__(self, o): return self._zip(o, lambda a, b: b * a)  # noqa: E704
    def __truediv__(self, o): return self._zip(o, lambda a, b: a / b)  # noqa: E704
    def __neg__(self): return MolState(-self.node, -self.pair, self.graph, self.parts)  # noqa: E704

    @property
    def device(self) -> torch.device:
        return self.node.device

    @property
    def dtype(self) -> torch.dtype:
        return self.node.dtype

    @property
    def num_graphs(self) -> int:
        return self.graph.num_graphs

    def part(self, name: str) -> torch.Tensor:
        """The columns of part ``name`` (a view)."""
        for level, tensor in (("atom", self.node), ("pair", self.pair)):
            cols = part_columns(self.parts, level)
            if name in cols:
                return tensor[:, cols[name]]
        raise KeyError(name)

    def noise_like(self, generator: torch.Generator | None = None) -> "MolState":
        """Standard normal noise in the state's subspace: positions with zero centre of mass per
        molecule (see :func:`project`; a fragment's fixed atoms and the pairs among them get none);
        pairs one draw per unordered pair (symmetric by construction). The per-atom draw comes first,
        as one ``[|V|, Dn]`` block, then the pairs'."""
        g = self.graph
        node = randn(self.node.shape, generator=generator, device=self.device, dtype=self.dtype)
        node = torch.cat([project(node[:, :3], g), node[:, 3:]], dim=1)
        pair = randn(self.pair.shape, generator=generator, device=self.device, dtype=self.dtype) if self.pair.numel() else self.pair
        if g.fixed is not None:
            node = node.masked_fill(g.fixed[:, None], 0.0)
            pair = pair.masked_fill(g.fixed_pairs[:, None], 0.0) if pair.numel() else pair
        return MolState(node, pair, g, self.parts)

    def hold(self, known: "MolState") -> "MolState":
        """This state with the fixed atoms' rows and the fixed pairs' rows taken from ``known`` (same graph)."""
        g = self.graph
        if g.fixed is None:
            return self
        node = torch.where(g.fixed[:, None], known.node, self.node)
        pair = torch.where(g.fixed_pairs[:, None], known.pair, self.pair) if self.pair.numel() else self.pair
        return MolState(node, pair, g, self.parts)

    def detach(self) -> "MolState":
        """The same values, cut from the autograd graph."""
        return MolState(self.node.detach(), self.pair.detach(), self.graph, self.parts)

    def slice(self, lo: int, hi: int) -> "MolState":
        """Molecules ``lo .. hi−1`` (their rows, on a graph of their own)."""
        g = self.graph
        a0, a1, p0, p1 = int(g.ptr[lo]), int(g.ptr[hi]), int(g.pair_ptr[lo]), int(g.pair_ptr[hi])
        return MolState(self.node[a0:a1], self.pair[p0:p1], g.slice(lo, hi), self.parts)



@dataclass
class Molecules:
    """Decoded molecules: ``pos`` [|V|, 3] Å, ``atom_type`` [|V|] (:data:`~molediff.elements.ELEMENTS` indices), ``charge`` [|V|] (formal charges; zeros
    for atoms-only models), ``ptr`` [B + 1]; for joint models ``pair_index`` [2, |P|] and ``bond_order``
    [|P|] (0 none, 1–3), else None."""

    pos: torch.Tensor
    atom_type: torch.Tensor
    charge: torch.Tensor
    ptr: torch.Tensor
    pair_index: torch.Tensor | None = None
    bond_order: torch.Tensor | None = None
    pair_ptr: torch.Tensor | None = None
    hydrogens: torch.Tensor | None = None  # [|V|] attached hydrogens of a heavy-atom model's atoms, else None
    restarted: torch.Tensor | None = None  # [B] rounds each molecule was regenerated by local restarts, else None

    def cpu(self) -> "Molecules":
        return Molecules(*(v.cpu() if isinstance(v, torch.Tensor) else v for v in
                           (self.pos, self.atom_type, self.charge, self.ptr, self.pair_index, self.bond_order, self.pair_ptr,
                            self.hydrogens, self.restarted)))


def finite_molecules(pos: torch.Tensor, ptr: torch.Tensor, min_distance: float = 0.1) -> torch.Tensor:
    """Boolean [B]: molecules whose coordinates are finite and whose atoms are not collapsed (< ``min_distance`` Å)."""
    ok = []
    for i in range(ptr.numel() - 1):
        p = pos[ptr[i] : ptr[i + 1]]
        good = bool(torch.isfinite(p).all())
        if good and p.shape[0] > 1:
            d = torch.cdist(p.double(), p.double())
            d.fill_diagonal_(math.inf)
            good = bool(d.min() >= min_distance) and bool(d.min() < 1e3)
        ok.append(good)
    return torch.tensor(ok, dtype=torch.bool)
