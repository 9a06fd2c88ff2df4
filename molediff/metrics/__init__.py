"""Quality metrics of generated 3D molecules, with the conventions of the equivariant-diffusion
literature (EDM) so numbers are comparable with published tables.

Metrics (fractions in [0, 1]):

* ``atom_stability`` / ``molecule_stability`` — an atom is stable when the sum of its lookup bond
  orders is a valence its element allows (:data:`molediff.elements.LOOKUP_VALENCE`); a molecule when all its
  atoms are. Always computed with lookup bonds (numpy only, vectorised over all molecules).
* ``validity`` — RDKit ``SanitizeMol`` passes on the molecule built with the chosen bond perception;
  the canonical SMILES of its largest fragment is kept (published, lenient: RDKit fills missing
  valence with implicit hydrogens).
* ``strict_validity`` — valid, no implicit hydrogens/radicals needed, one fragment.
* ``uniqueness`` — distinct SMILES among valid; ``valid_x_unique`` — distinct valid SMILES / all.
* ``novelty`` — fraction of the distinct valid SMILES absent from a reference set of SMILES processed
  the same way (same bond perception, largest fragment; :func:`smiles_set`), e.g. the QM9 training
  split; ``valid_unique_novel`` — novel / all.
* ``connected`` — fraction of molecules whose bond graph is one fragment.

Distribution checks against reference statistics (:func:`distribution_statistics`; the QM9 training
split's are built and cached by :mod:`molediff.data.reference`): atom-type and molecule-size total
variation, Wasserstein-1 of bond lengths per bond type (Å) and of bond angles per angle type
(degrees), ring sizes per molecule, QED / logP / MolWt mean and std; the geometry samples and the
comparison live in :mod:`molediff.metrics.distributions`.

The functions here are pure: their reference data (the novelty SMILES, the distribution statistics)
comes in as arguments (both given by one :class:`molediff.metrics.reference.Reference`, the reference
object of every metric); this module imports :mod:`molediff.chem` and :mod:`molediff.elements` only,
never :mod:`molediff.data`. RDKit is only reached through :mod:`molediff.chem`, imported lazily: the
stability and distribution helpers work without it.

The drug-discovery metrics are submodules, one per family (importing this package imports none):
``moses``, ``fingerprints``, ``fcd``, ``sascore``, ``properties``, ``rings``, ``relaxation``,
``posebusters``, ``reference``, ``moses_data``, ``report``, and ``druglike`` (all of them at once);
``molecule_table`` (every per-molecule score as a DataFrame) and ``html_report`` (the report page).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping, NamedTuple

import numpy as np

from molediff.chem.distances import total_variation, wasserstein1  # noqa: F401 - part of this module's API
from molediff.chem.bonds import BOND_MODES, LOOKUP_VALENCE_MASK, BondList, check_bond_mode, valence_allowed, lookup_bonds_stacked, symbols_to_types, valence_sums
from molediff.elements import ELEMENTS
from molediff.metrics.distributions import (bond_angle_samples, bond_length_samples, bond_type_counts, bond_type_tv, distribution_metrics,
                                            fraction)

__all__ = [
    "PUBLISHED_EDM_PERCENT",
    "PUBLISHED_QM9_DATA_PERCENT",
    "EvaluationDetails",
    "RDKitPass",
    "StackedMolecules",
    "bond_angle_samples",
    "bond_length_samples",
    "bond_type_counts",
    "bond_type_tv",
    "distribution_statistics",
    "evaluate_molecules",
    "evaluate_molecules_detailed",
    "model_bond_metrics",
    "model_bond_scores_of",
    "rdkit_pass",
    "sample_metrics",
    "smiles_set",
    "stability",
    "stack_molecules",
    "total_variation",
    "wasserstein1",
    "written_bond_types",
    "written_bonds",
]

#: The "Data" row of EDM's QM9 table (Hoogeboom et al., 2022), lookup bonds, in percent: the scores of
#: QM9's own geometries. The one place these numbers live.
PUBLISHED_QM9_DATA_PERCENT: dict[str, float] = {
    "atom_stability": 99.0,
    "molecule_stability": 95.2,
    "validity": 97.7,
    "valid_x_unique": 97.7,
    "uniqueness": 100.0,
}

#: EDM's own row of the same table (1,000 reverse steps, GPU-days of training), in percent.
PUBLISHED_EDM_PERCENT: dict[str, float] = {
    "atom_stability": 98.7,
    "molecule_stability": 82.0,
    "validity": 91.9,
    "valid_x_unique": 90.7,
    "novelty": 58.0,
}

# ----------------------------------------------------------------------------- stacking / stability


class StackedMolecules(NamedTuple):
    """Molecules as stacked arrays (``atom_type`` [N] into ELEMENTS, ``pos`` [N, 3] Å, ``ptr`` [M + 1]);
    accepted wherever a :class:`~molediff.data.molecules.MoleculeSet` is, for scoring."""

    atom_type: np.ndarray
    pos: np.ndarray
    ptr: np.ndarray


def stack_molecules(molecules: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack molecules into ``(atom_type [N] int64, pos [N, 3] float64 Å, ptr [M + 1] int64)``.

    Accepts a :class:`molediff.data.molecules.MoleculeSet` or a sequence of ``(symbols, pos)`` /
    ``(symbols, pos, metadata)``. Raises ``ValueError`` naming elements outside the vocabulary."""
    if hasattr(molecules, "ptr") and hasattr(molecules, "atom_type") and hasattr(molecules, "pos"):
        return (
            np.asarray(molecules.atom_type, dtype=np.int64),
            np.asarray(molecules.pos, dtype=np.float64).reshape(-1, 3),
            np.asarray(molecules.ptr, dtype=np.int64),
        )
    types, coords, counts = [], [], []
    for k, mol in enumerate(molecules):
        symbols, pos = mol[0], np.asarray(mol[1], dtype=np.float64).reshape(-1, 3)
        if len(symbols) != len(pos):
            raise ValueError(f"molecule {k}: {len(symbols)} symbols but {len(pos)} positions")
        types.append(symbols_to_types(symbols))
        coords.append(pos)
        counts.append(len(symbols))
    ptr = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    if not counts:
        return np.zeros(0, np.int64), np.zeros((0, 3)), ptr
    return np.concatenate(types), np.concatenate(coords), ptr


