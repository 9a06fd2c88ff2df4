"""Molecule data: QM9 from qm9pack, the user's own SDF/XYZ files, and fast PyG batching."""

from molediff.data.molecules import MoleculeSet
from molediff.data.qm9 import data_dir, load_qm9, train_size_histogram

__all__ = ["MoleculeSet", "load_qm9", "data_dir", "train_size_histogram"]
