"""Molecular diffusion: the DDPM core applied to a molecule made of parts.

:class:`MolecularDiffusion` is a plain object (not a module): it owns the schedule and the
parametrisation, turns a batch into a state (:class:`~molediff.state.MolState`, laid out by
:func:`~molediff.state.layout`) and back, asks the network (passed in) for x̂_0 or ε̂, computes the
training loss and samples. This layer owns the zero-centre-of-mass subspace and the per-atom /
per-pair timestep look-up ``t[batch]``; the network only sees noisy invariant features, noisy
positions, a time feature and the graph, through one interface (:class:`molediff.models.Denoiser`).
The network's inputs are assembled by one helper per input group (:meth:`MolecularDiffusion.network_inputs`).

Each neighbouring concern has its own home: the graph (:mod:`molediff.graph`), the state, its parts
and frames (:mod:`molediff.state`), guidance, self-conditioning feedback and the fragment hold in
sampling (:mod:`molediff.guidance`), training fragments and size draws (:mod:`molediff.draws`). Their
names stay importable from here.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from molediff.conditioning import normalise, property_columns
from molediff.config import DEFAULT_ETA, DEFAULT_NOISE_SCALE, DEFAULT_STEPS, DiffusionConfig
from molediff.diffusion import NoiseSchedule, sample as core_sample
from molediff.draws import NEIGHBOUR_DISTANCE, draw_sizes, random_fragments, sizes_from_histogram
from molediff.elements import SUPPORTED_CHARGES
from molediff.errors import UserError
from molediff.graph import MolGraph, ptr_from_counts
from molediff.guidance import SELF_CONDITION_FEEDBACK, guided, hold_fragment, sampling_denoiser
from molediff.models.denoiser import Denoiser, DenoiserInputs
from molediff.state import (MolState, Molecules, Part, centre, finite_molecules, fixed_centroid, in_frame, layout, part_columns,
                            project, remove_mean)

_MIN_CHARGE = SUPPORTED_CHARGES[0]

#: the logit gap a warm start gives an x̂_0 head that becomes a logit head (see
#: :meth:`MolecularDiffusion.output_gains`)
WARM_LOGIT_GAP = 6.0


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
        self.node_cols = part_columns(self.parts, "atom")
        self.pair_cols = part_columns(self.parts, "pair")
        self.node_width = sum(p.width for p in self.parts if p.level == "atom")
        self.pair_width = sum(p.width for p in self.parts if p.level == "pair")

    # ------------------------------------------------------------------ network widths
    def network_widths(self) -> dict[str, int]:
        """Input/output widths of the denoiser: per atom the non-position parts + time; per pair + time."""
        sc = self.cfg.self_condition
        w = {"in_features": (self.node_width - 3) * (2 if sc else 1) + 1 + 2 * len(self.cfg.conditions) + self._fragment_width
             + len(self._feedback_labels()),
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
        sc += self._feedback_labels()
        conds = [f"{kind}:{name}" for kind in ("cond", "given") for name in self.cfg.conditions]
        return self._feature_labels() + ["time"] + sc + conds + ["fixed"] * self._fragment_width

    def _feedback_labels(self) -> list[str]:
        """The input columns of what the decoding says of the previous estimate (valence, ring feedback)."""
        from molediff.chem.kekule import RING_FEEDBACK_SIZES

        labels = ["check:no_kekule", "check:valence"] if self.cfg.valence_feedback else []
        if self.cfg.ring_feedback:
            labels += [f"ring:{s}" for s in RING_FEEDBACK_SIZES[:-1]] + [f"ring:{RING_FEEDBACK_SIZES[-1]}+"]
        return labels

    def output_labels(self) -> list[str]:
        return self._feature_labels()

    def output_gains(self, source: "MolecularDiffusion") -> dict[str, float]:
        """Output rows whose meaning changes from the ``source`` model to this one, with the factor that
        keeps what they said: a part the source wrote as x̂_0 (ε-MSE, one-hot × scale) that this model
        reads as logits (cross-entropy) has its rows scaled so the source's estimate becomes logits with a
        gap of :data:`WARM_LOGIT_GAP` between a certain type and the others (softmax ~0.98 over 7 types),
        rather than near-uniform logits that forget the types the source had learned. Only rows the
        source has (a new element's row keeps its initialisation). The way back (logits read as x̂_0) has
        no such factor and raises :class:`UserError`."""
        gains: dict[str, float] = {}
        theirs = {p.name: p for p in source.parts}
        for p in self.parts:
            q = theirs.get(p.name)
            if p.level != "atom" or q is None or q.loss == p.loss:
                continue
            if q.loss == "ce":
                raise UserError(f"the model file trains its {p.name} part by cross-entropy (its network writes logits); "
                                f"a warm start cannot turn those into ε-MSE estimates: keep --diffusion-{p.name}-loss ce")
            gains.update({f"{p.name}:{lab}": WARM_LOGIT_GAP / q.scale for lab in p.labels if lab in q.labels})
        return gains

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
            raise UserError("a conditional model needs molecules with properties (QM9's, or drug-like ones computed from files)")
        return batch.props[:, property_columns(self.cfg.conditions)]

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
        if self.cfg.valence_feedback or self.cfg.ring_feedback:
            node.append(self._feedback(self_cond, x_t))
        return node, [sc.pair], sc.node[:, :3]

    def _feedback(self, estimate: MolState | None, x_t: MolState) -> torch.Tensor:
        """[|V|, len(:meth:`_feedback_labels`)] per atom of the previous estimate, arg-max decoded once:
        valence feedback (aromatic system without a Kekulé form, valence not allowed;
        :func:`molediff.chem.kekule.valence_feedback`), then ring feedback (the smallest ring, one-hot
        3, 4, 5, 6, 7+; :func:`molediff.chem.kekule.ring_feedback`); zeros before the first estimate.
        Computed on the CPU without gradient (an input, like the estimate itself)."""
        if estimate is None:
            return x_t.node.new_zeros(x_t.node.shape[0], len(self._feedback_labels()))
        from molediff.chem.kekule import ring_feedback, valence_feedback

        vocab, cols = self.vocab, []
        with torch.no_grad():
            order = np.asarray(vocab.bond_orders)[estimate.part("bond").argmax(1).cpu().numpy()]
            src, dst = estimate.graph.pair_index.cpu().numpy()
            if self.cfg.valence_feedback:
                atom = np.asarray(vocab.table_index)[estimate.part("atom").argmax(1).cpu().numpy()]
                charge = (np.asarray(vocab.charges)[estimate.part("charge").argmax(1).cpu().numpy()] if self.cfg.charges
                          else np.zeros(len(atom), dtype=np.int64))
                hydrogens = estimate.part("hydrogens").argmax(1).cpu().numpy() if vocab.heavy_atom else None
                cols.append(valence_feedback(atom, charge, src, dst, order, hydrogens))
            if self.cfg.ring_feedback:
                cols.append(ring_feedback(estimate.node.shape[0], src, dst, order))
        return torch.as_tensor(np.concatenate(cols, axis=1), dtype=x_t.dtype, device=x_t.device)

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
               spacing: str = "trailing", self_condition_feedback: str = "guided", restarts: int = 0,
               restart_rings: bool = False, steer: Callable | None = None,
               restart_ranges: dict[str, tuple[float, float]] | None = None, restart_from: str = "region") -> Molecules:
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
        ``restarts`` R (models that write bonds, not with ``replace``): then up to R rounds of local restarts, the
        atoms that fail the honest valence rule generated again with the rest held
        (:mod:`molediff.restarts`); ``restarted`` [B] of the result counts each molecule's rounds.
        ``restart_rings``: restarts redraw the odd rings of molecules that pass the rule too.
        ``restart_ranges`` ({RDKit descriptor: (lo, hi)}): and molecules that pass it with a property
        outside its range, whole. ``restart_from``: "region" or "noise", what a restart draws again
        (:data:`~molediff.config.RESTART_FROM`).
        ``steer(x̂_0, t, cond)``: a correction of each step's x̂_0 towards ``cond`` (:mod:`molediff.steering`).
        """
        device = next(net.parameters()).device
        if x_T is None:
            graph = known.graph if known is not None else MolGraph.from_ptr(
                ptr_from_counts(torch.as_tensor(num_atoms, dtype=torch.long)).to(device))
            x_T = self.prior(graph, generator)

        if cond is not None and not self.cfg.conditions:
            raise ValueError("this model has no conditions")
        inpainting = replace is not None
        if restarts and (not self.cfg.bonds or inpainting):
            raise ValueError("restarts need a model that writes bonds, and no inpainting (a fragment-conditioned model's "
                             "fragment is fine)")
        from molediff.restarts import finishing_level, restart_before_finishing, restart_eta, restart_failed

        def denoiser(molecules: torch.Tensor, fragment: MolState | None,
                     estimate: dict[str, MolState] | None = None) -> Callable:  # the sampler's model for these molecules
            c = cond[molecules.to(cond.device)] if cond is not None else None
            return sampling_denoiser(self, net, c, guidance, fragment, self_condition_feedback, steer, estimate)

        x_T, replace = hold_fragment(known, x_T, replace, bool(self.cfg.fragments))
        # restarts from noise on a finishing grid judge the molecules where its coarse steps end, so a redraw
        # costs those steps only (restart_before_finishing); the finished molecules are judged again below
        level = finishing_level(self.schedule, num_steps, spacing) if restarts and restart_from == "noise" and known is None \
            and sampler == "ddim" and num_steps and resample == 1 and not model_kwargs else None
        early = torch.zeros(x_T.num_graphs, dtype=torch.long)
        if level is not None:
            from molediff.diffusion.samplers import ddim_sample

            x, estimate, early = restart_before_finishing(self, x_T, denoiser, restarts, num_steps, eta, noise_scale,
                                                          generator, spacing, callback)
            x = ddim_sample(denoiser(torch.arange(x.num_graphs), None, estimate), x, self.schedule, num_steps=num_steps,
                            eta=eta, generator=generator, spacing=spacing, noise_scale=noise_scale, start=level,
                            callback=callback)
        else:
            model = sampling_denoiser(self, net, cond, guidance, known, self_condition_feedback, steer)
            x = core_sample(model, x_T, self.schedule, num_steps=num_steps, eta=eta, generator=generator, callback=callback,
                            noise_scale=noise_scale, model_kwargs=model_kwargs, replace=replace, resample=resample,
                            sampler=sampler, spacing=spacing)
        if not restarts:
            return self.decode(x)
        x, restarted = restart_failed(self, x, denoiser, restarts, num_steps or self.schedule.num_train_timesteps,
                                      restart_eta(sampler, eta), noise_scale, generator, spacing=spacing, callback=callback,
                                      rings=restart_rings, ranges=restart_ranges, restart_from=restart_from)
        out = self.decode(x)
        out.restarted = restarted + early
        return out


def _per_molecule_mean(values: torch.Tensor, index: torch.Tensor, num_graphs: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` [R] within each molecule (rows ``index`` [R]; only ``rows`` [R] bool where
    given), then over molecules that have rows."""
    if rows is not None:
        values, index = values[rows], index[rows]
    sums = torch.zeros(num_graphs, dtype=values.dtype, device=values.device).index_add_(0, index, values)
    counts = torch.bincount(index, minlength=num_graphs)
    has = counts > 0
    return (sums[has] / counts[has]).mean() if bool(has.any()) else values.sum() * 0.0


# names of the neighbouring modules, importable from here as before the split
__all__ = ["DEFAULT_ETA", "DEFAULT_NOISE_SCALE", "NEIGHBOUR_DISTANCE", "SELF_CONDITION_FEEDBACK", "MolGraph", "MolState", "Molecules",
           "MolecularDiffusion", "Part", "centre", "draw_sizes", "finite_molecules", "fixed_centroid", "guided", "in_frame", "layout",
           "project", "random_fragments", "remove_mean", "sizes_from_histogram"]
