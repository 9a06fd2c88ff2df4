"""SMILES (or an SDF record) → one standardised, force-field-relaxed 3D molecule as an SDF record.

The per-molecule half of ``molediff data`` (:mod:`molediff.data.build` does the files, chunks and
processes). Each step either succeeds or returns a :class:`Failure` with a short ``reason`` (a
category to count) and a ``detail`` (what exactly); nothing here raises for bad input.

1. parse (RDKit, sanitised); refuse dummy / R-group / ``*`` atoms and query features;
2. standardise: strip isotope labels, keep the largest of the fragments holding carbon (salts,
   hydrates; the package's one rule, :func:`molediff.chem.rdkit_mol.largest_fragment`, on the molecule
   without explicit hydrogens: the most heavy atoms; a mixture without carbon, an inorganic salt, is
   refused), refuse elements outside :data:`molediff.elements.ELEMENTS`, neutralise charges where
   RDKit's ``rdMolStandardize.Uncharger`` can (a nitro group or a quaternary ammonium keeps its
   charges); what was done is written as the ``molediff_standardisation`` property;
3. add hydrogens, refuse more than ``max_atoms`` atoms, embed ``conformers`` conformers with ETKDGv3
   (seed :func:`molecule_seed` of the build seed and the molecule's source index; one thread, so the
   result depends on nothing else), retried from random coordinates when that fails;
4. optimise every conformer with MMFF94 (UFF where MMFF94 lacks parameters) and keep the lowest-energy
   one.

The record is written as RDKit writes it (explicit hydrogens, Kekulé bonds, formal charges, 3D
coordinates) with SD properties ``molediff_source_index``, ``molediff_input_smiles``, ``SMILES``
(canonical SMILES of the standardised molecule, hydrogens implicit), ``molediff_forcefield``,
``molediff_energy_kcal_mol``, ``molediff_ff_converged``, ``molediff_standardisation``,
``molediff_conformers_embedded`` and ``molediff_embed_seed``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
from typing import NamedTuple, Sequence

from rdkit import Chem, rdBase
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers
from rdkit.Chem.MolStandardize import rdMolStandardize

from molediff.chem.io import _prop_text
from molediff.chem.rdkit_mol import fragment_size
from molediff.elements import ELEMENTS

__all__ = [
    "Failure",
    "Prepared",
    "RDKIT_VERSION",
    "molecule_seed",
    "parse_molblock",
    "parse_smiles",
    "prepare",
    "prepare_batch",
    "standardise",
    "worker_init",
]

RDKIT_VERSION: str = rdBase.rdkitVersion
#: force-field iterations per conformer (a fixed part of the method: changing it changes the output)
MAX_FF_ITERS = 2000

# failure reasons (the counted categories; "element outside table: X" carries the element)
INVALID_SMILES = "invalid SMILES"
UNREADABLE_RECORD = "unreadable record"
EMPTY = "no atoms"
DUMMY_ATOM = "dummy atom"
QUERY_FEATURE = "query feature"
ELEMENT_OUTSIDE = "element outside table"
TOO_MANY_ATOMS = "too many atoms"
STANDARDISATION_FAILED = "standardisation failed"
NO_ORGANIC_FRAGMENT = "no organic fragment"
EMBEDDING_FAILED = "embedding failed"
FORCE_FIELD_FAILED = "force field failed"
INTERNAL_ERROR = "internal error"

# standardisation actions (counted in the manifest, written per record)
LARGEST_FRAGMENT = "largest fragment kept"
NEUTRALISED = "charges neutralised"
ISOTOPES = "isotope labels stripped"

_ALLOWED = frozenset(ELEMENTS)


class Failure(NamedTuple):
    """Why a molecule was not written: ``reason`` (a category) and ``detail`` (one line)."""

    reason: str
    detail: str = ""


class Prepared(NamedTuple):
    """A written molecule: its SDF ``block`` (ends with ``$$$$``), canonical ``smiles``, ``forcefield``
    ("MMFF94" or "UFF"), ``energy`` (kcal/mol) and the standardisation actions (``notes``)."""

    block: str
    smiles: str
    forcefield: str
    energy: float
    notes: tuple[str, ...]


def molecule_seed(seed: int, index: int) -> int:
    """The ETKDG seed of source molecule ``index`` in a build with ``seed`` (31-bit, never -1): a hash,
    so neighbouring molecules get unrelated streams and the result does not depend on chunking."""
    digest = hashlib.blake2b(f"molediff-data:{int(seed)}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def _parse_error_detail(text: str) -> str:
    """RDKit's own words for a SMILES it cannot parse (logged, not raised)."""
    buf = io.StringIO()
    rdBase.LogToPythonStderr()
    try:
        with contextlib.redirect_stderr(buf):
            Chem.MolFromSmiles(text, sanitize=False)
    finally:
        rdBase.LogToCppStreams()
    for line in buf.getvalue().splitlines():  # the first line says what is wrong; the rest points at it
        line = line.split("] ", 1)[-1].strip().removeprefix("SMILES Parse Error:").strip()
        if line:
            return line[:300]
    return "cannot parse"


