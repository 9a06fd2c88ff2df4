"""Reference data for the metrics: where novelty SMILES and distribution statistics come from.

The metrics in :mod:`molediff.metrics` are pure functions that take their references as arguments;
this module builds them:

* the QM9 training split's (:func:`training_smiles`, :func:`reference_statistics`), built once and
  cached beside the QM9 cache (``data_dir()``), per bond mode;
* any molecules' (:func:`molecules_reference`), e.g. a user's SDF file or folder
  (:func:`file_reference`), computed in memory;

each wrapped as a :class:`ReferenceSet` (:func:`qm9_reference`) that ``molediff evaluate`` asks for the
SMILES and statistics of the bond mode it scores with.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from molediff.chem.bonds import BOND_MODES, check_bond_mode, lookup_bonds_stacked
from molediff.elements import ELEMENTS
from molediff.metrics import bond_angle_samples, bond_length_samples, distribution_statistics, rdkit_pass, smiles_set, stack_molecules

#: Bump to invalidate the cached training SMILES and reference statistics.
METRICS_CACHE_VERSION = 1
REFERENCE_SAMPLE_SIZE = 10_000
REFERENCE_SEED = 0
#: In-process memo of the loaded QM9 references, keyed by (kind, bonds): repeated evaluations (e.g.
#: during training) read the caches from disk once.
_MEMO: dict[tuple[str, str], Any] = {}


def _split_digest(names: Sequence[str]) -> str:
    return hashlib.sha256(",".join(names).encode()).hexdigest()[:16]


def _load_cache(path, expect: dict[str, Any]) -> dict[str, Any] | None:
    import torch

    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable cache: rebuild
        return None
    if not isinstance(blob, dict) or any(blob.get(k) != v for k, v in expect.items()):
        return None
    return blob


def training_smiles(bonds: str = "lookup", progress: bool = True, rebuild: bool = False) -> frozenset[str]:
    """Canonical largest-fragment SMILES of the valid molecules of the QM9 training split (100,000),
    perceived with ``bonds`` exactly like generated molecules; the novelty reference.

    Cached in ``data_dir()/qm9_train_smiles_{bonds}_v{METRICS_CACHE_VERSION}.pt`` (keyed by bond mode,
    version and the split's ids; written atomically). Building it takes about 1 min with lookup bonds
    and about 2 min with rdkit bonds on one shared CPU core (~0.4 / ~0.9 ms per molecule), once; later
    calls load it in about a second, and the same process reuses it from memory.
    """
    from molediff.checkpoint import atomic_torch_save as _atomic_save
    from molediff.data.qm9 import data_dir, load_qm9

    check_bond_mode(bonds, BOND_MODES)
    if not rebuild and ("smiles", bonds) in _MEMO:
        return _MEMO[("smiles", bonds)]
    train = load_qm9("train", progress=progress)
    expect = {"version": METRICS_CACHE_VERSION, "bonds": bonds, "split": _split_digest(train.names)}
    path = data_dir() / f"qm9_train_smiles_{bonds}_v{METRICS_CACHE_VERSION}.pt"
    blob = None if rebuild else _load_cache(path, expect)
    if blob is None:  # "model": the stored (SMILES-derived) bonds, scored like a model's
        desc = "QM9 train SMILES (stored bonds, once)" if bonds == "model" else f"QM9 train SMILES ({bonds} bonds, once)"
        blob = {**expect, "smiles": sorted(smiles_set(train, bonds, progress=progress, desc=desc))}
        _atomic_save(blob, path)
    _MEMO[("smiles", bonds)] = frozenset(blob["smiles"])
    return _MEMO[("smiles", bonds)]


def reference_statistics(bonds: str = "lookup", progress: bool = True, rebuild: bool = False) -> dict[str, Any]:
    """Distribution statistics of the QM9 training split, for comparison with generated molecules.

    Atom-type and size histograms use the whole split; bond lengths, bond angles (lookup bonds), ring
    sizes and QED/logP/MolWt (valid molecules under ``bonds``) a fixed sample of
    ``REFERENCE_SAMPLE_SIZE`` molecules (seed ``REFERENCE_SEED``). Cached in
    ``data_dir()/qm9_reference_stats_{bonds}_v{METRICS_CACHE_VERSION}.pt``; building takes ~20-30 s once
    (QED dominates), then it is loaded from disk / reused from memory.

    Returns a dict: ``atom_type_counts`` [E], ``num_atoms_hist`` [n_max + 1], ``bond_lengths`` /
    ``bond_angles`` (type -> sorted float64 array, Å / degrees), ``ring_sizes`` (size -> rings per
    valid molecule), ``properties`` (name -> float64 array), ``num_molecules``, ``description``.
    """
    import torch

    from molediff.checkpoint import atomic_torch_save as _atomic_save
    from molediff.data.qm9 import data_dir, load_qm9

    check_bond_mode(bonds)
    if not rebuild and ("reference", bonds) in _MEMO:
        return _MEMO[("reference", bonds)]
    train = load_qm9("train", progress=progress)
    expect = {
        "version": METRICS_CACHE_VERSION,
        "bonds": bonds,
        "split": _split_digest(train.names),
        "sample": [REFERENCE_SAMPLE_SIZE, REFERENCE_SEED],
    }
    path = data_dir() / f"qm9_reference_stats_{bonds}_v{METRICS_CACHE_VERSION}.pt"
    blob = None if rebuild else _load_cache(path, expect)
    if blob is None:
        rng = np.random.default_rng(REFERENCE_SEED)
        index = np.sort(rng.choice(len(train), size=min(REFERENCE_SAMPLE_SIZE, len(train)), replace=False))
        sample = train.subset(index)
        atom_type, pos, ptr = stack_molecules(sample)
        lookup = lookup_bonds_stacked(atom_type, pos, ptr)
        rd = rdkit_pass(atom_type, pos, ptr, lookup, bonds, True, progress, f"QM9 reference statistics ({bonds} bonds, once)")
        n_valid = max(1, int(rd.valid.sum()))

        def tensors(d: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
            return {k: torch.from_numpy(np.sort(v).astype(np.float32)) for k, v in d.items()}

        blob = {
            **expect,
            "num_molecules": len(sample),
            "atom_type_counts": torch.bincount(train.atom_type, minlength=len(ELEMENTS)),
            "num_atoms_hist": train.size_histogram(),
            "bond_lengths": tensors(bond_length_samples(atom_type, pos, lookup)),
            "bond_angles": tensors(bond_angle_samples(atom_type, pos, lookup)),
            "ring_sizes": {int(s): c / n_valid for s, c in sorted(rd.ring_sizes.items())},
            "properties": {k: torch.from_numpy(v.astype(np.float64)) for k, v in rd.properties.items()},
        }
        _atomic_save(blob, path)
    _MEMO[("reference", bonds)] = {
        "label": "QM9",
        "description": f"QM9 train split: {blob['num_molecules']} molecules (seed {REFERENCE_SEED}) for geometry/rings/properties, all 100,000 for atom types and sizes",
        "num_molecules": blob["num_molecules"],
        "atom_type_counts": blob["atom_type_counts"].numpy(),
        "num_atoms_hist": blob["num_atoms_hist"].numpy(),
        "bond_lengths": {k: v.numpy().astype(np.float64) for k, v in blob["bond_lengths"].items()},
        "bond_angles": {k: v.numpy().astype(np.float64) for k, v in blob["bond_angles"].items()},
        "ring_sizes": dict(blob["ring_sizes"]),
        "properties": {k: v.numpy() for k, v in blob["properties"].items()},
    }
    return _MEMO[("reference", bonds)]


# ----------------------------------------------------------------------------- reference sets


@dataclass
class ReferenceSet:
    """A named reference for novelty and distributions: :meth:`smiles` and :meth:`statistics` for the
    bond mode being scored (computed on first use, then kept).

    ``kind`` is ``"qm9"`` or ``"molecules"``; ``name`` says what it is (for tables and JSON);
    ``label`` is the short name the table and plots use ("QM9", a file name)."""

    kind: str
    name: str
    label: str
    _smiles: Callable[[str, bool], frozenset[str]] = field(repr=False)
    _statistics: Callable[[str, bool], dict[str, Any]] = field(repr=False)
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def smiles(self, bonds: str = "lookup", progress: bool = True) -> frozenset[str]:
        """The novelty reference: canonical largest-fragment SMILES perceived with ``bonds``."""
        check_bond_mode(bonds, BOND_MODES)
        if ("smiles", bonds) not in self._cache:
            self._cache[("smiles", bonds)] = self._smiles(bonds, progress)
        return self._cache[("smiles", bonds)]

    def statistics(self, bonds: str = "lookup", progress: bool = True) -> dict[str, Any]:
        """The distribution reference (see :func:`molediff.metrics.distribution_statistics`)."""
        check_bond_mode(bonds)
        if ("statistics", bonds) not in self._cache:
            self._cache[("statistics", bonds)] = self._statistics(bonds, progress)
        return self._cache[("statistics", bonds)]

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "label": self.label}


def qm9_reference() -> ReferenceSet:
    """The QM9 training split (cached on disk: :func:`training_smiles`, :func:`reference_statistics`)."""
    return ReferenceSet(
        "qm9", "QM9 train split", "QM9",
        lambda bonds, progress: training_smiles(bonds, progress=progress),
        lambda bonds, progress: reference_statistics(bonds, progress=progress),
    )


def molecules_reference(molecules: Any, name: str, label: str | None = None) -> ReferenceSet:
    """Any molecules as the reference (a :class:`~molediff.data.molecules.MoleculeSet`; with bonds and
    charges for the ``"model"`` bond mode's SMILES): novelty against their SMILES, distributions
    against their statistics, computed in memory on first use."""
    label = label or name
    n = len(molecules)

    def statistics(bonds: str, progress: bool) -> dict[str, Any]:
        stats = distribution_statistics(molecules, bonds, progress=progress, description=f"{name}: {n} molecules",
                                        desc=f"reference statistics ({bonds} bonds)")
        return {**stats, "label": label}

    return ReferenceSet(
        "molecules", name, label,
        lambda bonds, progress: smiles_set(molecules, bonds, progress=progress, desc=f"reference SMILES ({bonds} bonds)"),
        statistics,
    )


def file_reference(paths: str | os.PathLike | Iterable[str | os.PathLike], with_bonds: bool = False):
    """Molecules read from SDF/XYZ files or folders (:func:`molediff.data.files.read_molecule_files`;
    ``with_bonds``: also their bonds and charges, for the ``"model"`` bond mode) as a
    :class:`ReferenceSet`. Returns ``(reference, read_report)``; raises
    :class:`~molediff.errors.UserError` for a missing path or when no molecule is usable."""
    from pathlib import Path

    from molediff.data.files import read_molecule_files

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    molecules, report = read_molecule_files(paths, bonds=with_bonds)
    label = ", ".join(Path(p).name or str(p) for p in paths)
    return molecules_reference(molecules, name=", ".join(str(p) for p in paths), label=label), report



def moses_test_reference(progress: bool = True):
    """The MOSES test set (176k SMILES shipped in molsets) as a drug-like metrics reference
    (:class:`molediff.metrics.reference.Reference`: fingerprints, fragments, scaffolds, properties,
    MOSES's own ChemNet statistics), built once into the data folder's
    ``cache/moses_test_reference.npz`` (about 7 minutes on an idle 2-core machine) and loaded from there
    afterwards (under a second)."""
    from molediff.data.qm9 import data_dir
    from molediff.metrics.moses_data import moses_fcd_statistics, moses_reference
    from molediff.metrics.reference import Reference, build_reference

    path = data_dir() / "cache" / "moses_test_reference.npz"
    if path.exists():
        try:
            return Reference.load(path)
        except (OSError, ValueError, KeyError) as exc:
            print(f"{path} is unreadable ({exc}); rebuilding it")
    if progress:
        print(f"building the MOSES test reference once into {path} (about 7 minutes)")
    ref = build_reference(moses_reference("test"), "MOSES test", fcd_stats=moses_fcd_statistics("test"), compute_fcd=False,
                          n_jobs=os.cpu_count() or 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    ref.save(path)
    return ref


#: molecules of the MOSES test set whose rings stand for the data's in the ring-system table
RING_REFERENCE_SIZE = 2000


def moses_ring_reference(size: int = RING_REFERENCE_SIZE, seed: int = 0) -> dict:
    """:func:`molediff.metrics.rings.ring_statistics` of ``size`` random MOSES test molecules (seed
    ``seed``; about a second): the data's side of the ring-system table."""
    import numpy as np
    from rdkit import Chem

    from molediff.metrics.moses_data import moses_reference
    from molediff.metrics.rings import ring_statistics

    smiles = moses_reference("test")
    pick = np.random.default_rng(seed).choice(len(smiles), size=min(size, len(smiles)), replace=False)
    out = ring_statistics([Chem.MolFromSmiles(smiles[i]) for i in sorted(pick.tolist())])
    out.pop("per_molecule")
    out["source"] = f"{len(pick)} random MOSES test molecules (seed {seed})"
    return out
