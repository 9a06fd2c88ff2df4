"""Weight transfer between state layouts, by label: the operations every architecture's own transfer
(``Architecture.transfer`` in :mod:`molediff.models`) is made of.

A network's per-atom input columns, output rows and per-pair columns each carry a label (e.g.
"atom:C", "time", "sc:bond:single"; :meth:`molediff.molecular.MolecularDiffusion.input_labels`), so a
model that adds parts (charges, bonds), elements or inputs starts from another model's weights: what
both have is copied, what is new starts at zero (a new input then changes nothing at first) or, for a
derived label (:data:`DERIVED`), as the mean of the labels it derives from. Vocabulary entries the new
model lacks (an element its data does not hold) are dropped; any other label the new model lacks is
refused (:class:`~molediff.errors.UserError`).
"""

from __future__ import annotations

import torch

from molediff.errors import UserError

__all__ = ["DERIVED", "appended_columns", "input_columns", "is_vocabulary", "output_rows", "relabel"]

#: labels a warm start derives from others where the source lacks them: an aromatic bond starts as the
#: mean of a single and a double one (a model that adds the aromatic type to a Kekulé one)
DERIVED = {"bond:aromatic": ("bond:single", "bond:double")}


def is_vocabulary(label: str) -> bool:
    """Whether a network column belongs to an entry of the vocabulary (an element or formal charge)."""
    return label.removeprefix("sc:").split(":")[0] in ("atom", "charge")


def _derived(label: str) -> tuple[str, ...] | None:
    sc = "sc:" if label.startswith("sc:") else ""
    parts = DERIVED.get(label.removeprefix("sc:"))
    return tuple(sc + p for p in parts) if parts else None


def relabel(target: torch.Tensor, value: torch.Tensor, new: list[str], old: list[str], dim: int, what: str) -> None:
    """Copy ``value``'s columns (dim 1) or rows (dim 0) into ``target`` by label; new labels start at
    zero, or as the mean of the labels they derive from (:data:`DERIVED`); an old label the new model
    lacks is refused (``what`` says which tensor: "reads pair input")."""
    target.zero_()
    src, dst = value.movedim(dim, 0), target.movedim(dim, 0)
    for k, label in enumerate(new):
        if label in old:
            dst[k] = src[old.index(label)]
        elif (parts := _derived(label)) and all(p in old for p in parts):
            dst[k] = torch.stack([src[old.index(p)] for p in parts]).mean(0)
    for label in old:
        if label not in new:
            raise UserError(f"the source network {what} {label!r}, which this model does not")


def input_columns(target: torch.Tensor, value: torch.Tensor, new_in: list[str], old_in: list[str]) -> None:
    """An input read-in's columns (dim 1) copied by label: new columns start at zero, vocabulary
    columns the new model lacks are dropped, any other missing input is refused."""
    target.zero_()
    for j, label in enumerate(old_in):
        if label not in new_in:
            if is_vocabulary(label):
                continue
            raise UserError(f"the source network reads input {label!r}, which this model does not have")
        target[:, new_in.index(label)] = value[:, j]


def output_rows(target: torch.Tensor, value: torch.Tensor, new_out: list[str], old_out: list[str]) -> None:
    """An output layer's rows (dim 0) copied by label: new rows keep their initialisation, vocabulary
    rows the new model lacks are dropped, any other missing output is refused."""
    for j, label in enumerate(old_out):
        if label in new_out:
            target[new_out.index(label)] = value[j]
        elif not is_vocabulary(label):
            raise UserError(f"the source network writes {label!r}, which this model does not")


def appended_columns(target: torch.Tensor, value: torch.Tensor) -> None:
    """Inputs appended at the end (self-conditioning's estimate) start at zero; the others are copied."""
    target.zero_()
    target[:, : value.shape[1]] = value
