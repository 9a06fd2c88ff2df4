"""Grow molecules around a given fragment: directly with a fragment-conditioned model, else by
inpainting (RePaint, Lugmayr et al. 2022).

A fragment-conditioned model (trained with ``--diffusion-fragments``; the bundled "qm9-frag") reads
which atoms are fixed; they stay clean at every step, in a frame whose origin is their centroid, and
only the free atoms are noised and denoised, exactly as in its training
(:func:`molediff.molecular.random_fragments`). No resampling rounds are needed.

Any other molediff model, trained without conditions, can still keep known atoms where they are and
generate the rest by inpainting: at every reverse step the fragment's atoms (and, for joint models, their formal charges and
the bonds among them) are overwritten with the fragment itself, forward-noised to that step's level,
so the network sees a consistent noisy molecule and fills in the free atoms; ``resample`` R repeats
each step R times, going back up between repeats, so the two parts agree.

Centre of mass: the diffusion lives in the zero-centre-of-mass subspace of the whole molecule. At
each replacement the (noised) fragment is placed with its centroid where the chain's fixed atoms
have theirs, so the free atoms keep their place relative to it and only the fragment's own shape is
imposed; then the whole molecule is re-centred, which moves all atoms by one common translation.
At the end the molecule is translated so that the fixed atoms sit exactly on the input coordinates:
output coordinates of fixed atoms equal the fragment's, in the fragment's frame.

Hydrogens of the fragment are kept as given: the model attaches new atoms where the fragment has
open valences, so remove the hydrogens at the positions you want to grow from.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch.nn import functional as F

from molediff.diffusion.noise import randn

from molediff.elements import ELEMENTS, Vocabulary
from molediff.errors import UserError
from molediff.molecular import MolecularDiffusion, MolGraph, MolState, Molecules, fixed_centroid, remove_mean

#: atoms of a fragment closer than this (Å) are refused: no sensible 3D structure has them
MIN_DISTANCE = 0.5


@dataclass
class Fragment:
    """Known atoms: ``symbols`` [F], ``pos`` [F, 3] float64 Å (the output frame), formal ``charges`` [F],
    ``bonds`` ``(src, dst, order)`` (local indices, Kekulé orders 1–3) and a ``name``."""

    symbols: list[str]
    pos: np.ndarray
    charges: np.ndarray
    bonds: tuple[np.ndarray, np.ndarray, np.ndarray]
    name: str = "fragment"
    hydrogens: np.ndarray | None = None  # [F] attached hydrogens (a heavy-atom model's fragment, see heavy())

    def __post_init__(self) -> None:
        self.pos = np.asarray(self.pos, dtype=np.float64).reshape(-1, 3)
        self.charges = np.asarray(self.charges, dtype=np.int64)
        n = len(self.symbols)
        if n == 0:
            raise UserError(f"{self.name}: the fragment has no atoms")
        if len(self.pos) != n or len(self.charges) != n:
            raise UserError(f"{self.name}: {n} atoms but {len(self.pos)} positions and {len(self.charges)} charges")
        unknown = sorted(set(self.symbols) - set(ELEMENTS))
        if unknown:
            raise UserError(f"{self.name}: elements {', '.join(unknown)} are outside molediff's table ({', '.join(ELEMENTS)})")
        if not np.isfinite(self.pos).all():
            raise UserError(f"{self.name}: non-finite coordinates")
        if n >= 3 and np.all(self.pos[:, 2] == 0.0):
            raise UserError(f"{self.name}: no 3D coordinates (all z = 0)")
        if n > 1:
            d = np.linalg.norm(self.pos[:, None] - self.pos[None], axis=-1) + np.eye(n) * 1e9
            i, j = np.unravel_index(np.argmin(d), d.shape)
            if d[i, j] < MIN_DISTANCE:
                raise UserError(f"{self.name}: atoms {i + 1} and {j + 1} overlap ({d[i, j]:.2f} Å < {MIN_DISTANCE} Å)")

    def __len__(self) -> int:
        return len(self.symbols)

    def check_vocabulary(self, vocab: Vocabulary, charges: bool) -> None:
        """Refuse a fragment that a model with vocabulary ``vocab`` cannot hold, naming what is outside."""
        unknown = sorted(set(self.symbols) - set(vocab.elements) - ({"H"} if vocab.heavy_atom else set()))
        if unknown:
            raise UserError(f"{self.name}: elements {', '.join(unknown)} are outside the model's vocabulary ({', '.join(vocab.elements)})")
        bad = sorted({int(c) for c in self.charges} - set(vocab.charges if charges else (0,)))
        if bad:
            raise UserError(f"{self.name}: formal charges {bad} are outside what this model generates "
                            f"{list(vocab.charges if charges else (0,))}")

    def heavy(self) -> "Fragment":
        """The fragment without its hydrogen atoms, each remaining atom's count of attached hydrogens in
        ``hydrogens`` (for a heavy-atom model: the fragment's hydrogens become its atoms' fixed counts)."""
        if self.hydrogens is not None:
            return self
        keep = np.array([s != "H" for s in self.symbols])
        if not keep.any():
            raise UserError(f"{self.name}: the fragment has only hydrogens; a heavy-atom model needs a heavy atom")
        src, dst, order = (np.asarray(x) for x in self.bonds)
        counts = np.zeros(len(self), dtype=np.int64)
        h_bond = keep[src] != keep[dst]
        np.add.at(counts, np.where(keep[src], src, dst)[h_bond], 1)
        new = np.cumsum(keep) - 1
        both = keep[src] & keep[dst]
        return Fragment([s for s, k in zip(self.symbols, keep) if k], self.pos[keep], self.charges[keep],
                        (new[src[both]], new[dst[both]], order[both]), self.name, counts[keep])


def _fragment_graph(graph: MolGraph, size: int) -> MolGraph:
    """``graph`` with the first ``size`` atoms of every molecule marked as the fragment (``fixed``)."""
    local = torch.arange(int(graph.ptr[-1]), device=graph.ptr.device) - graph.ptr[graph.batch]
    return graph.with_fixed(local < size)


def _known_state(diffusion: MolecularDiffusion, fragment: Fragment, graph: MolGraph) -> MolState:
    """The clean known state on ``graph``: the fragment's atoms first in every molecule, centred on the
    fragment's centroid, with the bonds among them (rows beyond the fragment are placeholders)."""
    cfg, nf = diffusion.cfg, len(fragment)
    fragment.check_vocabulary(diffusion.vocab, cfg.charges)
    if diffusion.vocab.heavy_atom and fragment.hydrogens is None:
        raise UserError(f"{fragment.name}: a heavy-atom model needs the fragment's hydrogens as counts (Fragment.heavy())")
    hydrogens = fragment.hydrogens if fragment.hydrogens is not None else np.zeros(nf, dtype=np.int64)
    device = graph.ptr.device
    local = torch.arange(int(graph.ptr[-1]), device=device) - graph.ptr[graph.batch]
    index = local.clamp(max=nf - 1)  # row i of a molecule reads fragment atom i (masked beyond nf)
    pos = torch.as_tensor(fragment.pos - fragment.pos.mean(0), dtype=torch.float32, device=device)[index]
    batch = SimpleNamespace(ptr=graph.ptr, pos=pos, pair_index=graph.pair_index,
                            atom_type=torch.as_tensor([ELEMENTS.index(s) for s in fragment.symbols], device=device)[index],
                            charge=torch.as_tensor(fragment.charges, device=device)[index],
                            hydrogens=torch.as_tensor(hydrogens, device=device)[index],
                            bond_type=torch.zeros(graph.pair_index.shape[1], dtype=torch.long, device=device))
    node = torch.cat([pos, diffusion.encode(batch).node[:, 3:]], dim=1)
    pair = torch.zeros(graph.pair_index.shape[1], diffusion.pair_width, device=device)
    if cfg.bonds:
        i, j = graph.pair_index - graph.ptr[graph.pair_batch]
        order = torch.zeros(nf, nf, dtype=torch.long, device=device)
        src, dst, bo = (torch.as_tensor(np.asarray(x), dtype=torch.long, device=device) for x in fragment.bonds)
        order[src, dst] = bo
        order[dst, src] = bo
        pair = F.one_hot(order[i.clamp(max=nf - 1), j.clamp(max=nf - 1)], len(diffusion.vocab.bond_orders)).float() * cfg.bond_scale
    return MolState(node, pair, graph, diffusion.parts)


