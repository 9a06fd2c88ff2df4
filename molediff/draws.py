"""What is drawn at random around the molecular diffusion, besides its noise and timesteps: the
fragments a fragment-conditioned model is trained to grow (a training augmentation,
:func:`random_fragments`) and molecule sizes (:func:`draw_sizes`, :func:`sizes_from_histogram`; for
training's sampling checks and the sampling API). Each draw takes a ``torch.Generator``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from molediff.diffusion.noise import randint
from molediff.errors import UserError

__all__ = ["NEIGHBOUR_DISTANCE", "draw_sizes", "random_fragments", "sizes_from_histogram"]


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
