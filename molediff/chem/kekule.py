"""Kekulé bonds for generated aromatic bonds (numpy and plain Python: no RDKit, training path), and the
feedback a self-conditioned model reads about its previous estimate (:func:`valence_feedback`;
:func:`ring_feedback`, the one function here that asks RDKit, for its ring perception).

A model with an aromatic bond type (:data:`molediff.elements.AROMATIC`) writes "aromatic" for the
ring bonds of a benzene or a pyridine instead of choosing one of their two Kekulé forms: the choice of
alternating single and double bonds is made here, from the atoms' elements, formal charges and
hydrogens, so that everything downstream (valence checks, SDF files, RDKit) sees ordinary orders 1–3.

The rule is RDKit's: an atom of an aromatic system takes one double bond among its aromatic bonds
exactly when its valence (bond orders counted as single, hydrogens included) is one short of an
allowed valence (:data:`molediff.elements.ALLOWED_VALENCE`: a pyridine N or a benzene C does, a
pyrrole NH, a furan O or a carbonyl C of a pyridone does not); the double bonds are then a perfect
matching of those atoms along aromatic bonds, found by a search that takes the most constrained atom
first. Where no such matching exists (an odd ring, a carbon with no partner) the aromatic bonds left
over stay single, so that the atoms concerned fail the honest valence rule, as they should.
"""

from __future__ import annotations

import numpy as np

from molediff.chem.bonds import valence_allowed
from molediff.elements import AROMATIC

__all__ = ["kekulize", "valence_feedback"]

#: search steps per aromatic system before giving up (a real system needs a few dozen)
_MAX_STEPS = 20_000


