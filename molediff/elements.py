"""The one home of molediff's chemical facts: element table, formal charges, bond types, valences and
bond-length tables, and the :class:`Vocabulary` a model generates from.

Plain Python (no RDKit, no torch) so that the training path and the chemistry layer share it.

Two kinds of index: data sets, metrics and tables index atoms by their position in :data:`ELEMENTS`
(every element molediff supports; QM9's five come first, so a QM9 type index is the same in both),
while a model's one-hot columns follow its own :class:`Vocabulary` (saved in its config), a subset.

Bond lengths are the tables used by the equivariant-diffusion literature for the "lookup" bond
perception (EDM's ``bond_analyze.py``, which covers the GEOM-Drugs elements); units are picometres.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every element molediff reads, writes and scores, in table order (QM9's first: their indices are
#: those of the QM9 caches and of the models trained before the table grew).
ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F", "B", "Si", "P", "S", "Cl", "Br", "I")
ATOMIC_NUMBERS: tuple[int, ...] = (1, 6, 7, 8, 9, 5, 14, 15, 16, 17, 35, 53)
SYMBOL_TO_INDEX: dict[str, int] = {s: i for i, s in enumerate(ELEMENTS)}
Z_TO_SYMBOL: dict[int, str] = dict(zip(ATOMIC_NUMBERS, ELEMENTS))
#: how an attachment point reads (a dummy atom of atomic number 0: ``*`` in SMILES, ``R``/``R#``/``*`` in a
#: MOL/SDF block): in a fragment it marks where generated atoms attach (molediff.chem.io)
ATTACHMENT_POINT = "*"

#: QM9's elements: the vocabulary of every model whose config predates per-model vocabularies.
QM9_ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F")

#: Formal charges a model can generate by default (one-hot order); a model's vocabulary may widen it.
CHARGES: tuple[int, ...] = (-1, 0, 1)
#: Formal charges any table here knows (a vocabulary's charges must come from these).
SUPPORTED_CHARGES: tuple[int, ...] = (-2, -1, 0, 1, 2)
#: Bond types of the per-pair features, in one-hot order; value = order, except :data:`AROMATIC`. A
#: vocabulary's bond types are a prefix: Kekulé models (the default) stop at triple, aromatic models
#: also generate an aromatic type, kekulized after sampling (:func:`molediff.chem.kekule.kekulize`).
BOND_ORDERS: tuple[int, ...] = (0, 1, 2, 3, 4)
BOND_NAMES: tuple[str, ...] = ("none", "single", "double", "triple", "aromatic")
#: the bond-type code of an aromatic bond (not an order: data and output are Kekulé everywhere else)
AROMATIC: int = 4
#: the bond types of a Kekulé model (every model before aromatic types existed)
KEKULE_BOND_ORDERS: tuple[int, ...] = BOND_ORDERS[:4]

#: Valences (Kekulé bond-order sum, attached hydrogens included, no implicit ones) an atom may have, by
#: element and formal charge: the honest model-bond stability rule. Anything else (a neutral carbon
#: with three bonds, a radical, an unlisted charge, a five-bonded sulfur) is unstable.
ALLOWED_VALENCE: dict[tuple[str, int], frozenset[int]] = {
    key: frozenset(v) for key, v in {
        ("H", 0): (1,),
        ("B", 0): (3,), ("B", -1): (4,),
        ("C", 0): (4,), ("C", -1): (3,), ("C", 1): (3,),
        ("N", 0): (3,), ("N", 1): (4,), ("N", -1): (2,),
        ("O", 0): (2,), ("O", 1): (3,), ("O", -1): (1,),
        ("F", 0): (1,), ("Cl", 0): (1,), ("Br", 0): (1,), ("I", 0): (1,),
        ("F", -1): (0,), ("Cl", -1): (0,), ("Br", -1): (0,), ("I", -1): (0,),  # halide ions
        ("Si", 0): (4,),
        ("P", 0): (3, 5), ("P", 1): (4,),  # phosphines, phosphates; phosphonium
        ("S", 0): (2, 4, 6), ("S", 1): (3,), ("S", -1): (1,),  # thioethers, sulfoxides, sulfones; sulfonium
    }.items()
}

#: Valences of the published lookup rule (EDM's ``allowed_bonds``; neutral atoms, bonds perceived
#: from distances). Kept as published so that lookup figures compare with papers.
LOOKUP_VALENCE: dict[str, frozenset[int]] = {
    s: frozenset(v) for s, v in {"H": (1,), "C": (4,), "N": (3,), "O": (2,), "F": (1,), "B": (3,), "Si": (4,),
                                 "P": (3, 5), "S": (4,), "Cl": (1,), "Br": (1,), "I": (1,)}.items()
}

#: Typical bond lengths in pm, keyed by the unordered element pair (both orders present); EDM's tables.
_SINGLE = {
    ("H", "H"): 74, ("C", "H"): 109, ("N", "H"): 101, ("O", "H"): 96, ("F", "H"): 92,
    ("B", "H"): 119, ("Si", "H"): 148, ("P", "H"): 144, ("S", "H"): 134, ("Cl", "H"): 127, ("Br", "H"): 141,
    ("I", "H"): 161,
    ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135, ("C", "Si"): 185, ("C", "P"): 184,
    ("C", "S"): 182, ("C", "Cl"): 177, ("C", "Br"): 194, ("C", "I"): 214,
    ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136, ("N", "Cl"): 175, ("N", "Br"): 214, ("N", "S"): 168,
    ("N", "I"): 222, ("N", "P"): 177,
    ("O", "O"): 148, ("O", "F"): 142, ("O", "Br"): 172, ("O", "S"): 151, ("O", "P"): 163, ("O", "Si"): 163,
    ("O", "Cl"): 164, ("O", "I"): 194,
    ("F", "F"): 142, ("F", "S"): 158, ("F", "Si"): 160, ("F", "Cl"): 166, ("F", "Br"): 178, ("F", "P"): 156,
    ("F", "I"): 187,
    ("B", "Cl"): 175,
    ("Si", "Si"): 233, ("Si", "S"): 200, ("Si", "Cl"): 202, ("Si", "Br"): 215, ("Si", "I"): 243,
    ("Cl", "Cl"): 199, ("Cl", "P"): 203, ("Cl", "S"): 207, ("Cl", "Br"): 214,
    ("S", "S"): 204, ("S", "Br"): 225, ("S", "P"): 210, ("S", "I"): 234,
    ("Br", "Br"): 228, ("Br", "P"): 222,
    ("P", "P"): 221,
    ("I", "I"): 266,
}
_DOUBLE = {("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120, ("C", "S"): 160, ("N", "N"): 125, ("N", "O"): 121,
           ("O", "O"): 121, ("O", "P"): 150, ("P", "S"): 186}
_TRIPLE = {("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110}


def _symmetric(table: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    out = dict(table)
    out.update({(b, a): v for (a, b), v in table.items()})
    return out


BOND_SINGLE_PM = _symmetric(_SINGLE)
BOND_DOUBLE_PM = _symmetric(_DOUBLE)
BOND_TRIPLE_PM = _symmetric(_TRIPLE)

#: Margins (pm) added to the single / double / triple lengths by the lookup rule.
BOND_MARGINS_PM: tuple[int, int, int] = (10, 5, 3)


@dataclass(frozen=True)
class Vocabulary:
    """What one model generates: its ``elements`` (one-hot order of the atom-type part), its formal
    ``charges`` (one-hot order of the charge part), its ``bond_orders`` (of the bond part) and, for a
    heavy-atom model, the attached-hydrogen counts 0 .. ``max_hydrogens`` (0: the model has explicit
    hydrogens as atoms and no count part). Saved as fields of the model's config."""

    elements: tuple[str, ...] = QM9_ELEMENTS
    charges: tuple[int, ...] = CHARGES
    bond_orders: tuple[int, ...] = KEKULE_BOND_ORDERS
    max_hydrogens: int = 0

    def __post_init__(self) -> None:
        unknown = [e for e in self.elements if e not in SYMBOL_TO_INDEX]
        if unknown:
            raise ValueError(f"elements {unknown} are not in molediff's table ({', '.join(ELEMENTS)})")
        if len(set(self.elements)) != len(self.elements) or not self.elements:
            raise ValueError(f"a vocabulary needs distinct elements, got {list(self.elements)}")
        if not set(self.charges) <= set(SUPPORTED_CHARGES) or 0 not in self.charges or len(set(self.charges)) != len(self.charges):
            raise ValueError(f"charges must be distinct values of {list(SUPPORTED_CHARGES)} including 0, got {list(self.charges)}")
        if tuple(self.bond_orders) != BOND_ORDERS[: len(self.bond_orders)] or len(self.bond_orders) < 2:
            raise ValueError(f"bond orders must be a prefix of {list(BOND_ORDERS)} (from none and single), got {list(self.bond_orders)}")
        if not 0 <= self.max_hydrogens <= 8:
            raise ValueError(f"max_hydrogens must be in 0..8, got {self.max_hydrogens}")
        if self.max_hydrogens and "H" in self.elements:
            raise ValueError("a heavy-atom vocabulary (hydrogen counts) cannot also hold H as an atom")

    @property
    def heavy_atom(self) -> bool:
        """True for a model that generates attached-hydrogen counts instead of hydrogen atoms."""
        return self.max_hydrogens > 0

    @property
    def table_index(self) -> tuple[int, ...]:
        """For each vocabulary element its index in :data:`ELEMENTS` (model column → table index)."""
        return tuple(SYMBOL_TO_INDEX[e] for e in self.elements)

    def column_of_table(self) -> list[int]:
        """``[len(ELEMENTS)]``: each table index's column in this vocabulary, −1 where it has none."""
        out = [-1] * len(ELEMENTS)
        for col, idx in enumerate(self.table_index):
            out[idx] = col
        return out

    @property
    def aromatic(self) -> bool:
        """True for a model that generates an aromatic bond type (kekulized after sampling)."""
        return AROMATIC in self.bond_orders

    @property
    def bond_names(self) -> tuple[str, ...]:
        return BOND_NAMES[: len(self.bond_orders)]


QM9_VOCABULARY = Vocabulary()
