"""Molecular diffusion: the DDPM core applied to a molecule made of parts.

A batch of molecules is a :class:`MolState`: per-atom parts stacked in ``node`` ``[|V|, Dn]`` —
positions (Å, 3 columns, zero centre of mass per molecule), atom types (one-hot × scale) and, for
joint models, formal charges (one-hot × scale) — and per-pair parts stacked in ``pair`` ``[|P|, Dp]``
over the unordered atom pairs (i < j) of each molecule — bond types (one-hot × scale). A
:class:`MolGraph` (``batch``, ``ptr``, pairs, a fragment's ``fixed`` mask) says which rows belong to which molecule.
States support ``+ − × ÷`` and ``noise_like``, so the schedule's math and the samplers apply to every
part unchanged; adding a part is a change of :func:`layout` only.

:class:`MolecularDiffusion` is a plain object (not a module): it owns the schedule and the
parametrisation, turns a batch into a state, asks the network (passed in) for x̂_0 or ε̂, computes
the training loss and samples. This layer owns the zero-centre-of-mass subspace and the per-atom /
per-pair timestep look-up ``t[batch]``; the network only sees noisy invariant features, noisy
positions, a time feature and the graph, through one interface (:class:`molediff.models.Denoiser`).

Beside that core, each concern has one home: the network's inputs are assembled by one helper per
input group (:meth:`MolecularDiffusion.network_inputs`); classifier-free guidance wraps the denoiser
call (:func:`guided`); a fragment is the graph's ``fixed`` mask (:meth:`MolGraph.with_fixed`), its
frame (:func:`fixed_centroid`, :func:`centre`, :func:`project`) and, in sampling, the hook that holds
its rows (:meth:`MolState.hold`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from molediff.conditioning import PROPERTY_NAMES, normalise
from molediff.config import DEFAULT_ETA, DEFAULT_NOISE_SCALE, DEFAULT_STEPS, DiffusionConfig
from molediff.graph import PAIRS, ptr_from_counts
from molediff.diffusion import NoiseSchedule, sample as core_sample
from molediff.diffusion.noise import randint, randn
from molediff.elements import SUPPORTED_CHARGES
from molediff.errors import UserError
from molediff.models.denoiser import Denoiser, DenoiserInputs

_MIN_CHARGE = SUPPORTED_CHARGES[0]


def remove_mean(pos: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Subtract each molecule's centroid: ``pos`` [|V|, 3], ``batch`` [|V|] → [|V|, 3] with zero mean per molecule."""
    sums = torch.zeros(num_graphs, pos.shape[1], dtype=pos.dtype, device=pos.device).index_add_(0, batch, pos)
    counts = torch.bincount(batch, minlength=num_graphs).clamp(min=1).to(pos.dtype)
    return pos - (sums / counts[:, None])[batch]


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


def _columns(parts: tuple[Part, ...], level: str) -> dict[str, slice]:
    out, start = {}, 0
    for p in parts:
        if p.level == level:
            out[p.name] = slice(start, start + p.width)
            start += p.width
    return out