@torch.no_grad()
def inpaint(diffusion: MolecularDiffusion, net: torch.nn.Module, fragment: Fragment, num_atoms: torch.Tensor,
            num_steps: int | None, generator: torch.Generator | None, eta: float, noise_scale: float, resample: int = 1,
            callback=None, sampler: str = "ddim", spacing: str = "trailing", restarts: int = 0,
            restart_rings: bool = False, restart_from: str = "region") -> Molecules:
    """Molecules of ``num_atoms`` [B] atoms (each ≥ |fragment|) whose first |fragment| atoms are the
    fragment: same elements, charges and bonds among them, and coordinates equal to ``fragment.pos``.
    ``restarts``: rounds of local restarts of the generated atoms (:mod:`molediff.restarts`), for a
    fragment-conditioned model only (``restart_rings``: odd rings too, none wholly inside the fragment;
    ``restart_from``: what a restart draws again, :data:`~molediff.config.RESTART_FROM`)."""
    nf = len(fragment)
    num_atoms = torch.as_tensor(num_atoms, dtype=torch.long)
    if int(num_atoms.min()) < nf:
        raise UserError(f"the fragment has {nf} atoms, more than the {int(num_atoms.min())} asked for")
    device = next(net.parameters()).device
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), num_atoms.cumsum(0)]).to(device)
    graph = MolGraph.from_ptr(ptr)
    marked = _fragment_graph(graph, nf)  # the same molecules, the fragment's rows marked
    s = diffusion.schedule
    if diffusion.cfg.fragments > 0:
        # a fragment-conditioned model: the fragment's atoms are marked and held clean at every step
        # (the network was trained on exactly that); the free atoms start as noise around its centroid
        known = _known_state(diffusion, fragment, marked)
        mols = diffusion.sample(net, num_atoms, num_steps=num_steps, generator=generator, eta=eta, noise_scale=noise_scale,
                                callback=callback, x_T=diffusion.prior(marked, generator), known=known, resample=resample,
                                sampler=sampler, spacing=spacing, restarts=restarts,
                                restart_rings=restart_rings, restart_from=restart_from)
        return _into_fragment_frame(mols, fragment, marked)
    if restarts:
        raise ValueError("restarts with a fragment need a fragment-conditioned model (inpainting holds the fragment "
                         "by replacement)")

    # any other model reads no fragment: it runs on the unmarked graph, and the replace hook below
    # imposes the (noised) fragment on the marked rows
    known = _known_state(diffusion, fragment, graph)
    fixed, fixed_pairs = marked.fixed, marked.fixed_pairs

    def replace(i: int, t: int, x: MolState) -> MolState:
        if t < 0:
            target = known
        else:  # the fragment forward-noised to level t (its own fresh noise; positions re-centred below)
            target = MolState(s.add_noise(known.node, randn(known.node.shape, generator, device), t),
                              s.add_noise(known.pair, randn(known.pair.shape, generator, device), t), graph, known.parts)
        node, pair = x.node.clone(), x.pair.clone()
        # the fragment goes where the chain has its fixed atoms now (their centroid), so the free
        # atoms keep their place relative to it; only the fragment's own shape is imposed
        offset = (fixed_centroid(x.node[:, :3], marked) - fixed_centroid(target.node[:, :3], marked))[graph.batch]
        target_node = target.node.clone()
        target_node[:, :3] = target_node[:, :3] + offset
        node[fixed] = target_node[fixed]
        pair[fixed_pairs] = target.pair[fixed_pairs]
        node[:, :3] = remove_mean(node[:, :3], graph.batch, graph.num_graphs)
        return MolState(node, pair, graph, x.parts)

    first_t = s.num_train_timesteps - 1  # both samplers begin at the last level
    x_T = replace(-1, first_t, diffusion.prior(graph, generator))
    mols = diffusion.sample(net, num_atoms, num_steps=num_steps, generator=generator, eta=eta, noise_scale=noise_scale,
                            callback=callback, replace=replace, x_T=x_T, resample=resample, sampler=sampler, spacing=spacing)
    return _into_fragment_frame(mols, fragment, marked)


def _into_fragment_frame(mols: Molecules, fragment: Fragment, graph: MolGraph) -> Molecules:
    """Translate each molecule so its fixed atoms (``graph.fixed``) sit on the input coordinates (they
    differ from them by a common translation only), then write them exactly."""
    fixed = graph.fixed
    frag = torch.as_tensor(fragment.pos, dtype=mols.pos.dtype, device=mols.pos.device)
    shift = frag.mean(0) - fixed_centroid(mols.pos, graph)
    pos = mols.pos + shift[graph.batch]
    pos[fixed] = frag[(torch.arange(len(pos), device=pos.device) - graph.ptr[graph.batch])[fixed]]
    mols.pos = pos
    return mols


def parse_size_range(text: str) -> tuple[int, int]:
    """"N" or "A-B" → (lo, hi); raises UserError for anything else."""
    try:
        parts = [int(p) for p in str(text).split("-")]
    except ValueError:
        raise UserError(f"--n-atoms must be a number or a range like 20-25, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or parts[0] < 1 or parts[1] < parts[0]:
        raise UserError(f"--n-atoms must be a number ≥ 1 or a range A-B with 1 ≤ A ≤ B, got {text!r}")
    return parts[0], parts[1]
