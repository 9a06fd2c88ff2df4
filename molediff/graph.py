"""Graphs of stacked molecules, below both the data layer and the molecular diffusion (torch only):
block offsets from counts, and the unordered atom pairs of each molecule (the per-pair layout of the
bond part)."""

from __future__ import annotations

import torch

__all__ = ["PAIRS", "AtomPairs", "ptr_from_counts"]


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
