"""Ring-system realism: do the molecules' rings look like those of drug-like data?

A generator can get every valence right and still write rings no chemist would keep: partially
saturated rings (a cyclohexadiene where the data has a benzene), three- and four-membered rings, too few
aromatic rings. :func:`ring_statistics` counts, on the molecules that sanitize (RDKit's aromaticity
model), per molecule:

* ``aromatic_rings_per_molecule`` — mean number of aromatic rings (SSSR);
* ``without_aromatic_ring`` — share of molecules with no aromatic ring;
* ``odd_ring`` — share with a non-aromatic ring holding a double bond inside it (cyclohexene-,
  cyclohexadiene-, cyclobutene-like; an exocyclic C=O of a lactam does not count);
* ``small_ring`` — share with a three- or four-membered ring;
* ``rings_per_molecule`` and ``ring_sizes`` — the share of all rings by size (3 .. 7, ``8+``);
* ``clean_of_generated`` — the yield: scored molecules without an odd ring, as a share of all the
  molecules generated (``generated``; invalid ones count against it). A model that turns its odd
  rings into invalid molecules moves the odd-ring share but not this one.

Score the reference data with the same function and read the two side by side
(:func:`format_ring_table`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from rdkit import Chem

from molediff.chem.rdkit_mol import ring_kinds, sanitize

__all__ = ["RING_KEYS", "format_ring_table", "molecule_rings", "ring_statistics"]

#: the headline figures of :func:`ring_statistics`, in table order, with their labels
RING_KEYS: tuple[tuple[str, str], ...] = (
    ("aromatic_rings_per_molecule", "aromatic rings per molecule"),
    ("without_aromatic_ring", "molecules without an aromatic ring"),
    ("odd_ring", "molecules with a non-aromatic ring holding a double bond"),
    ("small_ring", "molecules with a 3- or 4-membered ring"),
    ("rings_per_molecule", "rings per molecule"),
    ("clean_of_generated", "valid molecules without an odd ring, share of all generated"),
)
_SIZES = ("3", "4", "5", "6", "7", "8+")


def molecule_rings(mol: Chem.Mol) -> dict[str, Any] | None:
    """The ring figures of one molecule (a sanitized copy is scored), None when it does not sanitize:
    ``aromatic`` (count), ``odd`` (bool), ``small`` (bool), ``sizes`` (list of ring sizes)."""
    m = sanitize(mol)
    if m is None:
        return None
    kinds = ring_kinds(m)
    aromatic = sum(kind == "aromatic" for _, kind in kinds)
    odd = any(kind == "odd" for _, kind in kinds)
    sizes = [len(ring) for ring, _ in kinds]
    return {"aromatic": aromatic, "odd": odd, "small": any(s <= 4 for s in sizes), "sizes": sizes}


def ring_statistics(mols: Sequence[Chem.Mol | None], generated: int | None = None) -> dict[str, Any]:
    """Ring-system figures (module docstring) of the molecules that sanitize (``num_scored`` of
    ``num_molecules``; None, empty and unsanitizable ones are not scored). Per-molecule flags are kept in
    ``per_molecule`` (None where not scored) for breakdowns, e.g. strain with and without an odd ring.
    ``generated``: how many molecules ``mols`` were taken from (e.g. the valid ones of 1,000 generated),
    the denominator of ``clean_of_generated``; default ``len(mols)``."""
    per = [molecule_rings(m) if m is not None and m.GetNumAtoms() else None for m in mols]
    scored = [p for p in per if p is not None]
    generated = len(mols) if generated is None else int(generated)
    if generated < len(mols):
        raise ValueError(f"generated ({generated}) must be at least the number of molecules given ({len(mols)})")
    out: dict[str, Any] = {"num_molecules": len(mols), "num_scored": len(scored), "num_generated": generated,
                           "per_molecule": per}
    if not scored:
        out.update({key: None for key, _ in RING_KEYS}, ring_sizes=None)
        return out
    sizes = [s for p in scored for s in p["sizes"]]
    binned = np.array([min(s, 8) for s in sizes], dtype=np.int64)
    out.update(
        aromatic_rings_per_molecule=float(np.mean([p["aromatic"] for p in scored])),
        without_aromatic_ring=float(np.mean([p["aromatic"] == 0 for p in scored])),
        odd_ring=float(np.mean([p["odd"] for p in scored])),
        small_ring=float(np.mean([p["small"] for p in scored])),
        rings_per_molecule=len(sizes) / len(scored),
        clean_of_generated=sum(not p["odd"] for p in scored) / generated if generated else None,
        ring_sizes={label: (float((binned == size).mean()) if len(binned) else 0.0)
                    for label, size in zip(_SIZES, (3, 4, 5, 6, 7, 8))},
    )
    return out


def format_ring_table(result: Mapping[str, Any], reference: Mapping[str, Any] | None = None,
                      reference_label: str = "reference") -> list[str]:
    """Text lines: each figure of a :func:`ring_statistics` result beside the reference's (shares in %)."""
    def fmt(key: str, r: Mapping[str, Any] | None) -> str:
        if r is None or r.get(key) is None:
            return "n/a"
        v = r[key]
        return f"{v:.2f}" if key.endswith("per_molecule") else f"{100 * v:.1f}%"

    head = ("ring systems", "generated") + ((reference_label,) if reference is not None else ())
    rows = [(label, fmt(key, result)) + ((fmt(key, reference),) if reference is not None else ()) for key, label in RING_KEYS]
    sizes = result.get("ring_sizes")
    if sizes:
        ref_sizes = (reference or {}).get("ring_sizes") or {}
        for label in _SIZES:
            row = (f"  share of rings with {label} atoms", f"{100 * sizes[label]:.1f}%")
            rows.append(row + ((f"{100 * ref_sizes[label]:.1f}%" if label in ref_sizes else "n/a",) if reference is not None else ()))
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    line = lambda r: "  ".join(f"{r[0]:<{widths[0]}}" if c == 0 else f"{r[c]:>{widths[c]}}" for c in range(len(r)))  # noqa: E731
    generated = result.get("num_generated", result["num_molecules"])
    return [f"ring systems: {result['num_scored']} of {result['num_molecules']} molecules scored (those that sanitize)"
            + (f", of {generated} generated" if generated != result["num_molecules"] else ""),
            line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