def _molecule_index(ptr: np.ndarray) -> np.ndarray:
    """``[N]`` molecule index of every atom."""
    return np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))


def stability(atom_type: np.ndarray, ptr: np.ndarray, bonds: BondList) -> tuple[np.ndarray, np.ndarray]:
    """``(atom_stable [N] bool, molecule_stable [M] bool)``: the bond-order sum is a valence the lookup
    rule allows for the element (:data:`molediff.elements.LOOKUP_VALENCE`)."""
    atom_stable = valence_allowed(LOOKUP_VALENCE_MASK[atom_type], valence_sums(len(atom_type), bonds))
    unstable_per_mol = np.bincount(_molecule_index(ptr), weights=~atom_stable, minlength=len(ptr) - 1)
    return atom_stable, (unstable_per_mol == 0) & (np.diff(ptr) > 0)


# ----------------------------------------------------------------------------- RDKit analysis loop


@dataclass
class RDKitPass:
    """What :func:`rdkit_pass` found, per molecule and over the valid ones."""

    valid: np.ndarray  # [M] bool
    strict_valid: np.ndarray  # [M] bool
    num_fragments: np.ndarray  # [M] int
    smiles: list[str | None]  # [M]
    ring_sizes: Counter  # size -> number of rings over valid molecules
    properties: dict[str, np.ndarray]  # name -> [num valid with properties]


