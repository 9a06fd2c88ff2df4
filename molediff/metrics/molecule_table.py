"""One row per molecule: every per-molecule score of ``molediff evaluate`` in a pandas DataFrame
(:func:`molecule_table`), the table behind a report's ``molecules.csv`` and its molecule gallery.

Nothing is scored here that the metrics do not already score: validity, stability and connectivity
come from :func:`~molediff.metrics.evaluate_molecules_detailed` (bonds perceived from the geometry) or
:func:`~molediff.metrics.model_bond_scores_of` (the bonds written in the file, the honest rule); QED, SA,
logP and MolWt from :func:`~molediff.metrics.properties.druglike_properties`; the 3D checks from
:func:`~molediff.metrics.posebusters.posebusters_checks` and
:func:`~molediff.metrics.relaxation.relaxation_metrics`, molecule by molecule.
"""

from __future__ import annotations

from typing import Any, Collection

import numpy as np

__all__ = ["COLUMNS", "molecule_table", "shown_molecule"]

#: Every column :func:`molecule_table` can have, in table order: key -> (label, what it says). A table
#: holds the ones that apply (e.g. ``novel`` only with a novelty reference).
COLUMNS: dict[str, tuple[str, str]] = {
    "index": ("#", "position of the molecule in the input, from 0"),
    "name": ("name", "file:record of the molecule"),
    "smiles": ("SMILES", "canonical SMILES (hydrogens implicit) of the valid molecule; empty when not valid"),
    "atoms": ("atoms", "number of atoms, hydrogens included"),
    "valid": ("valid", "with model bonds: sanitizes exactly as written, no radical, one fragment; with bonds perceived "
                       "from the geometry: RDKit sanitizes its largest fragment (the published rule)"),
    "stable": ("stable", "every atom's bond-order sum is a valence its element (and, with model bonds, its formal "
                         "charge) allows"),
    "connected": ("connected", "the bond graph is one fragment"),
    "strict_valid": ("strict", "valid without implicit hydrogens or radicals, and one fragment"),
    "lookup_valid": ("lookup valid", "valid with bonds perceived from the geometry by the lookup rule (published convention)"),
    "lookup_stable": ("lookup stable", "stable with bonds perceived from the geometry by the lookup rule"),
    "novel": ("novel", "valid and absent from the novelty reference (the training molecules)"),
    "qed": ("QED", "quantitative estimate of drug-likeness, 0..1 (valid molecules)"),
    "sa": ("SA", "synthetic accessibility score, 1 (easy) .. 10 (hard) (valid molecules)"),
    "logp": ("logP", "Crippen logP (valid molecules)"),
    "mol_wt": ("MW", "molecular weight, g/mol (valid molecules)"),
    "posebusters": ("PoseBusters", "passes every PoseBusters molecule check (fast set: bond lengths, angles, clashes, "
                                   "flat rings and double bonds, ...)"),
    "relaxation_drop": ("relax drop", "MMFF94 energy drop when the molecule is relaxed, kcal/mol (lower: less strained)"),
}

#: Properties of :func:`~molediff.metrics.properties.druglike_properties` in the table.
_PROPERTIES = ("qed", "sa", "logp", "mol_wt")


def shown_molecule(molecules: Any, i: int, bonds: str) -> Any:
    """Molecule ``i`` of a :class:`~molediff.data.molecules.MoleculeSet` as an unsanitized RDKit molecule
    with its 3D conformer and the bonds a table with ``bonds`` scores: the written bonds and charges
    (``"model"``), else bonds perceived from the geometry (``"lookup"``, ``"rdkit"``)."""
    from molediff.chem.model_bonds import written_molecule
    from molediff.chem.rdkit_mol import build_molecule

    symbols, pos = molecules.molecule(i)
    if bonds == "model":
        src, dst, order, charge = molecules.bonds(i)
        return written_molecule(symbols, src, dst, order, charge, pos)
    return build_molecule(symbols, pos, bonds=bonds)


def _novel(raw: list[str | None], novelty: Any) -> list[bool | None]:
    """Per molecule: its SMILES is absent from ``novelty`` (a collection of SMILES perceived as the
    molecules were, or an array of :func:`~molediff.metrics.moses.smiles_hashes` of canonical SMILES);
    ``None`` for a molecule that is not valid."""
    if isinstance(novelty, np.ndarray):
        from molediff.chem.rdkit_mol import canonical_smiles
        from molediff.metrics.moses import smiles_hashes

        hashes = np.asarray(novelty, dtype=np.int64)
        return [None if s is None else not bool(np.isin(smiles_hashes([canonical_smiles(s)]), hashes).any()) for s in raw]
    known = novelty if isinstance(novelty, (set, frozenset)) else frozenset(novelty)
    return [None if s is None else s not in known for s in raw]


