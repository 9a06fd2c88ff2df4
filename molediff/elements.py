"""The one home of molediff's chemical facts: atom vocabulary, valences and bond-length tables.

Plain Python (no RDKit, no torch) so that the training path and the chemistry layer share it.
Bond lengths are the tables used by the equivariant-diffusion literature (EDM and successors) for
the "lookup" bond perception; units are picometres.
"""

from __future__ import annotations

#: Atom vocabulary of QM9, in the order of the one-hot atom-type features.
ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F")
ATOMIC_NUMBERS: tuple[int, ...] = (1, 6, 7, 8, 9)
SYMBOL_TO_INDEX: dict[str, int] = {s: i for i, s in enumerate(ELEMENTS)}
Z_TO_SYMBOL: dict[int, str] = dict(zip(ATOMIC_NUMBERS, ELEMENTS))

#: Formal charges a model can generate, in the order of the one-hot charge features.
CHARGES: tuple[int, ...] = (-1, 0, 1)
#: Bond types of the per-pair features, in one-hot order (Kekulé form: no aromatic type); value = order.
BOND_ORDERS: tuple[int, ...] = (0, 1, 2, 3)
BOND_NAMES: tuple[str, ...] = ("none", "single", "double", "triple")

#: Allowed valence (sum of bond orders) of a neutral atom, used by the stability metrics.
VALENCE: dict[str, int] = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}

#: Valence (Kekulé bond-order sum, no implicit hydrogens) an atom must have, by element and formal
#: charge: the honest model-bond stability rule. Anything else (a neutral carbon with three bonds, a
#: radical, an unlisted charge) is unstable.
ALLOWED_VALENCE: dict[tuple[str, int], int] = {
    ("H", 0): 1, ("C", 0): 4, ("N", 0): 3, ("O", 0): 2, ("F", 0): 1,
    ("C", -1): 3, ("C", 1): 3, ("N", 1): 4, ("N", -1): 2, ("O", 1): 3, ("O", -1): 1,
}

#: Typical bond lengths in pm, keyed by the unordered element pair (both orders present).
_SINGLE = {
    ("H", "H"): 74, ("C", "H"): 109, ("N", "H"): 101, ("O", "H"): 96, ("F", "H"): 92,
    ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135,
    ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136,
    ("O", "O"): 148, ("O", "F"): 142, ("F", "F"): 142,
}
_DOUBLE = {("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120, ("N", "N"): 125, ("N", "O"): 121, ("O", "O"): 121}
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