def _sanitize_error(mol: Chem.Mol) -> str | None:
    """``None`` when ``mol`` sanitises (in place), else RDKit's message."""
    try:
        Chem.SanitizeMol(mol)
    except Exception as exc:  # noqa: BLE001 - RDKit's MolSanitizeException family
        return " ".join(str(exc).split())[:300] or type(exc).__name__
    return None


def _refuse_placeholders(mol: Chem.Mol) -> Failure | None:
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() == 0:
            label = atom.GetSymbol() or "*"
            return Failure(DUMMY_ATOM, f"atom {atom.GetIdx() + 1} is a dummy/R-group atom ({label})")
        if atom.HasQuery():
            return Failure(QUERY_FEATURE, f"atom {atom.GetIdx() + 1} ({atom.GetSymbol()}) is a query atom")
    for bond in mol.GetBonds():
        if bond.HasQuery():
            return Failure(QUERY_FEATURE, f"bond {bond.GetIdx() + 1} is a query bond")
    return None


def parse_smiles(text: str) -> Chem.Mol | Failure:
    """A sanitised molecule from a SMILES, or a :class:`Failure` (``invalid SMILES``, ``dummy atom``, ...)."""
    text = text.strip()
    if not text:
        return Failure(INVALID_SMILES, "empty SMILES")
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(text, sanitize=False)
    if mol is None:
        return Failure(INVALID_SMILES, _parse_error_detail(text))
    return _checked(mol, "the SMILES", INVALID_SMILES)


def parse_molblock(block: str) -> Chem.Mol | Failure:
    """A sanitised molecule from one SDF record's text (its coordinates are ignored later), or a :class:`Failure`."""
    with rdBase.BlockLogs():
        mol = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False, strictParsing=True)
    if mol is None:
        return Failure(UNREADABLE_RECORD, "RDKit cannot read the record")
    return _checked(mol, "the record", UNREADABLE_RECORD)


def _checked(mol: Chem.Mol, what: str, reason: str) -> Chem.Mol | Failure:
    """A parsed, unsanitised molecule sanitised in place, or the :class:`Failure` that stops it: no atoms
    (``what`` names the input, e.g. "the SMILES"), a placeholder atom or query, or sanitisation's error
    (counted under ``reason``)."""
    if mol.GetNumAtoms() == 0:
        return Failure(EMPTY, f"{what} has no atoms")
    bad = _refuse_placeholders(mol)
    if bad is not None:
        return bad
    with rdBase.BlockLogs():
        problem = _sanitize_error(mol)
    if problem is not None:
        return Failure(reason, problem)
    return mol