def _three_d_checks(molecules: Any, bonds: str, progress: bool, chunk: int = 100) -> dict[str, Any]:
    """The ``posebusters`` (when installed) and ``relaxation_drop`` columns, in chunks of ``chunk``
    molecules (a progress bar that moves)."""
    import pandas as pd
    from tqdm import tqdm

    from molediff.chem.rdkit_mol import sanitize
    from molediff.metrics.errors import MetricUnavailable
    from molediff.metrics.posebusters import posebusters_checks
    from molediff.metrics.relaxation import relaxation_metrics

    m = len(molecules)
    passed: list[bool] | None = []
    drops: list[float | None] = []
    with tqdm(total=m, desc="3D checks (PoseBusters, MMFF94)", disable=not progress, unit="mol", mininterval=1.0) as bar:
        for start in range(0, m, chunk):
            mols_3d = [sanitize(shown_molecule(molecules, i, bonds)) for i in range(start, min(m, start + chunk))]
            if passed is not None:
                try:
                    passed += posebusters_checks(mols_3d, config="mol_fast")["passed"]
                except MetricUnavailable:  # not installed: no such column
                    passed = None
            drops += relaxation_metrics(mols_3d)["energy_drops_kcal_mol"]
            bar.update(len(mols_3d))
    out: dict[str, Any] = {} if passed is None else {"posebusters": pd.array(passed, dtype="boolean")}
    out["relaxation_drop"] = np.array([np.nan if d is None else d for d in drops], dtype=np.float64)
    return out


def molecule_table(
    molecules: Any,
    bonds: str = "lookup",
    details: Any = None,
    model_scores: Any = None,
    novelty: Collection[str] | np.ndarray | None = None,
    three_d: bool = False,
    progress: bool = False,
) -> Any:
    """Every per-molecule score of ``molecules`` (a :class:`~molediff.data.molecules.MoleculeSet`; with
    ``bonds="model"`` one read with its bonds) as a pandas DataFrame, one row per molecule in input
    order; the columns are those of :data:`COLUMNS` that apply.

    Args:
        bonds: the bonds the ``valid`` / ``stable`` / ``connected`` columns and the SMILES judge:
            ``"model"`` (written in the file; then ``lookup_valid`` and ``lookup_stable`` give the
            geometry's view beside them), ``"lookup"`` or ``"rdkit"`` (perceived from the geometry;
            then ``strict_valid``).
        details: the molecules' :class:`~molediff.metrics.EvaluationDetails` when already computed
            (with ``bonds``, or lookup bonds for ``"model"``); computed otherwise.
        model_scores: with ``"model"``, the molecules' :func:`~molediff.metrics.model_bond_scores_of`
            when already computed.
        novelty: the novelty reference: SMILES perceived with the same bonds (as
            :func:`~molediff.metrics.evaluate_molecules` takes it), or an int64 array of
            :func:`~molediff.metrics.moses.smiles_hashes` (a model file's training molecules); ``None``:
            no ``novel`` column.
        three_d: also the 3D checks of each molecule with these bonds: ``posebusters`` (all of
            PoseBusters' fast molecule checks pass; the column is left out when the package is not
            installed) and ``relaxation_drop`` (MMFF94). About 0.2 s per drug-sized molecule.
        progress: progress bars.
    """
    import pandas as pd

    from molediff.chem.bonds import BOND_MODES, check_bond_mode
    from molediff.chem.rdkit_mol import canonical_smiles, mol_from_smiles
    from molediff.metrics import evaluate_molecules_detailed, model_bond_scores_of
    from molediff.metrics.properties import druglike_properties

    check_bond_mode(bonds, BOND_MODES)
    geometry = "lookup" if bonds == "model" else bonds
    if details is None:
        details = evaluate_molecules_detailed(molecules, bonds=geometry, progress=progress)[1]
    m = len(details.valid)
    cols: dict[str, Any] = {
        "index": np.arange(m),
        "name": list(molecules.names) if getattr(molecules, "names", None) else [str(i) for i in range(m)],
    }
    if bonds == "model":
        if model_scores is None:
            model_scores = model_bond_scores_of(molecules, progress=progress)
        raw = list(model_scores.smiles)
        flags = {"valid": model_scores.valid, "stable": model_scores.molecule_stable, "connected": model_scores.fragments == 1,
                 "lookup_valid": details.valid, "lookup_stable": details.stable}
    else:
        raw = list(details.smiles)
        flags = {"valid": details.valid, "stable": details.stable, "connected": details.connected,
                 "strict_valid": details.strict_valid}
    cols["smiles"] = [canonical_smiles(s) if s else None for s in raw]
    cols["atoms"] = np.diff(np.asarray(details.ptr))
    cols.update({k: np.asarray(v, dtype=bool) for k, v in flags.items()})
    if novelty is not None:
        cols["novel"] = pd.array(_novel(raw, novelty), dtype="boolean")
    props = {k: np.full(m, np.nan) for k in _PROPERTIES}
    parsed = [(k, mol_from_smiles(s)) for k, s in enumerate(raw) if s]
    parsed = [(k, mol) for k, mol in parsed if mol is not None]
    if parsed:
        values = druglike_properties([mol for _, mol in parsed])
        rows = np.array([k for k, _ in parsed])
        for name in _PROPERTIES:
            props[name][rows] = values[name]
    cols.update(props)
    if three_d:
        cols.update(_three_d_checks(molecules, bonds, progress))
    return pd.DataFrame({k: cols[k] for k in COLUMNS if k in cols})
