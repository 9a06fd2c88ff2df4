"""A compact in-memory set of 3D molecules and its fast collation into PyTorch Geometric batches.

Molecules are stored stacked, without padding: ``pos`` ``[N, 3]`` (Å), ``atom_type`` ``[N]`` (index
into :data:`molediff.elements.ELEMENTS`), ``charge`` ``[N]`` (formal charges) and ``ptr`` ``[M + 1]``
(atom offsets of the M molecules). Bonds, where known, are stored sparse per molecule: ``bond_index``
``[2, NB]`` (local atom indices, src < dst), ``bond_order`` ``[NB]`` (1, 2, 3: Kekulé form; the data of a model
with an aromatic bond type codes aromatic bonds :data:`molediff.elements.AROMATIC`) and ``bond_ptr`` ``[M + 1]``;
``has_bonds`` ``[M]`` says which molecules have an assignment at all.
Batches carry bonds densely over the unordered atom pairs of each molecule (``pair_index`` with its
``bond_type``, 0 = no bond), the layout the diffusion model diffuses. No RDKit here: training path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # imported where batches are made: PyG costs seconds to import, and sampling never needs it
    from torch_geometric.data import Batch
from molediff.elements import ATOMIC_NUMBERS, ELEMENTS
from molediff.graph import PAIRS, AtomPairs, ptr_from_counts  # noqa: F401 - used here; their home is molediff.graph




@dataclass
class MoleculeSet:
    """Stacked molecules. ``names`` are optional identifiers (QM9 ids, file:record)."""

    pos: torch.Tensor  # [N, 3] float32, Å
    atom_type: torch.Tensor  # [N] int64, index into ELEMENTS
    ptr: torch.Tensor  # [M + 1] int64
    names: list[str] = field(default_factory=list)
    charge: torch.Tensor | None = None  # [N] int64 formal charges (None: all neutral)
    bond_index: torch.Tensor | None = None  # [2, NB] int64, local atom indices, src < dst
    bond_order: torch.Tensor | None = None  # [NB] int64 in 1..3 (Kekulé), or AROMATIC in an aromatic-typed model's data
    bond_ptr: torch.Tensor | None = None  # [M + 1] int64
    has_bonds: torch.Tensor | None = None  # [M] bool: molecules whose bonds are known
    # [M, K] float64: molecular properties, columns as molediff.conditioning.PROPERTY_NAMES (None: unknown)
    props: torch.Tensor | None = None
    # [N] int64: attached hydrogens per atom of a heavy-atom set (hydrogens removed, see heavy_atoms());
    # None: hydrogens are atoms of the set
    hydrogens: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.pos.ndim != 2 or self.pos.shape[1] != 3:
            raise ValueError(f"pos must be [N, 3], got {tuple(self.pos.shape)}")
        if self.atom_type.shape[0] != self.pos.shape[0] or int(self.ptr[-1]) != self.pos.shape[0]:
            raise ValueError("pos, atom_type and ptr disagree on the number of atoms")
        if self.charge is None:
            self.charge = torch.zeros_like(self.atom_type)
        if self.bond_ptr is None:
            self.bond_index = torch.zeros(2, 0, dtype=torch.long)
            self.bond_order = torch.zeros(0, dtype=torch.long)
            self.bond_ptr = torch.zeros(len(self) + 1, dtype=torch.long)
            self.has_bonds = torch.zeros(len(self), dtype=torch.bool)
        elif self.bond_index.shape[1] != int(self.bond_ptr[-1]) or self.bond_ptr.numel() != len(self) + 1:
            raise ValueError("bond_index, bond_order and bond_ptr disagree")
        if self.props is not None and self.props.shape[0] != len(self):
            raise ValueError("props must have one row per molecule")
        if self.hydrogens is not None and self.hydrogens.shape != self.atom_type.shape:
            raise ValueError("hydrogens must have one entry per atom")

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

    def bonds(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(src [k], dst [k], order [k], charge [n])`` of molecule ``i`` (local indices)."""
        a, b = int(self.bond_ptr[i]), int(self.bond_ptr[i + 1])
        charge = self.charge[int(self.ptr[i]) : int(self.ptr[i + 1])].numpy()
        return self.bond_index[0, a:b].numpy(), self.bond_index[1, a:b].numpy(), self.bond_order[a:b].numpy(), charge

    def subset(self, index: np.ndarray | torch.Tensor | list[int]) -> "MoleculeSet":
        """A new set holding molecules ``index`` (in that order; a boolean mask selects)."""
        index = torch.as_tensor(np.asarray(index))
        if index.dtype == torch.bool:
            index = torch.nonzero(index).flatten()
        index = index.long()
        counts = self.num_atoms[index]
        atom_idx = _ranges(self.ptr[index], counts)
        bond_counts = (self.bond_ptr[1:] - self.bond_ptr[:-1])[index]
        bond_idx = _ranges(self.bond_ptr[index], bond_counts)
        names = [self.names[i] for i in index.tolist()] if self.names else []
        return MoleculeSet(self.pos[atom_idx], self.atom_type[atom_idx], ptr_from_counts(counts), names,
                           self.charge[atom_idx], self.bond_index[:, bond_idx], self.bond_order[bond_idx],
                           ptr_from_counts(bond_counts), self.has_bonds[index],
                           self.props[index] if self.props is not None else None,
                           self.hydrogens[atom_idx] if self.hydrogens is not None else None)

    def collate(self, index: np.ndarray | torch.Tensor | list[int]) -> Batch:
        """A PyG :class:`Batch` of molecules ``index``. Vectorised (no per-molecule Python).

        Per atom: ``pos`` [|V|, 3] Å, ``atom_type``, ``charge``, ``z``, ``batch`` [|V|]; ``ptr`` [B + 1];
        per unordered pair of atoms within a molecule: ``pair_index`` [2, |P|] and ``bond_type`` [|P|]
        (0 none, 1 single, 2 double, 3 triple); ``has_bonds`` [B]; ``num_graphs`` = B; ``props`` [B, K]
        when the set has properties; ``hydrogens`` [|V|] for a heavy-atom set.
        """
        from torch_geometric.data import Batch

        sub = self.subset(index)
        counts = sub.num_atoms
        batch = torch.repeat_interleave(torch.arange(len(sub)), counts)
        z = torch.as_tensor(ATOMIC_NUMBERS)[sub.atom_type]
        pair_index = PAIRS(sub.ptr)
        pair_counts = counts * (counts - 1) // 2
        bond_type = torch.zeros(pair_index.shape[1], dtype=torch.long)
        mol_of_bond = torch.repeat_interleave(torch.arange(len(sub)), sub.bond_ptr[1:] - sub.bond_ptr[:-1])
        if mol_of_bond.numel():
            n = counts[mol_of_bond]
            local = AtomPairs.local_pair_id(n, sub.bond_index[0], sub.bond_index[1])
            bond_type[ptr_from_counts(pair_counts)[mol_of_bond] + local] = sub.bond_order
        out = Batch(pos=sub.pos, atom_type=sub.atom_type, charge=sub.charge, z=z, batch=batch, ptr=sub.ptr)
        out.pair_index, out.bond_type, out.has_bonds = pair_index, bond_type, sub.has_bonds
        if sub.props is not None:
            out.props = sub.props
        if sub.hydrogens is not None:
            out.hydrogens = sub.hydrogens
        out._num_graphs = len(sub)
        return out

    @classmethod
    def from_records(cls, records: list) -> "MoleculeSet":
        """Stack ``(symbols [n], pos [n, 3] Å, info)`` records (as ``MoleculeGenerator.sample_arrays``
        yields them); ``info["bonds"]`` = ``(src, dst, order)`` and ``info["charges"]``, when every record
        has them, become the set's bonds and charges."""
        from molediff.elements import SYMBOL_TO_INDEX

        types = [np.array([SYMBOL_TO_INDEX[str(x)] for x in r[0]], dtype=np.int64) for r in records]
        pos = [np.asarray(r[1], dtype=np.float32).reshape(-1, 3) for r in records]
        counts = torch.tensor([len(t) for t in types], dtype=torch.long)
        cat = lambda xs: torch.from_numpy(np.concatenate(xs).astype(np.int64)) if xs else torch.zeros(0, dtype=torch.long)  # noqa: E731
        extra = {}
        infos = [r[2] if len(r) > 2 else {} for r in records]
        if records and all("bonds" in i for i in infos):
            extra = dict(charge=cat([i["charges"] for i in infos]),
                         bond_index=torch.stack([cat([i["bonds"][0] for i in infos]), cat([i["bonds"][1] for i in infos])]),
                         bond_order=cat([i["bonds"][2] for i in infos]),
                         bond_ptr=ptr_from_counts(torch.tensor([len(i["bonds"][2]) for i in infos], dtype=torch.long)),
                         has_bonds=torch.ones(len(records), dtype=torch.bool))
        return cls(torch.from_numpy(np.concatenate(pos)) if pos else torch.zeros(0, 3), cat(types), ptr_from_counts(counts), [], **extra)

    def heavy_atoms(self) -> tuple["MoleculeSet", list[str]]:
        """This set with its hydrogen atoms removed and each remaining atom's count of attached
        hydrogens in ``hydrogens`` (from the bonds), and the names of molecules left out: those without
        bonds, and those with a hydrogen not bonded to exactly one heavy atom (H2, a bridging or lone H),
        whose count would be lost. Vectorised; needs bonds (``has_bonds``). Counts already in
        ``hydrogens`` (a file's implicit hydrogens) are kept and the hydrogen atoms' added to them."""
        n_atoms, m = int(self.ptr[-1]), len(self)
        mol_of_atom = torch.repeat_interleave(torch.arange(m), self.num_atoms)
        mol_of_bond = torch.repeat_interleave(torch.arange(m), self.bond_ptr[1:] - self.bond_ptr[:-1])
        src = self.bond_index[0] + self.ptr[mol_of_bond]
        dst = self.bond_index[1] + self.ptr[mol_of_bond]
        is_h = self.atom_type == ELEMENTS.index("H")
        h_src, h_dst = is_h[src], is_h[dst]
        # each hydrogen must have exactly one bond, and that to a heavy atom
        degree = torch.bincount(torch.cat([src, dst]), minlength=n_atoms)
        heavy_neighbours = torch.zeros(n_atoms, dtype=torch.long).index_add_(0, src, (~h_dst).long()).index_add_(0, dst, (~h_src).long())
        bad_h = is_h & ~((degree == 1) & (heavy_neighbours == 1))
        bad = torch.zeros(m, dtype=torch.bool).index_fill_(0, mol_of_atom[bad_h], True) | ~self.has_bonds
        bad |= torch.zeros(m, dtype=torch.long).index_add_(0, mol_of_atom, (~is_h).long()) == 0  # nothing heavy
        hydrogens = self.hydrogens.clone() if self.hydrogens is not None else torch.zeros(n_atoms, dtype=torch.long)
        hydrogens.index_add_(0, src[h_dst & ~h_src], torch.ones(int((h_dst & ~h_src).sum()), dtype=torch.long))
        hydrogens.index_add_(0, dst[h_src & ~h_dst], torch.ones(int((h_src & ~h_dst).sum()), dtype=torch.long))
        keep_atom = ~is_h & ~bad[mol_of_atom]
        keep_bond = ~h_src & ~h_dst & ~bad[mol_of_bond]
        new_index = torch.cumsum(keep_atom.long(), 0) - 1
        counts = torch.zeros(m, dtype=torch.long).index_add_(0, mol_of_atom, keep_atom.long())
        kept_mols = ~bad
        ptr = ptr_from_counts(counts)
        b_mol = mol_of_bond[keep_bond]
        new_src, new_dst = new_index[src[keep_bond]] - ptr[b_mol], new_index[dst[keep_bond]] - ptr[b_mol]
        bond_counts = torch.zeros(m, dtype=torch.long).index_add_(0, mol_of_bond, keep_bond.long())
        heavy = MoleculeSet(self.pos[keep_atom], self.atom_type[keep_atom], ptr, list(self.names), self.charge[keep_atom],
                            torch.stack([new_src, new_dst]), self.bond_order[keep_bond], ptr_from_counts(bond_counts),
                            self.has_bonds.clone(), self.props, hydrogens[keep_atom])
        left_out = [self.names[i] if self.names else str(i) for i in torch.nonzero(bad).flatten().tolist()]
        return (heavy.subset(kept_mols) if bool(bad.any()) else heavy), left_out

    def size_histogram(self) -> torch.Tensor:
        """Counts of molecules by atom count: entry n is the number of molecules with n atoms."""
        return torch.bincount(self.num_atoms)


def _ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Concatenation of ``arange(s, s + c)`` for each (s, c), vectorised."""
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long)
    offsets = torch.repeat_interleave(starts - torch.cumsum(counts, 0) + counts, counts)
    return torch.arange(total) + offsets