def rdkit_pass(
    atom_type: np.ndarray,
    pos: np.ndarray,
    ptr: np.ndarray,
    lookup: BondList,
    bonds: str,
    properties: bool,
    progress: bool,
    desc: str,
) -> RDKitPass:
    """Per-molecule RDKit work on stacked molecules (the slow part: ~0.3 ms per QM9-sized molecule with
    lookup bonds): validity, strict validity, fragments, largest-fragment SMILES, ring sizes and, with
    ``properties``, QED / logP / MolWt of the valid ones. ``lookup`` are the lookup bonds of all
    molecules (:func:`molediff.chem.bonds.lookup_bonds_stacked`), used when ``bonds`` is ``"lookup"``."""
    from tqdm import tqdm

    from molediff.chem.analysis import DESCRIPTOR_NAMES, analyse_molecule

    m = len(ptr) - 1
    symbols_all = np.array(ELEMENTS)[atom_type]
    edge_ptr = np.searchsorted(lookup.src, ptr)  # bonds are sorted by src, molecules are contiguous
    valid = np.zeros(m, dtype=bool)
    strict = np.zeros(m, dtype=bool)
    frags = np.zeros(m, dtype=np.int64)
    smiles: list[str | None] = [None] * m
    rings: Counter = Counter()
    props: dict[str, list[float]] = {k: [] for k in DESCRIPTOR_NAMES}
    for k in tqdm(range(m), desc=desc, disable=not progress, unit="mol", mininterval=0.5):
        a, b = int(ptr[k]), int(ptr[k + 1])
        ea, eb = int(edge_ptr[k]), int(edge_ptr[k + 1])
        edges = (lookup.src[ea:eb] - a, lookup.dst[ea:eb] - a, lookup.order[ea:eb])
        result = analyse_molecule(symbols_all[a:b], pos[a:b], bonds=bonds, edges=edges, properties=properties)
        valid[k], strict[k], frags[k], smiles[k] = result.valid, result.strict_valid, result.num_fragments, result.smiles
        rings.update(result.ring_sizes)
        if result.properties:
            for name in DESCRIPTOR_NAMES:
                props[name].append(result.properties[name])
    return RDKitPass(valid, strict, frags, smiles, rings, {k: np.asarray(v) for k, v in props.items()})


# ----------------------------------------------------------------------------- references (passed in)


def _check_reference_args(reference: Any, novelty: Any) -> tuple[Mapping[str, Any] | None, Collection[str] | None]:
    """``False``/``None`` -> no reference; ``True`` is refused: the data must be passed in."""
    if reference is True or novelty is True:
        raise TypeError(
            "molediff.metrics takes its reference data as arguments: pass reference=<statistics dict> "
            "(molediff.data.reference.reference_statistics(bonds) for QM9, or distribution_statistics(molecules)) "
            "and novelty=<set of SMILES> (molediff.data.reference.training_smiles(bonds), or smiles_set(molecules)), "
            "not True")
    return (reference or None), (novelty if novelty is not None and novelty is not False else None)


def smiles_set(molecules: Any, bonds: str = "lookup", progress: bool = False, desc: str = "reference SMILES") -> frozenset[str]:
    """Canonical largest-fragment SMILES of the valid molecules of ``molecules``, perceived with
    ``bonds`` exactly as :func:`evaluate_molecules` perceives generated ones (``"model"``: their own
    bonds and charges, scored by :func:`model_bond_metrics`' rule); a novelty reference."""
    check_bond_mode(bonds, BOND_MODES)
    if bonds == "model":
        smiles = model_bond_metrics(molecules, novelty=None, progress=progress, desc=desc)[1]
    else:
        atom_type, pos, ptr = stack_molecules(molecules)
        lookup = lookup_bonds_stacked(atom_type, pos, ptr)
        smiles = rdkit_pass(atom_type, pos, ptr, lookup, bonds, False, progress, desc).smiles
    return frozenset(s for s in smiles if s is not None)


def distribution_statistics(
    molecules: Any, bonds: str = "lookup", progress: bool = False, description: str = "reference", desc: str = "reference statistics"
) -> dict[str, Any]:
    """The distribution reference of ``molecules`` (what :func:`evaluate_molecules` compares against):
    ``atom_type_counts`` [E], ``num_atoms_hist`` [n_max + 1], ``bond_lengths`` / ``bond_angles`` (type ->
    sorted float64 array, Å / degrees, lookup bonds), ``ring_sizes`` (size -> rings per valid molecule),
    ``properties`` (name -> float64 array over valid molecules, validity under ``bonds``),
    ``num_molecules`` and ``description`` (how the table names the reference)."""
    check_bond_mode(bonds)
    atom_type, pos, ptr = stack_molecules(molecules)
    lookup = lookup_bonds_stacked(atom_type, pos, ptr)
    rd = rdkit_pass(atom_type, pos, ptr, lookup, bonds, True, progress, desc)
    n_valid = max(1, int(rd.valid.sum()))
    return {
        "description": description,
        "num_molecules": len(ptr) - 1,
        "atom_type_counts": np.bincount(atom_type, minlength=len(ELEMENTS)),
        "num_atoms_hist": np.bincount(np.diff(ptr)),
        "bond_lengths": {k: np.sort(v) for k, v in bond_length_samples(atom_type, pos, lookup).items()},
        "bond_angles": {k: np.sort(v) for k, v in bond_angle_samples(atom_type, pos, lookup).items()},
        "ring_sizes": {int(s): c / n_valid for s, c in sorted(rd.ring_sizes.items())},
        "properties": {k: np.asarray(v, dtype=np.float64) for k, v in rd.properties.items()},
    }


