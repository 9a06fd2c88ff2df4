"""A compact in-memory set of 3D molecules and its fast collation into PyTorch Geometric batches.

Molecules are stored stacked, without padding: ``pos`` ``[num_atoms_total, 3]`` (Å), ``atom_type``
``[num_atoms_total]`` (index into :data:`molediff.elements.ELEMENTS`) and ``ptr`` ``[M + 1]`` (atom
offsets of the M molecules). No RDKit here: this is the training path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch_geometric.data import Batch

from molediff.elements import ATOMIC_NUMBERS, ELEMENTS


@dataclass
class MoleculeSet:
    """Stacked molecules. ``names`` are optional identifiers (QM9 ids, file:record)."""

    pos: torch.Tensor  # [N, 3] float32, Å
    atom_type: torch.Tensor  # [N] int64, index into ELEMENTS
    ptr: torch.Tensor  # [M + 1] int64
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.pos.ndim != 2 or self.pos.shape[1] != 3:
            raise ValueError(f"pos must be [N, 3], got {tuple(self.pos.shape)}")
        if self.atom_type.shape[0] != self.pos.shape[0] or int(self.ptr[-1]) != self.pos.shape[0]:
            raise ValueError("pos, atom_type and ptr disagree on the number of atoms")

    def __len__(self) -> int:
        return self.ptr.numel() - 1

    @property
    def num_atoms(self) -> torch.Tensor:
        """Atoms per molecule, ``[M]``."""
        return self.ptr[1:] - self.ptr[:-1]

    def molecule(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(symbols [n] array of str, positions [n, 3] float64 Å)`` of molecule ``i``."""
        a, b = int(self.ptr[i]), int(self.ptr[i + 1])
        symbols = np.array(ELEMENTS)[self.atom_type[a:b].numpy()]
        return symbols, self.pos[a:b].double().numpy()

    def subset(self, index: np.ndarray | torch.Tensor | list[int]) -> "MoleculeSet":
        """A new set holding molecules ``index`` (in that order)."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        counts = self.num_atoms[index]
        atom_idx = _ranges(self.ptr[index], counts)
        ptr = torch.zeros(len(index) + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(counts, 0)
        names = [self.names[i] for i in index.tolist()] if self.names else []
        return MoleculeSet(self.pos[atom_idx], self.atom_type[atom_idx], ptr, names)

    def collate(self, index: np.ndarray | torch.Tensor | list[int]) -> Batch:
        """A PyG :class:`Batch` of molecules ``index``: ``pos`` [n, 3], ``atom_type`` [n], ``z`` [n],
        ``batch`` [n], ``ptr`` [B + 1], ``num_graphs`` = B. Vectorised (no per-molecule Python)."""
        sub = self.subset(index)
        counts = sub.num_atoms
        batch = torch.repeat_interleave(torch.arange(len(sub)), counts)
        z = torch.as_tensor(ATOMIC_NUMBERS)[sub.atom_type]
        out = Batch(pos=sub.pos, atom_type=sub.atom_type, z=z, batch=batch, ptr=sub.ptr)
        out._num_graphs = len(sub)
        return out

    def size_histogram(self) -> torch.Tensor:
        """Counts of molecules by atom count: entry n is the number of molecules with n atoms."""
        return torch.bincount(self.num_atoms)

    @classmethod
    def concat(cls, sets: list["MoleculeSet"]) -> "MoleculeSet":
        if not sets:
            return cls(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(1, dtype=torch.long))
        counts = torch.cat([s.num_atoms for s in sets])
        ptr = torch.zeros(len(counts) + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(counts, 0)
        names = [n for s in sets for n in (s.names or [""] * len(s))]
        return cls(torch.cat([s.pos for s in sets]), torch.cat([s.atom_type for s in sets]), ptr, names)


def _ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Concatenation of ``arange(s, s + c)`` for each (s, c), vectorised."""
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long)
    offsets = torch.repeat_interleave(starts - torch.cumsum(counts, 0) + counts, counts)
    return torch.arange(total) + offsets
