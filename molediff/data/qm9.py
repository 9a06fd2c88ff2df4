"""QM9 from the ``qm9pack`` package's CSV files, parsed once into a verified tensor cache.

130,831 molecules (the QM9 authors' B3LYP geometries, Å; the 3,054 molecules that failed the
original consistency check are already absent), elements H C N O F, with bond orders and formal
charges joined from the SMILES of the relaxed geometry (:func:`molediff.chem.assign.assign_from_smiles`;
Kekulé form). Molecules whose SMILES does not fit their geometry keep no bonds and are listed in the
cache (``bond_failures``), never silently dropped: atoms-only models still train on them. The split (train 100,000 /
validation 17,748 / test 13,083, the sizes of the equivariant-diffusion literature) is drawn with a
fixed seed over QM9 ids and committed as ``data/qm9_split.npz``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from molediff.checkpoint import atomic_torch_save, state_dict_digest
from molediff.data.molecules import MoleculeSet
from molediff.elements import SYMBOL_TO_INDEX
from molediff.errors import UserError

CACHE_VERSION = 2  # 2: bonds and formal charges
NUM_MOLECULES = 130_831
SPLIT_SIZES = {"train": 100_000, "valid": 17_748, "test": 13_083}
SPLIT_SEED = 0
_CSV_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


def data_dir() -> Path:
    """Where caches live: ``$MOLEDIFF_DATA``, else the source checkout's ``data/``, else ``~/.cache/molediff``."""
    env = os.environ.get("MOLEDIFF_DATA")
    if env:
        path = Path(env)
    else:
        repo_data = Path(__file__).resolve().parents[2] / "data"
        path = repo_data if (repo_data.parent / "pyproject.toml").exists() else Path.home() / ".cache" / "molediff"
    path.mkdir(parents=True, exist_ok=True)
    return path


