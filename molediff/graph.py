"""Graphs of stacked molecules, below the data layer, the molecular diffusion and the networks (torch
only): block offsets from counts, the unordered atom pairs of each molecule (the per-pair layout of the
bond part) and :class:`MolGraph`, which rows of a batch belong to which molecule (what a denoiser is
given besides its inputs, :mod:`molediff.models.denoiser`)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch

__all__ = ["PAIRS", "AtomPairs", "MolGraph", "ptr_from_counts"]


def ptr_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Offsets ``[len(counts) + 1]`` (0, c0, c0 + c1, ...) of consecutive blocks of sizes ``counts``."""
    counts = torch.as_tensor(counts, dtype=torch.long)
    ptr = torch.zeros(len(counts) + 1, dtype=torch.long, device=counts.device)
    ptr[1:] = torch.cumsum(counts, 0)
    return ptr


class AtomPairs:
    """The unordered atom pairs (i < j) within each molecule of a batch, with per-size templates cached.

    ``__call__(ptr)`` gives ``pair_index`` ``[2, |P|]`` (global atom indices, molecule by molecule,
    row-major within a molecule); :meth:`local_pair_id` maps (n, i, j) to the index within that order.
    """

    def __init__(self) -> None:
        self._templates: dict[int, torch.Tensor] = {}

    def template(self, n: int) -> torch.Tensor:
        if n not in self._templates:
            self._templates[n] = torch.triu_indices(n, n, 1)
        return self._templates[n]

    def __call__(self, ptr: torch.Tensor) -> torch.Tensor:
        """Vectorised (no Python loop over molecules): atom a of a molecule of n atoms, at local index
        l, is the first atom of n − 1 − l pairs, whose second atoms are a + 1, a + 2, ..."""
        counts = ptr[1:] - ptr[:-1]
        mol = torch.repeat_interleave(torch.arange(len(counts), device=ptr.device), counts)
        local = torch.arange(int(ptr[-1]), device=ptr.device) - ptr[:-1][mol]
        row_len = counts[mol] - 1 - local  # pairs (a, b > a) starting at each atom
        first = torch.repeat_interleave(torch.arange(int(ptr[-1]), device=ptr.device), row_len)
        offset = torch.arange(len(first), device=ptr.device) - (torch.cumsum(row_len, 0) - row_len)[first]
        return torch.stack([first, first + 1 + offset])

    @staticmethod
    def local_pair_id(n: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Index of pair (i, j), i < j, among the n(n−1)/2 pairs of an n-atom molecule (row-major)."""
        return i * n - i * (i + 1) // 2 + (j - i - 1)


PAIRS = AtomPairs()


@dataclass(frozen=True, eq=False)
class MolGraph:
    """Which rows belong to which molecule: ``batch`` [|V|], ``ptr`` [B + 1], ``pair_index`` [2, |P|]
    (global atom indices, i < j, molecule by molecule in :class:`AtomPairs`
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

    def select(self, molecules: torch.Tensor) -> tuple["MolGraph", torch.Tensor, torch.Tensor]:
        """Molecules ``molecules`` [K] (ascending indices) as a graph of their own, with the rows of this
        graph they take: ``(graph, atom_rows [|V'|], pair_rows [|P'|])`` (pairs are per-molecule blocks in
        the same order, so a state's rows carry over as ``node[atom_rows]``, ``pair[pair_rows]``)."""
        molecules = torch.as_tensor(molecules, dtype=torch.long, device=self.ptr.device)

        def rows(ptr: torch.Tensor) -> torch.Tensor:
            starts, counts = ptr[molecules], ptr[molecules + 1] - ptr[molecules]
            offsets = torch.repeat_interleave(starts - ptr_from_counts(counts)[:-1], counts)
            return torch.arange(int(counts.sum()), device=ptr.device) + offsets

        atom_rows, pair_rows = rows(self.ptr), rows(self.pair_ptr)
        counts = self.ptr[molecules + 1] - self.ptr[molecules]
        fixed = None if self.fixed is None else self.fixed[atom_rows]
        new_index = torch.empty(len(self.batch), dtype=torch.long, device=self.ptr.device)
        new_index[atom_rows] = torch.arange(len(atom_rows), device=self.ptr.device)
        graph = MolGraph.from_ptr(ptr_from_counts(counts), fixed, new_index[self.pair_index[:, pair_rows]])
        return graph, atom_rows, pair_rows

    def slice(self, lo: int, hi: int) -> "MolGraph":
        """Molecules ``lo .. hi−1`` as a graph of their own (their pairs are a block of this graph's)."""
        a0, a1, p0, p1 = int(self.ptr[lo]), int(self.ptr[hi]), int(self.pair_ptr[lo]), int(self.pair_ptr[hi])
        fixed = None if self.fixed is None else self.fixed[a0:a1]
        return MolGraph.from_ptr(self.ptr[lo : hi + 1] - a0, fixed, self.pair_index[:, p0:p1] - a0)