def standardise(mol: Chem.Mol) -> tuple[Chem.Mol, list[str]] | Failure:
    """Isotopes stripped, largest fragment, element check, neutralised (see the module docstring).
    Returns ``(molecule without explicit hydrogens, notes)`` or a :class:`Failure`."""
    notes: list[str] = []
    mol = Chem.RWMol(mol)
    if any(a.GetIsotope() for a in mol.GetAtoms()):
        for atom in mol.GetAtoms():
            atom.SetIsotope(0)
        notes.append(ISOTOPES)
    with rdBase.BlockLogs():
        try:
            mol = Chem.RemoveHs(mol.GetMol(), sanitize=True)
            frags = Chem.GetMolFrags(mol, asMols=True)
            if len(frags) > 1:
                removed = [Chem.MolToSmiles(f) for f in frags]
                organic = [f for f in frags if any(a.GetAtomicNum() == 6 for a in f.GetAtoms())]
                if not organic:  # an inorganic salt: no molecule to keep
                    return Failure(NO_ORGANIC_FRAGMENT, f"none of the fragments {'.'.join(removed)} holds carbon")
                kept = max(organic, key=fragment_size)  # the package's largest-fragment rule, among those with carbon
                removed.remove(Chem.MolToSmiles(kept))
                notes.append(f"{LARGEST_FRAGMENT} (removed {'.'.join(removed)})")
                mol = kept
        except Exception as exc:  # noqa: BLE001
            return Failure(STANDARDISATION_FAILED, " ".join(str(exc).split())[:300] or type(exc).__name__)
    outside = sorted({a.GetSymbol() for a in mol.GetAtoms()} - _ALLOWED)
    if outside:
        return Failure(f"{ELEMENT_OUTSIDE}: {', '.join(outside)}",
                       f"{', '.join(outside)} not in the element table ({' '.join(ELEMENTS)})")
    before = [a.GetFormalCharge() for a in mol.GetAtoms()]
    if any(before):
        with rdBase.BlockLogs():
            try:
                uncharged = rdMolStandardize.Uncharger(canonicalOrder=True).uncharge(mol)
            except Exception as exc:  # noqa: BLE001
                return Failure(STANDARDISATION_FAILED, " ".join(str(exc).split())[:300] or type(exc).__name__)
            problem = _sanitize_error(uncharged)
        if problem is not None:
            return Failure(STANDARDISATION_FAILED, problem)
        if [a.GetFormalCharge() for a in uncharged.GetAtoms()] != before:
            notes.append(NEUTRALISED)
            mol = uncharged
    return mol, notes


def _embed(molh: Chem.Mol, seed: int, conformers: int) -> list[int]:
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = seed
    params.numThreads = 1
    params.pruneRmsThresh = -1.0
    cids = list(rdDistGeom.EmbedMultipleConfs(molh, conformers, params))
    if not cids:  # large or strained molecules: start from random coordinates instead of eigenvectors
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = seed
        params.numThreads = 1
        params.pruneRmsThresh = -1.0
        params.useRandomCoords = True
        cids = list(rdDistGeom.EmbedMultipleConfs(molh, conformers, params))
    return cids


def _record(molh: Chem.Mol, conf_id: int, title: str, props: Sequence[tuple[str, object]]) -> str:
    molh.SetProp("_Name", " ".join(title.splitlines())[:80])
    block = Chem.MolToMolBlock(molh, confId=conf_id)
    parts = [block if block.endswith("\n") else block + "\n"]
    parts += [f">  <{key}>\n{_prop_text(value)}\n\n" for key, value in props]
    parts.append("$$$$\n")
    return "".join(parts)