def qm9pack_dir() -> Path:
    """The ``data/`` folder of the installed qm9pack package, found without importing it."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("QM9 needs the 'qm9pack' package: pip install qm9pack")
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [f for f in _CSV_FILES if not (path / f).exists()]
    if missing:
        raise UserError(f"qm9pack at {path} lacks {', '.join(missing)}; reinstall it (pip install --force-reinstall qm9pack)")
    return path


def _source_signature(folder: Path) -> str:
    """Names and sizes of the source CSVs: a changed qm9pack invalidates the cache."""
    return ";".join(f"{f}:{(folder / f).stat().st_size}" for f in _CSV_FILES)


def parse_qm9_csvs(folder: Path, progress: bool = True) -> dict[str, torch.Tensor]:
    """Parse the qm9pack CSVs into stacked tensors, vectorised (no per-row ``literal_eval``).

    Returns ``ids`` [M] (QM9 index), ``ptr`` [M+1], ``pos`` [N, 3] float32 Å, ``atom_type`` [N] int64,
    and the SMILES [M] as a list.
    """
    import pandas as pd
    from tqdm import tqdm

    frames = []
    for name in tqdm(_CSV_FILES, desc="parsing QM9 CSVs", disable=not progress, unit="file"):
        frames.append(pd.read_csv(folder / name, usecols=["Index", "N_atoms", "Elements", "XYZ_Ang", "SMILES"]))
    df = pd.concat(frames, ignore_index=True).sort_values("Index", kind="stable").reset_index(drop=True)
    counts = df["N_atoms"].to_numpy(np.int64)
    # All coordinates as one string -> one numpy parse.
    coords_text = ",".join(df["XYZ_Ang"].tolist()).replace("[", "").replace("]", "")
    coords = np.array(coords_text.split(","), dtype=np.float64).reshape(-1, 3)
    symbols = ",".join(df["Elements"].tolist()).translate(str.maketrans("", "", "[]' ")).split(",")
    unknown = sorted(set(symbols) - set(SYMBOL_TO_INDEX))
    if unknown:
        raise UserError(f"QM9 CSVs contain unexpected elements {unknown}")
    types = np.array([SYMBOL_TO_INDEX[s] for s in symbols], dtype=np.int64)
    if coords.shape[0] != counts.sum() or types.shape[0] != counts.sum():
        raise UserError("QM9 CSVs are inconsistent: atom counts do not match coordinates/elements")
    ptr = np.zeros(len(counts) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(counts)
    return {
        "ids": torch.from_numpy(df["Index"].to_numpy(np.int64).copy()),
        "ptr": torch.from_numpy(ptr),
        "pos": torch.from_numpy(coords.astype(np.float32)),
        "atom_type": torch.from_numpy(types),
    }, df["SMILES"].tolist()


def assign_qm9_bonds(tensors: dict[str, torch.Tensor], smiles: list[str], progress: bool = True
                     ) -> tuple[dict[str, torch.Tensor], list[tuple[int, str]]]:
    """Bond orders and formal charges of every molecule (about 2 minutes; RDKit, cache building only).

    Returns the tensors ``charge`` [N], ``bond_index`` [2, NB] (local, src < dst), ``bond_order`` [NB],
    ``bond_ptr`` [M+1], ``bond_status`` [M] (0 assigned, 1 assigned with extra close contacts, 2 failed)
    and the failures as (QM9 id, reason).
    """
    from tqdm import tqdm

    from molediff.chem.assign import assign_from_smiles
    from molediff.elements import ELEMENTS

    ptr, pos, types = tensors["ptr"].numpy(), tensors["pos"].double().numpy(), tensors["atom_type"].numpy()
    ids = tensors["ids"].tolist()
    table = np.array(ELEMENTS)
    charge = np.zeros(len(types), dtype=np.int64)
    src, dst, order, counts, status, failures = [], [], [], [], [], []
    for m in tqdm(range(len(ids)), desc="QM9 bonds from SMILES", disable=not progress, unit="mol", mininterval=1.0):
        a, b = ptr[m], ptr[m + 1]
        try:
            got = assign_from_smiles(list(table[types[a:b]]), pos[a:b], smiles[m])
        except ValueError as exc:
            failures.append((ids[m], str(exc)))
            counts.append(0)
            status.append(2)
            continue
        src.append(got.src)
        dst.append(got.dst)
        order.append(got.order)
        charge[a:b] = got.charge
        counts.append(len(got.order))
        status.append(1 if got.extra_contacts else 0)
    bond_ptr = np.zeros(len(ids) + 1, dtype=np.int64)
    bond_ptr[1:] = np.cumsum(counts)
    cat = lambda xs: torch.from_numpy(np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64))  # noqa: E731
    return {
        "charge": torch.from_numpy(charge),
        "bond_index": torch.stack([cat(src), cat(dst)]),
        "bond_order": cat(order),
        "bond_ptr": torch.from_numpy(bond_ptr),
        "bond_status": torch.tensor(status, dtype=torch.long),
    }, failures


def load_qm9_tensors(progress: bool = True, rebuild: bool = False) -> dict[str, torch.Tensor]:
    """The whole of QM9 as tensors, from the cache ``data_dir()/qm9_v{CACHE_VERSION}.pt``.

    The cache is rebuilt when absent, unreadable, of another version, built from other source files,
    or when its checksum does not match its contents (a stale or corrupted cache is never trusted).
    """
    cache = data_dir() / f"qm9_v{CACHE_VERSION}.pt"
    source = None
    if cache.exists() and not rebuild:
        reason = None
        try:
            blob = torch.load(cache, map_location="cpu", weights_only=True)
            if blob.get("version") != CACHE_VERSION:
                reason = "old cache version"
            elif state_dict_digest(blob["tensors"]) != blob.get("sha256"):
                reason = "checksum mismatch"
            else:
                try:
                    source = qm9pack_dir()
                    if blob.get("source") != _source_signature(source):
                        reason = "qm9pack files changed"
                except UserError:
                    pass  # the cache is self-consistent; qm9pack itself is only needed to rebuild
        except Exception as exc:  # unreadable pickle/zip: rebuild
            reason = f"unreadable ({type(exc).__name__})"
        if reason is None:
            return blob["tensors"]
        print(f"molediff: QM9 cache {cache} is invalid ({reason}); rebuilding")
    source = source or qm9pack_dir()
    tensors, smiles = parse_qm9_csvs(source, progress=progress)
    if len(tensors["ids"]) != NUM_MOLECULES:
        raise UserError(f"expected {NUM_MOLECULES} QM9 molecules, parsed {len(tensors['ids'])}")
    bonds, failures = assign_qm9_bonds(tensors, smiles, progress=progress)
    tensors.update(bonds)
    tensors["failure_ids"] = torch.tensor([i for i, _ in failures], dtype=torch.long)
    if progress:
        print(f"molediff: QM9 bonds assigned for {NUM_MOLECULES - len(failures):,} of {NUM_MOLECULES:,} molecules; "
              f"{len(failures)} whose SMILES does not fit the geometry keep no bonds (qm9_bond_failures() lists them)")
    blob = {"version": CACHE_VERSION, "source": _source_signature(source), "sha256": state_dict_digest(tensors), "tensors": tensors,
            "bond_failures": [f"{i}\t{why}" for i, why in failures]}
    atomic_torch_save(blob, cache)
    return tensors


def make_split(ids: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Random split of QM9 ids into the standard sizes, deterministic for ``seed``."""
    perm = np.random.default_rng(seed).permutation(np.sort(ids))
    a, b = SPLIT_SIZES["train"], SPLIT_SIZES["train"] + SPLIT_SIZES["valid"]
    return {"train": np.sort(perm[:a]), "valid": np.sort(perm[a:b]), "test": np.sort(perm[b:])}


def split_file() -> Path:
    """The committed split, ``data/qm9_split.npz`` of the checkout. An installed package without it
    draws the same split with :func:`make_split` (a test checks the two agree)."""
    return Path(__file__).resolve().parents[2] / "data" / "qm9_split.npz"