# ---------------------------------------------------------------------------- graph and state
@dataclass(frozen=True, eq=False)
class MolGraph:
    """Which rows belong to which molecule: ``batch`` [|V|], ``ptr`` [B + 1], ``pair_index`` [2, |P|]
    (global atom indices, i < j, molecule by molecule in :class:`~molediff.graph.AtomPairs`
    order), ``pair_batch`` [|P|], ``pair_ptr`` [B + 1], and ``fixed`` [|V|] bool: the atoms of a given
    fragment (fragment-conditioned models), None without one.

    A graph is built with its fragment (:meth:`from_ptr`, :meth:`with_fixed`) and never changed after
    (frozen), so what is derived from it (masks, a network's edges) stays valid. It holds no edges: a
    network builds the ones it needs from ``ptr`` and ``pair_index`` (:mod:`molediff.models`)."""

    batch: torch.Tensor
    ptr: torch.Tensor
    pair_index: torch.Tensor
    pair_batch: torch.Tensor
    pair_ptr: torch.Tensor
    fixed: torch.Tensor | None = None

    @classmethod
    def from_ptr(cls, ptr: torch.Tensor, fixed: torch.Tensor | None = None,
                 pair_index: torch.Tensor | None = None) -> "MolGraph":
        """The graph of molecules with atom offsets ``ptr`` [B + 1]; ``fixed`` [|V|] bool marks the atoms
        of a given fragment (fragment-conditioned models), None = none. ``pair_index`` [2, |P|]: the
        batch's pairs where already built (a collated batch carries them, equal by construction), else
        they are built here."""
        device = ptr.device
        ptr = ptr.cpu()
        counts = ptr[1:] - ptr[:-1]
        batch = torch.repeat_interleave(torch.arange(len(counts)), counts)
        pair_counts = counts * (counts - 1) // 2
        if pair_index is None:
            pair_index = PAIRS(ptr)
        elif pair_index.shape != (2, int(pair_counts.sum())):
            raise ValueError(f"pair_index {tuple(pair_index.shape)} does not fit molecules of {counts.tolist()} atoms")
        return cls(batch.to(device), ptr.to(device), pair_index.to(device),
                   torch.repeat_interleave(torch.arange(len(counts)), pair_counts).to(device),
                   ptr_from_counts(pair_counts).to(device),
                   None if fixed is None else fixed.to(device=device, dtype=torch.bool))

    def with_fixed(self, fixed: torch.Tensor | None) -> "MolGraph":
        """This graph (the same molecules, rows and pairs) with the fragment ``fixed`` [|V|] bool marked
        (None: without a fragment), as a new graph."""
        return replace(self, fixed=None if fixed is None else fixed.to(device=self.ptr.device, dtype=torch.bool))

    def to(self, device: Any) -> "MolGraph":
        """The same graph on ``device``."""
        return MolGraph(*(None if (v := getattr(self, f.name)) is None else v.to(device) for f in fields(self)))

    @property
    def num_graphs(self) -> int:
        return self.ptr.numel() - 1

    @property
    def fixed_pairs(self) -> torch.Tensor | None:
        """[|P|] bool: pairs of two fixed atoms (their bond is given), None without a fragment."""
        return None if self.fixed is None else self.fixed[self.pair_index[0]] & self.fixed[self.pair_index[1]]

    def anchored(self) -> torch.Tensor | None:
        """[B] bool: molecules with fixed atoms (their frame is the fragment's), None without a fragment."""
        if self.fixed is None:
            return None
        return torch.zeros(self.num_graphs, dtype=torch.bool, device=self.fixed.device).index_fill_(0, self.batch[self.fixed], True)

    def slice(self, lo: int, hi: int) -> "MolGraph":
        """Molecules ``lo .. hi−1`` as a graph of their own (their pairs are a block of this graph's)."""
        a0, a1, p0, p1 = int(self.ptr[lo]), int(self.ptr[hi]), int(self.pair_ptr[lo]), int(self.pair_ptr[hi])
        fixed = None if self.fixed is None else self.fixed[a0:a1]
        return MolGraph.from_ptr(self.ptr[lo : hi + 1] - a0, fixed, self.pair_index[:, p0:p1] - a0)


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
            cols = _columns(self.parts, level)
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

    def cpu(self) -> "Molecules":
        return Molecules(*(v.cpu() if isinstance(v, torch.Tensor) else v for v in
                           (self.pos, self.atom_type, self.charge, self.ptr, self.pair_index, self.bond_order, self.pair_ptr,
                            self.hydrogens)))


# ---------------------------------------------------------------------------- guidance
#: what a self-conditioning model reads as its previous estimate when sampling under guidance w ∉ {0, 1}:
#: "guided" the guided combination u + w (c − u) (a state training never shows the network),
#: "conditional" the conditional branch's own estimate c, "per-branch" each branch its own previous
#: estimate (the conditional pass reads c, the unconditional one u: what training shows each)
SELF_CONDITION_FEEDBACK = ("guided", "conditional", "per-branch")

def guided(denoise: Callable[[torch.Tensor | None], MolState], cond: torch.Tensor | None, w: float) -> MolState:
    """Classifier-free guidance (Ho & Salimans 2022) around a denoiser call ``denoise(cond)``:
    u + w (c − u) of the unconditional (u = ``denoise(None)``) and conditional (c = ``denoise(cond)``)
    predictions. w = 0 is u itself and w = 1 is c itself (one pass each); otherwise two passes.
    Without ``cond``, the plain prediction."""
    if cond is None or w == 0.0:
        return denoise(None)
    c = denoise(cond)
    if w == 1.0:
        return c
    u = denoise(None)
    return u + w * (c - u)


# ---------------------------------------------------------------------------- the diffusion
def _kekulized(mols: Molecules) -> torch.Tensor:
    """[|P|] Kekulé orders (0–3) of decoded molecules whose bond types may be aromatic
    (:func:`molediff.chem.kekule.kekulize`: the double bonds of each aromatic system placed from the
    atoms' valences and hydrogen counts)."""
    from molediff.chem.kekule import kekulize

    order = mols.bond_order.cpu().numpy()
    bonded = np.flatnonzero(order > 0)
    src, dst = mols.pair_index.cpu().numpy()[:, bonded]
    hydrogens = None if mols.hydrogens is None else mols.hydrogens.cpu().numpy()
    kekule, _ = kekulize(mols.atom_type.cpu().numpy(), mols.charge.cpu().numpy(), src, dst, order[bonded], hydrogens)
    out = order.copy()
    out[bonded] = kekule
    return torch.as_tensor(out, device=mols.bond_order.device)