@dataclass
class EvaluationDetails:
    """Per-molecule and per-sample data behind the metrics (for reports and SDF annotation).

    ``smiles`` [M] (None when invalid), ``valid`` / ``strict_valid`` / ``stable`` / ``connected`` [M]
    bool, ``atom_stable`` [N] bool, ``atom_type`` [N], ``ptr`` [M + 1], ``bond_lengths`` (Å) /
    ``bond_angles`` (degrees) by type, ``ring_sizes`` (size -> count), ``properties`` (name -> [V]; empty
    when not computed),
    ``reference`` (the reference statistics dict, when one was given)."""

    smiles: list[str | None]
    valid: np.ndarray
    strict_valid: np.ndarray
    stable: np.ndarray
    connected: np.ndarray
    atom_stable: np.ndarray
    atom_type: np.ndarray
    ptr: np.ndarray
    bond_lengths: dict[str, np.ndarray] = field(default_factory=dict)
    bond_angles: dict[str, np.ndarray] = field(default_factory=dict)
    ring_sizes: Counter = field(default_factory=Counter)
    properties: dict[str, np.ndarray] = field(default_factory=dict)
    reference: dict[str, Any] | None = None


def evaluate_molecules_detailed(
    molecules: Any,
    bonds: str = "lookup",
    reference: Mapping[str, Any] | None = None,
    novelty: Collection[str] | None = None,
    progress: bool = True,
    properties: bool | None = None,
) -> tuple[dict[str, Any], EvaluationDetails]:
    """Like :func:`evaluate_molecules`, also returning the :class:`EvaluationDetails`.

    The details always hold the samples' own bond lengths and angles (lookup bonds; cheap) and ring
    sizes; their QED / logP / MolWt (the slow RDKit descriptors) when ``properties`` is True, or, by
    default (None), when a ``reference`` is given: a report without a reference still plots the samples."""
    check_bond_mode(bonds)
    reference, novelty = _check_reference_args(reference, novelty)
    properties = reference is not None if properties is None else bool(properties)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    atom_type, pos, ptr = stack_molecules(molecules)
    m = len(ptr) - 1
    lookup = lookup_bonds_stacked(atom_type, pos, ptr)
    atom_stable, mol_stable = stability(atom_type, ptr, lookup)
    timings["lookup_and_stability"] = time.perf_counter() - t0

    t = time.perf_counter()
    rd = rdkit_pass(atom_type, pos, ptr, lookup, bonds, properties, progress, f"evaluating ({bonds} bonds)")
    timings["rdkit"] = time.perf_counter() - t

    valid_smiles = [s for s in rd.smiles if s is not None]
    unique = set(valid_smiles)
    n_valid = len(valid_smiles)
    result: dict[str, Any] = {
        "num_molecules": m,
        "num_atoms": int(len(atom_type)),
        "bonds": bonds,
        "atom_stability": fraction(atom_stable.sum(), len(atom_stable)),
        "molecule_stability": fraction(mol_stable.sum(), m),
        "validity": fraction(n_valid, m),
        "strict_validity": fraction(rd.strict_valid.sum(), m),
        "uniqueness": fraction(len(unique), n_valid),
        "valid_x_unique": fraction(len(unique), m),
        "novelty": None,
        "valid_unique_novel": None,
        "connected": fraction((rd.num_fragments == 1).sum(), m),
        "num_valid": n_valid,
        "num_unique": len(unique),
        "num_novel": None,
        "stability_bonds": "lookup",
    }
    if novelty is not None:
        t = time.perf_counter()
        novel = unique - frozenset(novelty)
        result.update(novelty=fraction(len(novel), len(unique)), valid_unique_novel=fraction(len(novel), m), num_novel=len(novel))
        timings["novelty"] = time.perf_counter() - t

    details = EvaluationDetails(
        smiles=rd.smiles,
        valid=rd.valid,
        strict_valid=rd.strict_valid,
        stable=mol_stable,
        connected=rd.num_fragments == 1,
        atom_stable=atom_stable,
        atom_type=atom_type,
        ptr=ptr,
        ring_sizes=rd.ring_sizes,
        properties=rd.properties if properties else {},  # {}: not computed (an empty array: no valid molecule)
        # the samples' own geometry, with or without a reference (a report plots it either way)
        bond_lengths=bond_length_samples(atom_type, pos, lookup),
        bond_angles=bond_angle_samples(atom_type, pos, lookup),
    )
    if reference is not None:
        t = time.perf_counter()
        ref = reference
        details.reference = dict(ref)
        result["distributions"] = distribution_metrics(atom_type, ptr, details, ref, n_valid)
        timings["distributions"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    result["seconds"] = {k: round(v, 3) for k, v in timings.items()}
    return result, details


def evaluate_molecules(molecules: Any, bonds: str = "lookup", reference: Mapping[str, Any] | None = None,
                       novelty: Collection[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Score generated 3D molecules; the one entry point for the CLI and the sampler (the metrics of
    :func:`evaluate_molecules_detailed`, which takes the same arguments, without the details).

    Args:
        molecules: a :class:`~molediff.data.molecules.MoleculeSet` or a sequence of ``(symbols [n],
            pos [n, 3] Å)`` (optionally with a third metadata item, ignored). Elements must be in
            :data:`molediff.elements.ELEMENTS` (``ValueError`` otherwise).
        bonds: bond perception for validity / uniqueness / novelty / rings / properties: ``"lookup"``
            (EDM convention, comparable with published tables) or ``"rdkit"`` (``rdDetermineBonds``).
            Stability and bond-length/angle distributions always use lookup bonds.
        reference: reference statistics for the distribution checks (:func:`distribution_statistics`
            of any molecules, or the QM9 training split's from
            :func:`molediff.data.reference.reference_statistics`); ``None`` (or ``False``): none.
        novelty: the reference SMILES for novelty, perceived with the same ``bonds``
            (:func:`smiles_set`, or :func:`molediff.data.reference.training_smiles` for QM9);
            ``None`` (or ``False``): no novelty.
        progress: tqdm progress bars on stderr.

    Returns:
        JSON-serialisable dict: fractions in [0, 1] for ``atom_stability``, ``molecule_stability``,
        ``validity``, ``strict_validity``, ``uniqueness``, ``valid_x_unique``, ``novelty`` and
        ``valid_unique_novel`` (``None`` without novelty), ``connected``; counts ``num_molecules``,
        ``num_atoms``, ``num_valid``, ``num_unique``, ``num_novel``; ``distributions`` (with
        ``reference``); ``seconds`` (timings).
    """
    return evaluate_molecules_detailed(molecules, bonds=bonds, reference=reference, novelty=novelty, progress=progress)[0]


def written_bonds(molecules: Any) -> tuple[np.ndarray, np.ndarray, BondList]:
    """A :class:`~molediff.data.molecules.MoleculeSet`'s own bonds, stacked: ``(atom_type [N], ptr [M + 1],
    bonds)`` with global atom indices (each molecule's local ones shifted by its first atom) and Kekulé orders.
    The data of a model with an aromatic bond type codes aromatic bonds as such
    (:data:`~molediff.elements.AROMATIC`); they are kekulized here (:func:`molediff.chem.kekule.kekulize`,
    with the set's charges and hydrogen counts), as that model's samples are decoded, so both count alike."""
    from molediff.elements import AROMATIC

    atom_type, _, ptr = stack_molecules(molecules)
    index = np.asarray(molecules.bond_index, dtype=np.int64).reshape(2, -1)
    offset = np.repeat(ptr[:-1], np.diff(np.asarray(molecules.bond_ptr, dtype=np.int64)))
    src, dst, order = index[0] + offset, index[1] + offset, np.asarray(molecules.bond_order, dtype=np.int64)
    if (order == AROMATIC).any():
        from molediff.chem.kekule import kekulize

        hydrogens = None if molecules.hydrogens is None else np.asarray(molecules.hydrogens, dtype=np.int64)
        order, _ = kekulize(atom_type, np.asarray(molecules.charge, dtype=np.int64), src, dst, order, hydrogens)
    return atom_type, ptr, BondList(src, dst, order)


def written_bond_types(molecules: Any) -> dict[str, int]:
    """Bond-type counts (:func:`bond_type_counts`) of a :class:`~molediff.data.molecules.MoleculeSet`'s own bonds."""
    atom_type, _, bonds = written_bonds(molecules)
    return bond_type_counts(atom_type, bonds)


def model_bond_scores_of(molecules: Any, progress: bool = True, desc: str = "model bonds") -> Any:
    """Per molecule, the honest model-bond view of a :class:`~molediff.data.molecules.MoleculeSet` that
    carries bonds and formal charges: a :class:`~molediff.chem.model_bonds.ModelBondScores` (``atom_stable``
    [N], ``molecule_stable``, ``valid``, ``smiles``, ``fragments`` [M]) in which a molecule without usable
    bonds (``has_bonds`` False) is unstable and invalid. :func:`model_bond_metrics` sums it up."""
    from molediff.chem.model_bonds import ModelBondScores, model_bond_scores

    atom_type, ptr, bonds = written_bonds(molecules)
    charge = np.asarray(molecules.charge)
    has = np.asarray(molecules.has_bonds)
    scores = model_bond_scores(atom_type, charge, ptr, bonds.src, bonds.dst, bonds.order, progress=progress, desc=desc)
    valid = scores.valid & has
    return ModelBondScores(scores.atom_stable & np.repeat(has, np.diff(ptr)), scores.molecule_stable & has, valid,
                           [s if v else None for s, v in zip(scores.smiles, valid)], scores.fragments)


def model_bond_metrics(molecules: Any, novelty: Collection[str] | None = None, progress: bool = True, desc: str = "model bonds",
                       scores: Any = None, bond_types: Mapping[str, int] | None = None) -> tuple[dict[str, Any], list[str | None]]:
    """The honest model-bond view of a :class:`~molediff.data.molecules.MoleculeSet` that carries bonds
    and formal charges (a file's own, a model's, QM9's stored ones); see :mod:`molediff.chem.model_bonds`.

    Returns ``(metrics, smiles [M])``: ``model_atom_stability``, ``model_molecule_stability``,
    ``model_connected_validity``, ``model_uniqueness`` (among connected-valid), ``model_valid_x_unique``,
    ``model_novelty`` (against ``novelty``, reference SMILES from stored bonds: :func:`smiles_set` with
    ``bonds="model"``, or :func:`molediff.data.reference.training_smiles` ``("model")`` for QM9; ``None``
    when it is ``None``) and ``model_valid_unique_novel``; ``num_without_bonds`` molecules had no usable bonds (an aromatic
    system that could not be kekulized, failed perception): they count as unstable and invalid.
    ``scores``: the molecules' :func:`model_bond_scores_of`, when already computed. With ``bond_types``, a
    reference's bond-type counts (:func:`~molediff.metrics.distributions.bond_type_counts` of its own bonds,
    e.g. :func:`molediff.data.reference.model_bond_types` for QM9): ``model_bond_type_tv``, the total variation
    between the molecules' written bond types (element pair and Kekulé order: "C=O", "C-N", ...) and the
    reference's, and ``model_bond_type_fraction`` / ``model_bond_type_fraction_reference`` (type -> its share
    of the bonds); else those are ``None``. A sampler that shifts the chemistry (more carbonyls, fewer double
    bonds) shows there while every molecule still passes the valence rule.
    """
    _, novelty = _check_reference_args(None, novelty)
    if scores is None:
        scores = model_bond_scores_of(molecules, progress=progress, desc=desc)
    m = len(scores.valid)
    smiles = list(scores.smiles)
    unique = {s for s in smiles if s}
    out: dict[str, Any] = {
        "model_atom_stability": fraction(scores.atom_stable.sum(), len(scores.atom_stable)),
        "model_molecule_stability": fraction(scores.molecule_stable.sum(), m),
        "model_connected_validity": fraction(scores.valid.sum(), m),
        "model_uniqueness": fraction(len(unique), scores.valid.sum()),
        "model_valid_x_unique": fraction(len(unique), m),
        "model_novelty": None,
        "model_valid_unique_novel": None,
        "num_without_bonds": int((~np.asarray(molecules.has_bonds)).sum()),
        "model_bond_type_tv": None,
        "model_bond_type_fraction": None,
        "model_bond_type_fraction_reference": None,
    }
    if bond_types is not None:
        counts, reference = written_bond_types(molecules), dict(bond_types)
        names = sorted(set(counts) | set(reference))
        out.update(model_bond_type_tv=bond_type_tv(counts, reference),
                   model_bond_type_fraction={k: fraction(counts.get(k, 0), sum(counts.values())) for k in names},
                   model_bond_type_fraction_reference={k: fraction(reference.get(k, 0), sum(reference.values())) for k in names})
    if novelty is not None:
        novel = unique - frozenset(novelty)
        out.update(model_novelty=fraction(len(novel), len(unique)), model_valid_unique_novel=fraction(len(novel), m))
    return out, smiles


def sample_metrics(mols: Any, bond_types: Mapping[str, int] | None = None) -> dict[str, float]:
    """Headline scores of freshly sampled molecules (a :class:`molediff.molecular.Molecules`), for
    training-time checks and studies.

    Always ``atom_stability`` and ``molecule_stability`` (lookup bonds on the geometry); ``validity``,
    ``strict_validity``, ``valid_x_unique`` and ``connected`` when RDKit is installed (it is not on the
    GPU training machines); for models that write bonds, also the model-bond view:
    ``model_atom_stability``, ``model_molecule_stability`` (numpy), ``model_connected_validity`` and
    ``model_valid_x_unique`` (RDKit), and with ``bond_types`` (a reference's :func:`bond_type_counts` in
    the model's own representation) ``model_bond_type_tv``. A heavy-atom model's molecules get the
    model-bond view alone (its generated hydrogen counts included): the lookup rule needs hydrogens as atoms.
    """
    atom_type, pos, ptr = (np.asarray(x.cpu()) for x in (mols.atom_type, mols.pos, mols.ptr))
    out: dict[str, float] = {}
    if mols.bond_order is not None:
        src, dst = (np.asarray(x) for x in mols.pair_index.cpu())
        order, charge = np.asarray(mols.bond_order.cpu()), np.asarray(mols.charge.cpu())
        hydrogens = None if mols.hydrogens is None else np.asarray(mols.hydrogens.cpu())
        from molediff.chem.model_bonds import model_bond_scores, model_bond_stability

        try:
            import rdkit  # noqa: F401
        except ImportError:
            atom_ok, mol_ok = model_bond_stability(atom_type, charge, ptr, src, dst, order, hydrogens)
        else:
            scores = model_bond_scores(atom_type, charge, ptr, src, dst, order, hydrogens=hydrogens)
            atom_ok, mol_ok = scores.atom_stable, scores.molecule_stable
            out["model_connected_validity"] = float(scores.valid.mean())
            out["model_valid_x_unique"] = len({s for s in scores.smiles if s}) / max(len(scores.smiles), 1)
        out["model_atom_stability"] = float(atom_ok.mean())
        out["model_molecule_stability"] = float(mol_ok.mean())
        if bond_types is not None:
            bonded = order > 0
            counts = bond_type_counts(atom_type, BondList(src[bonded], dst[bonded], order[bonded]))
            out["model_bond_type_tv"] = bond_type_tv(counts, dict(bond_types))
    if getattr(mols, "hydrogens", None) is not None:  # heavy atoms only: the lookup rule needs hydrogens as atoms
        return out
    try:
        import rdkit  # noqa: F401
    except ImportError:
        atom_stable, mol_stable = stability(atom_type, ptr, lookup_bonds_stacked(atom_type, pos, ptr))
        return {**out, "atom_stability": float(atom_stable.mean()), "molecule_stability": float(mol_stable.mean())}
    stacked = StackedMolecules(atom_type.astype(np.int64), pos.astype(np.float32).astype(np.float64), ptr.astype(np.int64))
    r = evaluate_molecules(stacked, progress=False)
    keys = ("atom_stability", "molecule_stability", "validity", "strict_validity", "valid_x_unique", "connected")
    return {**out, **{k: r[k] for k in keys}}