def prepare(
    kind: str, text: str, index: int, seed: int, conformers: int = 1, max_atoms: int = 200, title: str = "",
) -> Prepared | Failure:
    """One source molecule (``kind`` "smiles" or "molblock") → :class:`Prepared` or :class:`Failure`.

    Never raises for bad input; an unexpected exception is a ``Failure("internal error", ...)``."""
    try:
        return _prepare(kind, text, index, seed, conformers, max_atoms, title)
    except Exception as exc:  # noqa: BLE001 - one molecule must never stop a build
        return Failure(INTERNAL_ERROR, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


def _prepare(kind: str, text: str, index: int, seed: int, conformers: int, max_atoms: int, title: str) -> Prepared | Failure:
    if kind == "smiles":
        mol = parse_smiles(text)
        input_smiles = text.strip()
    elif kind == "molblock":
        mol = parse_molblock(text)
        input_smiles = None
    else:
        raise ValueError(f"unknown source kind {kind!r}")
    if isinstance(mol, Failure):
        return mol
    if input_smiles is None:
        input_smiles = Chem.MolToSmiles(mol)
    std = standardise(mol)
    if isinstance(std, Failure):
        return std
    mol, notes = std
    smiles = Chem.MolToSmiles(mol)
    molh = Chem.AddHs(mol)
    if molh.GetNumAtoms() > max_atoms:
        return Failure(TOO_MANY_ATOMS, f"{molh.GetNumAtoms()} atoms with hydrogens > --max-atoms {max_atoms}")
    mseed = molecule_seed(seed, index)
    with rdBase.BlockLogs():
        cids = _embed(molh, mseed, conformers)
        if not cids:
            return Failure(EMBEDDING_FAILED, f"ETKDGv3 found no 3D coordinates ({molh.GetNumAtoms()} atoms, seed {mseed})")
        if rdForceFieldHelpers.MMFFHasAllMoleculeParams(molh):
            forcefield = "MMFF94"
            results = rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(molh, numThreads=1, maxIters=MAX_FF_ITERS, mmffVariant="MMFF94")
        elif rdForceFieldHelpers.UFFHasAllMoleculeParams(molh):
            forcefield = "UFF"
            results = rdForceFieldHelpers.UFFOptimizeMoleculeConfs(molh, numThreads=1, maxIters=MAX_FF_ITERS)
        else:
            return Failure(FORCE_FIELD_FAILED, "neither MMFF94 nor UFF has parameters for this molecule")
    by_conf = dict(zip(cids, results)) if len(results) == len(cids) else dict(enumerate(results))
    finite = [(energy, cid, not_converged) for cid, (not_converged, energy) in by_conf.items() if math.isfinite(energy)]
    if not finite or any(r[0] == -1 for r in results):
        return Failure(FORCE_FIELD_FAILED, f"{forcefield} could not set up or optimise the molecule")
    energy, best, not_converged = min(finite)
    props = [
        ("molediff_source_index", index),
        ("molediff_input_smiles", input_smiles),
        ("SMILES", smiles),
        ("molediff_forcefield", forcefield),
        ("molediff_energy_kcal_mol", f"{energy:.4f}"),
        ("molediff_ff_converged", 0 if not_converged else 1),
        ("molediff_standardisation", "; ".join(notes) if notes else "none"),
        ("molediff_conformers_embedded", f"{len(cids)} of {conformers}"),
        ("molediff_embed_seed", mseed),
    ]
    with rdBase.BlockLogs():
        block = _record(molh, best, title or f"molecule_{index}", props)
    return Prepared(block, smiles, forcefield, float(energy), tuple(n.split(" (", 1)[0] for n in notes))


def prepare_batch(items: Sequence[tuple[int, str, str, str]], seed: int, conformers: int, max_atoms: int) -> list[tuple]:
    """Worker entry point: ``items`` of ``(index, kind, text, title)`` → per item ``("ok", block, notes)``
    or ``("fail", reason, detail)`` (plain tuples: cheap to send between processes)."""
    out: list[tuple] = []
    for index, kind, text, title in items:
        result = prepare(kind, text, index, seed, conformers, max_atoms, title)
        if isinstance(result, Failure):
            out.append(("fail", result.reason, result.detail))
        else:
            out.append(("ok", result.block, result.notes))
    return out


def worker_init(parent_pid: int) -> None:
    """Initialiser of ``molediff data``'s worker processes: Ctrl-C is the parent's to handle, and a
    worker whose parent is gone (``kill -9``) exits instead of waiting for work forever."""
    import os
    import signal
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="molediff-parent-watch", daemon=True).start()