def kekulize(atom_type: np.ndarray, charge: np.ndarray, src: np.ndarray, dst: np.ndarray, order: np.ndarray,
             hydrogens: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Kekulé orders for bonds some of which are aromatic.

    Args:
        atom_type: ``[N]`` indices into :data:`~molediff.elements.ELEMENTS`.
        charge: ``[N]`` formal charges.
        src, dst: ``[NB]`` atom indices of each bond (any molecules: systems are found by connectivity).
        order: ``[NB]`` bond types 1, 2, 3 or :data:`~molediff.elements.AROMATIC`.
        hydrogens: ``[N]`` attached-hydrogen counts of a heavy-atom model (None: hydrogens are atoms,
            bonded with single bonds among ``src``/``dst``).

    Returns:
        ``(orders, ok)``: ``[NB]`` int64 orders 1–3 (non-aromatic bonds unchanged) and ``[N]`` bool,
        False for the atoms of an aromatic system that has no Kekulé form (its leftover bonds single).
    """
    from molediff.chem.model_bonds import allowed_valences

    order = np.asarray(order, dtype=np.int64)
    out = order.copy()
    n = len(atom_type)
    ok = np.ones(n, dtype=bool)
    aromatic = order == AROMATIC
    if not aromatic.any():
        return out, ok
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    base = np.zeros(n, dtype=np.int64)
    np.add.at(base, src, np.where(aromatic, 1, order))
    np.add.at(base, dst, np.where(aromatic, 1, order))
    if hydrogens is not None:
        base += np.asarray(hydrogens, dtype=np.int64)
    mask = allowed_valences(np.asarray(atom_type), np.asarray(charge))
    needs = ~valence_allowed(mask, base) & valence_allowed(mask, base + 1)
    out[aromatic] = 1
    # candidate double bonds: aromatic bonds between two atoms that each need one
    cand = np.flatnonzero(aromatic & needs[src] & needs[dst])
    partners: dict[int, list[tuple[int, int]]] = {}
    for b in cand.tolist():
        i, j = int(src[b]), int(dst[b])
        partners.setdefault(i, []).append((j, b))
        partners.setdefault(j, []).append((i, b))
    in_system = np.zeros(n, dtype=bool)
    in_system[src[aromatic]] = True
    in_system[dst[aromatic]] = True
    lonely = np.flatnonzero(needs & in_system)
    seen: set[int] = set()
    for start in lonely.tolist():
        if start in seen:
            continue
        # one connected set of atoms that need a double bond, matched on its own
        component, stack = [], [start]
        seen.add(start)
        while stack:
            a = stack.pop()
            component.append(a)
            for nb, _ in partners.get(a, ()):
                if nb not in seen:
                    seen.add(nb)
                    stack.append(nb)
        matching = _perfect_matching(component, partners)
        if matching is None:
            ok[component] = False
            matching = _greedy_matching(component, partners)
        out[matching] = 2
    # atoms whose valence cannot be reached by one double bond either way are left to the valence rule
    return out, ok


def _perfect_matching(atoms: list[int], partners: dict[int, list[tuple[int, int]]]) -> list[int] | None:
    """Bond indices pairing every atom of ``atoms`` once (None when there is no such pairing or the
    search runs past :data:`_MAX_STEPS`); the most constrained atom is matched first."""
    if len(atoms) % 2:
        return None
    free = set(atoms)
    # free partners per atom, kept up to date as atoms are matched and unmatched (the choice of atom is
    # the same as recounting them each time: the first free atom with the fewest, in the set's order)
    degree = {a: sum(nb in free for nb, _ in partners.get(a, ())) for a in atoms}
    chosen: list[int] = []
    steps = 0

    def take(pair: tuple[int, int], delta: int) -> None:
        for a in pair:
            for nb, _ in partners.get(a, ()):
                degree[nb] += delta

    def search() -> bool:
        nonlocal steps
        if not free:
            return True
        steps += 1
        if steps > _MAX_STEPS:
            return False
        atom = min(free, key=degree.__getitem__)
        for nb, bond in partners.get(atom, ()):
            if nb in free:
                free.difference_update((atom, nb))
                take((atom, nb), -1)
                chosen.append(bond)
                if search():
                    return True
                chosen.pop()
                take((atom, nb), 1)
                free.update((atom, nb))
        return False

    return chosen if search() else None


def _greedy_matching(atoms: list[int], partners: dict[int, list[tuple[int, int]]]) -> list[int]:
    """A maximal (not maximum) set of double bonds for a system without a Kekulé form."""
    free, chosen = set(atoms), []
    for a in atoms:
        if a not in free:
            continue
        for nb, bond in partners.get(a, ()):
            if nb in free:
                free.difference_update((a, nb))
                chosen.append(bond)
                break
    return chosen


def valence_feedback(atom_type: np.ndarray, charge: np.ndarray, src: np.ndarray, dst: np.ndarray, order: np.ndarray,
                     hydrogens: np.ndarray | None = None) -> np.ndarray:
    """What the decoding rules say of each atom of a (estimated) molecule: ``[N, 2]`` bool, column 0
    "its aromatic system has no Kekulé form" (:func:`kekulize`), column 1 "its valence after
    kekulization is not an allowed one" (the honest rule of
    :func:`molediff.chem.model_bonds.model_bond_stability`). Arguments as :func:`kekulize`; bonds of
    order 0 are ignored."""
    from molediff.chem.model_bonds import model_bond_stability

    order = np.asarray(order, dtype=np.int64)
    keep = order > 0
    src, dst, order = np.asarray(src)[keep], np.asarray(dst)[keep], order[keep]
    kekule, ok = kekulize(atom_type, charge, src, dst, order, hydrogens)
    # the honest rule's own per-atom check (molecule boundaries do not matter for it: one span)
    stable, _ = model_bond_stability(np.asarray(atom_type), np.asarray(charge), np.array([0, len(atom_type)]), src, dst,
                                     kekule, hydrogens)
    return np.stack([~ok, ~stable], axis=1)


#: the ring sizes :func:`ring_feedback` tells apart (the last one: that size or larger)
RING_FEEDBACK_SIZES = (3, 4, 5, 6, 7)


def ring_feedback(num_atoms: int, src: np.ndarray, dst: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The smallest ring each atom of an (estimated) bond graph lies in: ``[num_atoms, 5]`` bool, one-hot
    over 3, 4, 5, 6 and 7-or-more ring atoms (:data:`RING_FEEDBACK_SIZES`), all False for an atom in no
    ring. Rings are those of RDKit's symmetrized smallest set of smallest rings of the graph of bonds
    with ``order`` > 0 (bond types do not matter; molecules of a batch may share one graph)."""
    from rdkit import Chem

    from molediff.chem.rdkit_mol import mol_from_bonds

    keep = np.asarray(order) > 0
    mol = mol_from_bonds(["C"] * num_atoms, np.asarray(src)[keep], np.asarray(dst)[keep], np.ones(int(keep.sum()), dtype=np.int64))
    smallest = np.zeros(num_atoms, dtype=np.int64)  # 0: in no ring
    for ring in Chem.GetSymmSSSR(mol):
        idx = np.asarray(list(ring))
        smallest[idx] = np.where(smallest[idx] > 0, np.minimum(smallest[idx], len(idx)), len(idx))
    sizes = np.asarray(RING_FEEDBACK_SIZES)
    return np.minimum(smallest, sizes[-1])[:, None] == sizes[None, :]