class MolecularDiffusion:
    """Diffusion of molecules: schedule, parametrisation, state layout, loss and sampling.

    The network (see :func:`molediff.models.build_network`) is passed to each call; nothing here
    holds weights.
    """

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        prediction = {"eps": "epsilon", "x0": "sample"}.get(cfg.parametrization)
        if prediction is None:
            raise ValueError(f"parametrization must be 'eps' or 'x0', got {cfg.parametrization!r}")
        self.schedule = NoiseSchedule.from_name(cfg.schedule, cfg.timesteps, prediction_type=prediction)
        self.vocab = cfg.vocabulary
        self.parts = layout(cfg)
        categorical = [p.name for p in self.parts if p.loss == "ce"]
        if cfg.parametrization == "eps" and (categorical or cfg.self_condition):
            # cross-entropy parts are decoded from the network's x̂_0 logits, and self-conditioning reads
            # x̂_0: an ε-network has neither (it would fail with a KeyError, or decode bonds from noise)
            what = ", ".join(categorical + (["self-conditioning"] if cfg.self_condition else []))
            raise UserError(f"ε-parametrisation cannot generate {what}: use parametrization 'x0'")
        # table index -> one-hot column (−1: not in the vocabulary); charge value − _MIN_CHARGE -> column
        self._atom_columns = torch.as_tensor(self.vocab.column_of_table())
        charge_cols = [-1] * (len(SUPPORTED_CHARGES))
        for col, c in enumerate(self.vocab.charges):
            charge_cols[c - _MIN_CHARGE] = col
        self._charge_columns = torch.as_tensor(charge_cols)
        self.node_cols = _columns(self.parts, "atom")
        self.pair_cols = _columns(self.parts, "pair")
        self.node_width = sum(p.width for p in self.parts if p.level == "atom")
        self.pair_width = sum(p.width for p in self.parts if p.level == "pair")

    # ------------------------------------------------------------------ network widths
    def network_widths(self) -> dict[str, int]:
        """Input/output widths of the denoiser: per atom the non-position parts + time; per pair + time."""
        sc = self.cfg.self_condition
        w = {"in_features": (self.node_width - 3) * (2 if sc else 1) + 1 + 2 * len(self.cfg.conditions) + self._fragment_width
             + (2 if self.cfg.valence_feedback else 0),
             "out_features": self.node_width - 3, "self_condition": sc}
        if self.pair_width:
            w.update(pair_in=self.pair_width * (2 if sc else 1) + 1, pair_out=self.pair_width)
        return w

    @property
    def _fragment_width(self) -> int:
        """Columns of the fragment flag input: 1 for fragment-conditioned models, else 0."""
        return 1 if self.cfg.fragments > 0 else 0

    def _feature_labels(self) -> list[str]:
        return [f"{p.name}:{lab}" for p in self.parts if p.level == "atom" and p.name != "pos" for lab in p.labels]

    def input_labels(self) -> list[str]:
        """Names of the network's per-atom input columns (for transferring weights between layouts):
        the noisy features, time, with self-conditioning the estimate's features ("sc:..."), and per
        property condition its standardised value and whether it is given ("cond:gap", "given:gap"), and
        for fragment-conditioned models whether the atom is a fixed one ("fixed")."""
        sc = ["sc:" + lab for lab in self._feature_labels()] if self.cfg.self_condition else []
        sc += ["check:no_kekule", "check:valence"] if self.cfg.valence_feedback else []
        conds = [f"{kind}:{name}" for kind in ("cond", "given") for name in self.cfg.conditions]
        return self._feature_labels() + ["time"] + sc + conds + ["fixed"] * self._fragment_width

    def output_labels(self) -> list[str]:
        return self._feature_labels()

    def pair_labels(self) -> tuple[list[str], list[str]]:
        """Names of the network's per-pair input columns (noisy parts, time, self-conditioning's
        estimate) and output columns, for transferring weights between layouts."""
        own = [f"{p.name}:{lab}" for p in self.parts if p.level == "pair" for lab in p.labels]
        sc = ["sc:" + lab for lab in own] if self.cfg.self_condition else []
        return (own + ["time"] + sc if own else []), own

    # ------------------------------------------------------------------ data <-> state
    def encode(self, batch: Any, fixed: torch.Tensor | None = None) -> MolState:
        """Clean state x_0 of a collated batch (``pos`` Å, ``atom_type`` (index into
        :data:`~molediff.elements.ELEMENTS`), ``charge``, ``hydrogens`` (heavy-atom models), ``ptr``,
        ``bond_type``), in this model's vocabulary; ``fixed`` [|V|] bool marks fragment atoms (see
        :func:`random_fragments`), whose centroid becomes their molecule's origin. Raises
        :class:`UserError` for an element, charge or hydrogen count outside the vocabulary. The batch's
        ``pair_index`` (a collated batch has one) is the graph's: the pairs are not built twice."""
        graph = MolGraph.from_ptr(batch.ptr, fixed, getattr(batch, "pair_index", None))
        pos = batch.pos
        cols = [centre(pos, graph), self._one_hot("atom", self._atom_columns.to(pos.device)[batch.atom_type], pos.dtype)]
        if self.cfg.charges:
            offset = batch.charge - _MIN_CHARGE
            inside = (offset >= 0) & (offset < len(self._charge_columns))
            charge = torch.where(inside, self._charge_columns.to(pos.device)[offset.clamp(0, len(self._charge_columns) - 1)], -1)
            cols.append(self._one_hot("charge", charge, pos.dtype))
        if self.vocab.heavy_atom:
            hydrogens = getattr(batch, "hydrogens", None)
            if hydrogens is None:
                raise UserError("a heavy-atom model needs molecules with hydrogen counts (hydrogens removed)")
            cols.append(self._one_hot("hydrogens", torch.where(hydrogens <= self.vocab.max_hydrogens, hydrogens, -1), pos.dtype))
        pair = torch.zeros(graph.pair_index.shape[1], self.pair_width, dtype=pos.dtype, device=pos.device)
        if self.cfg.bonds:
            pair = self._one_hot("bond", torch.where(batch.bond_type < len(self.vocab.bond_orders), batch.bond_type, -1), pos.dtype)
        return MolState(torch.cat(cols, dim=1), pair, graph, self.parts)

    def _one_hot(self, name: str, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """One-hot × scale of part ``name``; an index of −1 (outside the vocabulary) is refused by name."""
        part = next(p for p in self.parts if p.name == name)
        if bool((index < 0).any()):
            raise UserError(f"the molecules hold a {name} value outside this model's vocabulary {list(part.labels)}")
        return F.one_hot(index, part.width).to(dtype) * part.scale

    def condition_values(self, batch: Any) -> torch.Tensor | None:
        """The batch's values [B, K] of this model's conditions (dataset units), None for unconditional models."""
        if not self.cfg.conditions:
            return None
        if getattr(batch, "props", None) is None:
            raise UserError("a conditional model needs molecules with properties (QM9)")
        return batch.props[:, [PROPERTY_NAMES.index(n) for n in self.cfg.conditions]]

    def decode(self, x: MolState) -> Molecules:
        """Molecules from a (clean) state: positions centred, each categorical part's arg-max, atom types
        as :data:`~molediff.elements.ELEMENTS` indices."""
        g = x.graph
        vocab = self.vocab
        atom = torch.as_tensor(vocab.table_index, device=x.device)[x.part("atom").argmax(1)]
        charge = torch.as_tensor(vocab.charges, device=x.device)[x.part("charge").argmax(1)] if self.cfg.charges else torch.zeros_like(atom)
        out = Molecules(remove_mean(x.node[:, :3], g.batch, g.num_graphs), atom, charge, g.ptr)
        if vocab.heavy_atom:
            out.hydrogens = x.part("hydrogens").argmax(1)
        if self.cfg.bonds:
            out.pair_index, out.pair_ptr = g.pair_index, g.pair_ptr
            out.bond_order = torch.as_tensor(vocab.bond_orders, device=x.device)[x.part("bond").argmax(1)]
            if vocab.aromatic:
                out.bond_order = _kekulized(out)
        return out

    def add_noise(self, x0: MolState, noise: MolState, t: torch.Tensor) -> MolState:
        """x_t for per-molecule timesteps ``t`` [B] (looked up per atom and per pair)."""
        g, s = x0.graph, self.schedule
        x_t = MolState(s.add_noise(x0.node, noise.node, t[g.batch]), s.add_noise(x0.pair, noise.pair, t[g.pair_batch]), g, x0.parts)
        return x_t.hold(x0)  # a fragment's atoms and bonds stay clean at every level

    # ------------------------------------------------------------------ the network's inputs
    def _noisy_inputs(self, x_t: MolState, t: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The noisy invariant parts and the time t / T: per atom [|V|, Dn − 3] and [|V|, 1], per pair
        [|P|, Dp] and [|P|, 1] (``t`` [B], looked up per atom and per pair)."""
        g, T = x_t.graph, self.schedule.num_train_timesteps
        return ([x_t.node[:, 3:], (t[g.batch].to(x_t.dtype) / T)[:, None]],
                [x_t.pair, (t[g.pair_batch].to(x_t.dtype) / T)[:, None]])

    def _self_condition_inputs(self, x_t: MolState, self_cond: MolState | None
                               ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None]:
        """Self-conditioning: the previous estimate x̂_0's invariant parts per atom and per pair, and its
        positions ``x_cond`` [|V|, 3] Å (zeros before the first estimate); nothing for other models."""
        if not self.cfg.self_condition:
            if self_cond is not None:
                raise ValueError("self_cond given to a model without self-conditioning")
            return [], [], None
        sc = self_cond if self_cond is not None else x_t * 0.0
        node = [sc.node[:, 3:]]
        if self.cfg.valence_feedback:
            node.append(self._valence_feedback(self_cond, x_t))
        return node, [sc.pair], sc.node[:, :3]

    def _valence_feedback(self, estimate: MolState | None, x_t: MolState) -> torch.Tensor:
        """[|V|, 2] per atom of the previous estimate (arg-max decoded): aromatic system without a Kekulé
        form, valence not allowed (:func:`molediff.chem.kekule.valence_feedback`); zeros before the first
        estimate. Computed on the CPU without gradient (an input, like the estimate itself)."""
        if estimate is None:
            return x_t.node.new_zeros(x_t.node.shape[0], 2)
        from molediff.chem.kekule import valence_feedback

        vocab = self.vocab
        with torch.no_grad():
            atom = np.asarray(vocab.table_index)[estimate.part("atom").argmax(1).cpu().numpy()]
            charge = (np.asarray(vocab.charges)[estimate.part("charge").argmax(1).cpu().numpy()] if self.cfg.charges
                      else np.zeros(len(atom), dtype=np.int64))
            hydrogens = estimate.part("hydrogens").argmax(1).cpu().numpy() if vocab.heavy_atom else None
            order = np.asarray(vocab.bond_orders)[estimate.part("bond").argmax(1).cpu().numpy()]
            src, dst = estimate.graph.pair_index.cpu().numpy()
            flags = valence_feedback(atom, charge, src, dst, order, hydrogens)
        return torch.as_tensor(flags, dtype=x_t.dtype, device=x_t.device)

    def _condition_inputs(self, x_t: MolState, cond: torch.Tensor | None) -> list[torch.Tensor]:
        """Property conditions ``cond`` [B, K] (dataset units, NaN = not given; None: none given): per atom
        the standardised values [|V|, K] and whether each is given [|V|, K]; nothing for unconditional models."""
        g = x_t.graph
        if not self.cfg.conditions:
            if cond is not None:
                raise ValueError("cond given to a model without conditions")
            return []
        values = cond if cond is not None else torch.full((g.num_graphs, len(self.cfg.conditions)), float("nan"), device=x_t.device)
        z, given = normalise(values.to(x_t.device, torch.float64), self.cfg.conditions, self.cfg.condition_stats)
        return [z.to(x_t.dtype)[g.batch], given.to(x_t.dtype)[g.batch]]

    def _fragment_inputs(self, x_t: MolState) -> list[torch.Tensor]:
        """Fragment-conditioned models: whether each atom is fixed [|V|, 1] (the graph's mask; all 0
        without a fragment); nothing for other models, which refuse a graph with a fragment."""
        g = x_t.graph
        if not self._fragment_width:
            if g.fixed is not None:
                raise UserError("this model was not trained to grow fragments (no fixed-atom input); use inpainting instead")
            return []
        fixed = g.fixed if g.fixed is not None else torch.zeros_like(g.batch, dtype=torch.bool)
        return [fixed.to(x_t.dtype)[:, None]]

    def network_inputs(self, x_t: MolState, t: torch.Tensor, self_cond: MolState | None = None,
                       cond: torch.Tensor | None = None) -> DenoiserInputs:
        """What the network reads for ``x_t`` at timesteps ``t`` [B]: per atom the columns of
        :meth:`input_labels` (noisy parts, time, estimate, conditions, fragment flag) [|V|, F], the noisy
        positions [|V|, 3] Å, per pair the noisy parts, time and estimate [|P|, Fp] (None for atoms-only
        models), the graph, and the estimate's positions (self-conditioning)."""
        h_noisy, pair_noisy = self._noisy_inputs(x_t, t)
        h_sc, pair_sc, x_cond = self._self_condition_inputs(x_t, self_cond)
        h = torch.cat(h_noisy + h_sc + self._condition_inputs(x_t, cond) + self._fragment_inputs(x_t), dim=1)
        pair = torch.cat(pair_noisy + pair_sc, dim=1) if self.pair_width else None
        return DenoiserInputs(h, x_t.node[:, :3], x_t.graph, pair, x_cond)

    # ------------------------------------------------------------------ the denoiser
    def predict(self, net: Denoiser, x_t: MolState, t: torch.Tensor, self_cond: MolState | None = None,
                cond: torch.Tensor | None = None, **model_kwargs: Any) -> tuple[MolState, dict[str, torch.Tensor]]:
        """The network's output as a state of the schedule's prediction type (x̂_0 or ε̂), and the
        logits of the cross-entropy parts. ``t`` [B] per molecule. ``self_cond``: the network's previous
        estimate x̂_0 (self-conditioning models; None = no estimate yet, read as zeros). ``cond`` [B, K]:
        property values of a conditional model in the dataset's units, NaN = not given (None: none given).
        ``net`` follows :class:`~molediff.models.Denoiser`; ``model_kwargs`` are passed on to it."""
        inputs = self.network_inputs(x_t, t, self_cond, cond)
        pos_out, h_out, pair_out = inputs.apply(net, **model_kwargs)
        if self.cfg.parametrization == "eps":
            return self._eps_output(x_t, pos_out, h_out), {}
        return self._x0_output(x_t, pos_out, h_out, pair_out)

    def _eps_output(self, x_t: MolState, pos_out: torch.Tensor, h_out: torch.Tensor) -> MolState:
        """ε̂: the position displacement projected into the state's subspace, then the per-atom outputs;
        a fragment's rows get zero (no noise to predict there)."""
        g = x_t.graph
        eps = MolState(torch.cat([project(pos_out - x_t.node[:, :3], g), h_out], dim=1), x_t.pair, g, x_t.parts)
        return eps if g.fixed is None else eps.hold(x_t * 0.0)

    def _x0_output(self, x_t: MolState, pos_out: torch.Tensor, h_out: torch.Tensor, pair_out: torch.Tensor | None
                   ) -> tuple[MolState, dict[str, torch.Tensor]]:
        """x̂_0 in the state's frame and the logits of the cross-entropy parts, whose x̂_0 is the posterior
        mean E[one-hot × scale | x_t]; a fragment's rows are known (x_t holds them clean)."""
        g = x_t.graph
        node, logits, pair = [in_frame(pos_out, g)], {}, x_t.pair
        for p in self.parts:
            if p.name == "pos":
                continue
            if p.level == "atom":
                cols = self.node_cols[p.name]
                raw = h_out[:, cols.start - 3 : cols.stop - 3]
            else:
                raw = pair_out[:, self.pair_cols[p.name]]
            if p.loss == "ce":
                logits[p.name] = raw
                raw = torch.softmax(raw, dim=1) * p.scale
            if p.level == "atom":
                node.append(raw)
            else:
                pair = raw
        return MolState(torch.cat(node, dim=1), pair, g, x_t.parts).hold(x_t), logits

    def guided_predict(self, net: Denoiser, x_t: MolState, t: torch.Tensor, cond: torch.Tensor | None, guidance: float,
                       self_cond: MolState | None = None, **model_kwargs: Any) -> MolState:
        """:meth:`predict` under classifier-free guidance (:func:`guided`): one pass for w = 0 or 1, else two."""
        return guided(lambda c: self.predict(net, x_t, t, self_cond=self_cond, cond=c, **model_kwargs)[0], cond, guidance)

    # ------------------------------------------------------------------ training
    def training_losses(self, net: nn.Module, x0: MolState, t: torch.Tensor, noise: MolState,
                        cond: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-part losses (each a scalar: per molecule, then the batch mean) and their weighted ``total``.
        ``cond`` [B, K]: the molecules' property values (conditional models; already with the dropped
        ones set to NaN, see :func:`molediff.conditioning.drop_conditions`). ``generator`` draws the
        self-conditioning coin (one per batch; the same on every rank when their generators agree).

        ``mse``: ε-MSE over the ε-MSE columns (positions, and atom types unless trained by
        cross-entropy), averaged over columns and atoms; ``<part>``: cross-entropy of a categorical part.
        """
        g = x0.graph
        B = g.num_graphs
        x_t = self.add_noise(x0, noise, t)
        estimate = None
        if self.cfg.self_condition and torch.rand((), generator=generator) < 0.5:
            # half of the batches see the network's own estimate, from a first pass that is not
            # trained through (so at sampling time the previous step's estimate is in distribution)
            with torch.no_grad():
                estimate = self.predict(net, x_t, t, cond=cond)[0]
        out, logits = self.predict(net, x_t, t, self_cond=estimate, cond=cond)
        eps = self.schedule.to_eps(out.node, x_t.node, t[g.batch])
        mse_cols = torch.cat([torch.arange(self.node_cols[p.name].start, self.node_cols[p.name].stop)
                              for p in self.parts if p.loss == "mse"])
        per_atom = ((eps[:, mse_cols] - noise.node[:, mse_cols]) ** 2).mean(1)
        # a fragment's atoms and bonds are given, not generated: only free rows are scored
        free, free_pairs = (None, None) if g.fixed is None else (~g.fixed, ~g.fixed_pairs)
        losses = {"mse": _per_molecule_mean(per_atom, g.batch, B, free)}
        total = losses["mse"]
        for p in self.parts:
            if p.loss != "ce":
                continue
            target = (x0.part(p.name)).argmax(1)
            ce = F.cross_entropy(logits[p.name], target, reduction="none")
            rows, index = (free, g.batch) if p.level == "atom" else (free_pairs, g.pair_batch)
            losses[p.name] = _per_molecule_mean(ce, index, B, rows)
            total = total + p.weight * losses[p.name]
        losses["total"] = total
        return losses

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None, device: Any = None) -> torch.Tensor:
        return self.schedule.sample_timesteps(n, generator=generator, device=device)

    # ------------------------------------------------------------------ sampling
    def prior(self, graph: MolGraph, generator: torch.Generator | None = None) -> MolState:
        """Pure noise x_T on ``graph`` (the state's subspace: zero centre of mass for positions)."""
        device = graph.ptr.device
        zeros = MolState(torch.zeros(int(graph.ptr[-1]), self.node_width, device=device),
                         torch.zeros(graph.pair_index.shape[1], self.pair_width, device=device), graph, self.parts)
        return zeros.noise_like(generator)

    @torch.no_grad()
    def sample(self, net: nn.Module, num_atoms: torch.Tensor | list[int], num_steps: int | None = DEFAULT_STEPS,
               generator: torch.Generator | None = None, eta: float = DEFAULT_ETA, noise_scale: float = DEFAULT_NOISE_SCALE,
               callback: Callable | None = None, replace: Callable | None = None, model_kwargs: dict | None = None,
               x_T: MolState | None = None, resample: int = 1, cond: torch.Tensor | None = None,
               guidance: float = 1.0, known: MolState | None = None, sampler: str = "ddim",
               spacing: str = "trailing", self_condition_feedback: str = "guided") -> Molecules:
        """Generate molecules with the given atom counts [B].

        ``num_steps`` None or T: ancestral DDPM over all T steps; fewer: DDIM over strided steps (``eta`` 0
        deterministic, 1 DDPM-like). ``noise_scale`` multiplies the noise injected at each step (not
        x_T): 1 samples the model's distribution, below 1 a lower-temperature one. ``replace(i, t, x)``
        may overwrite part of the state after each step (inpainting), with ``resample`` RePaint rounds.
        ``x_T`` replaces the starting noise (its graph fixes the molecule sizes). ``cond`` [B, K]: property
        targets of a conditional model (dataset units, NaN = not given); ``guidance`` w combines the
        conditional and unconditional predictions as u + w (c − u) (classifier-free guidance, Ho &
        Salimans 2022; on x̂_0, which for a fixed x_t is the same as on ε): 1 = the conditional model
        alone, 0 = unconditional, > 1 pushes further towards the condition (two network passes a step).
        ``known``: for a fragment-conditioned model, a state on the graph of ``x_T`` (whose ``fixed`` marks
        the fragment) holding the fragment's clean rows; they are held in every state the network sees
        (RePaint rounds included) and after every step. ``sampler`` / ``spacing``: the reverse-process
        solver and its timestep grid (:func:`molediff.diffusion.sample`; "ddim" default, "dpm++2m",
        "dpm++2m-sde", "dpm++3m"). The categorical parts are continuous one-hots to every solver, so its
        update applies to them unchanged; the last step returns the network's x̂_0, decoded by arg-max.
        ``self_condition_feedback``: which estimate a self-conditioning model reads at the next step under
        guidance (:data:`SELF_CONDITION_FEEDBACK`; no effect at w = 0 or 1 or without self-conditioning).
        """
        device = next(net.parameters()).device
        if x_T is None:
            graph = known.graph if known is not None else MolGraph.from_ptr(
                ptr_from_counts(torch.as_tensor(num_atoms, dtype=torch.long)).to(device))
            x_T = self.prior(graph, generator)

        if cond is not None and not self.cfg.conditions:
            raise ValueError("this model has no conditions")
        x_T, replace = self._fragment_hook(known, x_T, replace)
        model = self._sampling_denoiser(net, cond, guidance, known, self_condition_feedback)
        x = core_sample(model, x_T, self.schedule, num_steps=num_steps, eta=eta, generator=generator, callback=callback,
                        noise_scale=noise_scale, model_kwargs=model_kwargs, replace=replace, resample=resample,
                        sampler=sampler, spacing=spacing)
        return self.decode(x)

    def _fragment_hook(self, known: MolState | None, x_T: MolState, replace: Callable | None
                       ) -> tuple[MolState, Callable | None]:
        """A fragment-conditioned model's fragment held in the sampler: ``x_T`` with the fragment's clean
        rows (:meth:`MolState.hold`, by the graph's ``fixed`` mask), and the ``replace`` hook that holds them
        after every step. Without ``known``: ``x_T`` and ``replace`` unchanged."""
        if known is None:
            return x_T, replace
        if replace is not None:
            raise ValueError("give known (a fragment-conditioned model's fragment) or replace (inpainting), not both")
        if not self.cfg.fragments:
            raise ValueError("known is for fragment-conditioned models (trained with --diffusion-fragments)")
        if known.graph.fixed is None or x_T.graph.fixed is None or not torch.equal(known.graph.fixed, x_T.graph.fixed):
            raise ValueError("known and x_T must be on one graph whose fixed mask marks the fragment")

        def hold(i: int, t: int, x: MolState) -> MolState:  # noqa: ARG001
            return x.hold(known)

        return x_T.hold(known), hold

    def _sampling_denoiser(self, net: Denoiser, cond: torch.Tensor | None, guidance: float,
                           known: MolState | None, feedback: str = "guided") -> Callable[..., MolState]:
        """The sampler's ``model(x_t, t, **kw)``: the network's prediction under guidance, on a state that
        shows the network the clean fragment (RePaint rounds included), fed the previous step's estimate
        (self-conditioning models; ``feedback``: which one under guidance, :data:`SELF_CONDITION_FEEDBACK`)."""
        if feedback not in SELF_CONDITION_FEEDBACK:
            raise ValueError(f"self-conditioning feedback must be one of {', '.join(SELF_CONDITION_FEEDBACK)}, got {feedback!r}")
        # self-conditioning: the previous step's x̂_0 per branch ("u" unconditional, "c" conditional;
        # "fed" is what every branch reads unless the feedback is per branch)
        estimate: dict[str, MolState] = {}

        def model(x: MolState, t: torch.Tensor, **kw: Any) -> MolState:
            if known is not None:
                x = x.hold(known)
            branches: dict[str, MolState] = {}

            def branch(c: torch.Tensor | None) -> MolState:
                key = "u" if c is None else "c"
                sc = estimate.get(key if feedback == "per-branch" else "fed")
                branches[key] = self.predict(net, x, t, self_cond=sc, cond=c, **kw)[0]
                return branches[key]

            out = guided(branch, cond, guidance)
            if self.cfg.self_condition:
                if feedback == "per-branch":
                    estimate.update(branches)
                else:  # w = 0 has no conditional branch: its estimate is the unconditional one (= out)
                    estimate["fed"] = branches.get("c", out) if feedback == "conditional" else out
            return out

        return model


def _per_molecule_mean(values: torch.Tensor, index: torch.Tensor, num_graphs: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` [R] within each molecule (rows ``index`` [R]; only ``rows`` [R] bool where
    given), then over molecules that have rows."""
    if rows is not None:
        values, index = values[rows], index[rows]
    sums = torch.zeros(num_graphs, dtype=values.dtype, device=values.device).index_add_(0, index, values)
    counts = torch.bincount(index, minlength=num_graphs)
    has = counts > 0
    return (sums[has] / counts[has]).mean() if bool(has.any()) else values.sum() * 0.0


#: atoms closer than this (Å) count as neighbours when a batch carries no bonds (fragment choice only)
NEIGHBOUR_DISTANCE = 1.8


def random_fragments(batch: Any, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fragments to hold fixed in training a fragment-conditioned model: [|V|] bool.

    A ``fraction`` of the molecules (each independently) gets one: a piece of its bond graph grown
    breadth-first, in random order, from a random atom (from two atoms in a quarter of cases, so that
    pieces to be linked occur too), cut at a size drawn uniformly from 1 .. n − 1. A cut leaves open
    valences where a growing molecule continues, as a user's fragment with hydrogens removed does.
    ``batch``: ``ptr`` [B + 1], ``batch`` [|V|], ``pos`` [|V|, 3], ``pair_index`` [2, |P|], ``bond_type`` [|P|]
    and ``has_bonds`` [B] (in molecules without bonds, atoms within :data:`NEIGHBOUR_DISTANCE` are neighbours). One draw from ``generator`` seeds the rest.
    """
    ptr = batch.ptr.cpu().numpy()
    pairs = batch.pair_index.cpu()
    linked = batch.bond_type.cpu() > 0
    has_bonds = getattr(batch, "has_bonds", None)
    if has_bonds is not None and not bool(has_bonds.all()):
        pos = batch.pos.cpu()
        near = (pos[pairs[0]] - pos[pairs[1]]).norm(dim=1) < NEIGHBOUR_DISTANCE
        linked = torch.where(has_bonds.cpu()[batch.batch.cpu()[pairs[0]]], linked, near)
    neighbours: list[list[int]] = [[] for _ in range(int(ptr[-1]))]
    for a, b in pairs[:, linked].T.tolist():
        neighbours[a].append(b)
        neighbours[b].append(a)
    rng = np.random.default_rng(int(randint(2**62, (1,), generator=generator)))
    fixed = np.zeros(int(ptr[-1]), dtype=bool)
    for lo, hi in zip(ptr[:-1].tolist(), ptr[1:].tolist()):
        n = hi - lo
        if n < 2 or rng.random() >= fraction:
            continue
        size = int(rng.integers(1, n))
        queue = [int(a) for a in rng.choice(np.arange(lo, hi), size=2 if size >= 2 and rng.random() < 0.25 else 1, replace=False)]
        chosen = set(queue)
        order: list[int] = []
        while len(order) < size:
            if not queue:  # a disconnected molecule: continue from an atom not reached yet
                queue = [int(rng.choice([a for a in range(lo, hi) if a not in chosen]))]
                chosen.add(queue[0])
            atom = queue.pop(0)
            order.append(atom)
            for b in rng.permutation(neighbours[atom]).tolist():
                if b not in chosen:
                    chosen.add(b)
                    queue.append(b)
        fixed[order] = True
    return torch.from_numpy(fixed)


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


def sizes_from_histogram(histogram: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``n`` molecule sizes from a histogram (entry k = count of molecules with k atoms)."""
    probs = histogram.double() / histogram.sum()
    return torch.multinomial(probs, n, replacement=True, generator=generator)


def draw_sizes(histogram: torch.Tensor, n: int, n_atoms: tuple[int, int] | None = None, larger_than: int = 0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` molecule sizes: ``n_atoms`` (lo, hi) fixed (lo = hi) or uniform over the range; else drawn
    from the histogram, restricted to sizes above ``larger_than`` (a fragment's size)."""
    if n_atoms is not None:
        lo, hi = n_atoms
        return torch.full((n,), lo) if lo == hi else torch.randint(lo, hi + 1, (n,), generator=generator)
    if larger_than:
        histogram = histogram.clone()
        histogram[: larger_than + 1] = 0
        if int(histogram.sum()) == 0:
            raise UserError(f"the training data has no molecule larger than the fragment ({larger_than} atoms); give --n-atoms")
    return sizes_from_histogram(histogram, n, generator=generator)


__all__ = ["DEFAULT_ETA", "DEFAULT_NOISE_SCALE", "MolGraph", "MolState", "Molecules", "MolecularDiffusion", "Part", "layout",
           "remove_mean", "centre", "in_frame", "project", "fixed_centroid", "guided", "random_fragments", "finite_molecules",
           "sizes_from_histogram", "draw_sizes"]