def load_split(ids: np.ndarray) -> dict[str, np.ndarray]:
    """The committed split if present (checked to cover exactly ``ids``), else the seeded one."""
    path = split_file()
    if path.exists():
        with np.load(path) as f:
            split = {k: f[k].astype(np.int64) for k in SPLIT_SIZES}
        covered = np.sort(np.concatenate(list(split.values())))
        if not np.array_equal(covered, np.sort(ids)):
            raise UserError(f"{path} does not cover the QM9 ids of this qm9pack; delete it to redraw the split")
        return split
    return make_split(ids)


PROPERTY_CACHE_VERSION = 1
#: the QM9 training split cut in two disjoint halves for the EDM conditioning protocol: a property
#: predictor learns on half A, the conditional generator on half B
HALVES = ("train-a", "train-b")


def load_qm9_properties(progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [M], values [M, K] float64)``: the properties of :data:`molediff.conditioning.PROPERTIES`
    for every QM9 molecule, in the dataset's units (a small cache beside the molecule cache)."""
    from molediff.conditioning import PROPERTIES

    cache = data_dir() / f"qm9_props_v{PROPERTY_CACHE_VERSION}.pt"
    try:
        folder = qm9pack_dir()
    except UserError:
        folder = None  # a self-consistent cache is used as is, like the molecule cache; qm9pack only rebuilds
    if cache.exists():
        try:
            blob = torch.load(cache, map_location="cpu", weights_only=True)
            fresh = folder is None or blob.get("source") == _source_signature(folder)
            if fresh and state_dict_digest(blob["tensors"]) == blob.get("sha256"):
                return blob["tensors"]["ids"], blob["tensors"]["values"]
        except Exception:  # a truncated or stale cache is rebuilt below
            pass
    if folder is None:
        folder = qm9pack_dir()  # raises the install hint
    signature = _source_signature(folder)
    import pandas as pd

    if progress:
        print("reading QM9 properties from the qm9pack CSVs ...", flush=True)
    cols = ["Index"] + [p.column for p in PROPERTIES]
    df = pd.concat([pd.read_csv(folder / f, usecols=cols) for f in _CSV_FILES], ignore_index=True)
    df = df.sort_values("Index", kind="stable").reset_index(drop=True)
    tensors = {"ids": torch.from_numpy(df["Index"].to_numpy(np.int64).copy()),
               "values": torch.from_numpy(df[[p.column for p in PROPERTIES]].to_numpy(np.float64).copy())}
    atomic_torch_save({"source": signature, "tensors": tensors, "sha256": state_dict_digest(tensors)}, cache)
    return tensors["ids"], tensors["values"]


def train_halves(train_ids: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """The training split's ids in two disjoint halves (``train-a``, ``train-b``), fixed by ``seed``."""
    perm = np.random.default_rng(seed + 1).permutation(np.sort(train_ids))
    half = len(perm) // 2
    return {"train-a": np.sort(perm[:half]), "train-b": np.sort(perm[half:])}


def load_qm9(split: str = "train", progress: bool = True, properties: bool = False) -> MoleculeSet:
    """QM9 molecules of ``split`` ("train", "valid", "test", "all", or the training split's halves
    "train-a" / "train-b"), names are QM9 ids; ``properties``: with the conditioning properties."""
    if split not in (*SPLIT_SIZES, "all", *HALVES):
        raise UserError(f"unknown QM9 split {split!r}; choose train, valid, test, all, train-a or train-b")
    t = load_qm9_tensors(progress=progress)
    props = None
    if properties:
        ids, props = load_qm9_properties(progress=progress)
        if not torch.equal(ids, t["ids"]):
            raise UserError("the QM9 property table does not line up with the molecule cache; delete both caches in "
                            f"{data_dir()} and run again")
    full = MoleculeSet(t["pos"], t["atom_type"], t["ptr"], [str(i) for i in t["ids"].tolist()], t["charge"],
                       t["bond_index"], t["bond_order"], t["bond_ptr"], t["bond_status"] < 2, props)
    if split == "all":
        return full
    ids = t["ids"].numpy()
    split_ids = load_split(ids)
    wanted = train_halves(split_ids["train"])[split] if split in HALVES else split_ids[split]
    index = np.searchsorted(ids, wanted)  # ids are sorted by construction
    return full.subset(index)


def train_size_histogram() -> torch.Tensor:
    """Molecule-size histogram of the QM9 training split (entry n = molecules with n atoms)."""
    return load_qm9("train", progress=False).size_histogram()


def qm9_bond_failures() -> list[tuple[int, str]]:
    """QM9 molecules whose SMILES did not fit their geometry, as (QM9 id, reason)."""
    load_qm9_tensors(progress=False)
    blob = torch.load(data_dir() / f"qm9_v{CACHE_VERSION}.pt", map_location="cpu", weights_only=True)
    return [(int(line.split("\t", 1)[0]), line.split("\t", 1)[1]) for line in blob.get("bond_failures", [])]
