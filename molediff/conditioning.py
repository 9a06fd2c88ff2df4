"""Property conditioning: the properties a model can be conditioned on (QM9's quantum-chemical ones,
or the drug-like ones chemists filter by, computed with RDKit from each molecule), their units, how
values are normalised for the network, checked, dropped in training, and how molecule sizes follow them.

One home for these facts; no RDKit, no network. A conditional model's config names its properties
(``DiffusionConfig.conditions``) and carries their statistics on its training data
(``condition_stats``: mean, standard deviation, minimum, maximum, in the dataset's units); values are
given to the model as a tensor ``[B, K]`` in those units with NaN for "not given".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from molediff.errors import UserError

if TYPE_CHECKING:  # torch is imported where it is used, so the CLI's --help (which lists PROPERTIES) stays fast
    import torch


@dataclass(frozen=True)
class Property:
    name: str  # as on the command line: --condition gap=0.25
    column: str  # qm9pack CSV column (QM9) or molediff.chem.analysis.CONDITION_DESCRIPTORS key (drug-like)
    unit: str  # the dataset's unit, the unit of --condition values
    description: str
    #: drug-like: half-width of the band around an asked value (NAME=VALUE) inside which a molecule meets it,
    #: the band range restarts check (molediff.restarts); 0.5 for a count: exactly the value. Ask NAME=LO:HI
    #: for another band. QM9's properties are not computable from a molecule's graph: no band.
    tolerance: float | None = None


#: the six properties of the EDM conditioning protocol (Hoogeboom et al. 2022), in QM9's own units
PROPERTIES: tuple[Property, ...] = (
    Property("alpha", "Polarizability_bohr3", "Bohr^3", "isotropic polarizability α"),
    Property("gap", "HOMO_LUMO_gap_au", "Hartree", "HOMO-LUMO gap Δε"),
    Property("homo", "HOMO_au", "Hartree", "energy of the highest occupied orbital"),
    Property("lumo", "LUMO_au", "Hartree", "energy of the lowest unoccupied orbital"),
    Property("mu", "Dipole_debye", "Debye", "dipole moment μ"),
    Property("cv", "Heatcapacity_Cv_cal_mol_K", "cal/(mol K)", "heat capacity Cv at 298 K"),
)
#: names of the QM9 conditioning properties above, the columns of a QM9 set's ``props`` (the
#: drug-likeness properties of the metrics are molediff.metrics.properties.DRUGLIKE_PROPERTY_NAMES)
PROPERTY_NAMES = tuple(p.name for p in PROPERTIES)
#: the properties a drug-like model can be conditioned on: what chemists filter by, computed with RDKit
#: from each training molecule (molediff.chem.analysis.CONDITION_DESCRIPTORS); the columns, in this
#: order, of a molecule-file set's ``props`` when a model asks for them
DRUGLIKE_PROPERTIES: tuple[Property, ...] = (
    Property("qed", "qed", "score 0-1", "quantitative estimate of drug-likeness (QED)", 0.05),
    Property("logp", "logp", "log units", "Crippen logP", 0.25),
    Property("mw", "mw", "g/mol", "molecular weight", 10.0),
    Property("tpsa", "tpsa", "Å^2", "topological polar surface area", 5.0),
    Property("hbd", "hbd", "count", "hydrogen-bond donors (Lipinski)", 0.5),
    Property("hba", "hba", "count", "hydrogen-bond acceptors (Lipinski)", 0.5),
    Property("rotb", "rotb", "count", "rotatable bonds", 0.5),
    Property("arom", "arom", "count", "aromatic rings", 0.5),
)
DRUGLIKE_CONDITION_NAMES = tuple(p.name for p in DRUGLIKE_PROPERTIES)
BY_NAME = {p.name: p for p in PROPERTIES + DRUGLIKE_PROPERTIES}
ALL_CONDITION_NAMES = PROPERTY_NAMES + DRUGLIKE_CONDITION_NAMES


def condition_family(names: list[str] | tuple[str, ...]) -> str | None:
    """``"qm9"`` or ``"druglike"``: which table ``names`` come from (None when empty); a mixture, or a
    name in neither, is refused."""
    check_names(names)
    if not names:
        return None
    families = {"qm9" if n in PROPERTY_NAMES else "druglike" for n in names}
    if len(families) > 1:
        raise UserError(f"conditions {', '.join(names)} mix QM9 properties ({', '.join(PROPERTY_NAMES)}) with drug-like "
                        f"ones ({', '.join(DRUGLIKE_CONDITION_NAMES)}): a model reads one kind")
    return families.pop()


def property_columns(names: list[str] | tuple[str, ...]) -> list[int]:
    """Columns of ``names`` in a molecule set's ``props``: a QM9 set holds :data:`PROPERTY_NAMES`, a
    molecule-file set :data:`DRUGLIKE_CONDITION_NAMES`."""
    table = DRUGLIKE_CONDITION_NAMES if condition_family(names) == "druglike" else PROPERTY_NAMES
    return [table.index(n) for n in names]
#: Hartree → meV, for reporting energy errors as the literature does
HARTREE_MEV = 27211.386


def check_names(names: list[str] | tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise UserError(f"unknown propert{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                        f"choose from {', '.join(PROPERTY_NAMES)} (QM9) or {', '.join(DRUGLIKE_CONDITION_NAMES)} (drug-like)")
    if len(set(names)) != len(names):
        raise UserError(f"a property is named twice in {list(names)}")


def property_stats(values: torch.Tensor, names: list[str]) -> dict[str, list[float]]:
    """``{name: [mean, std, min, max]}`` of ``values`` [M, K] (columns in ``names`` order, finite rows)."""
    import torch

    stats = {}
    for k, name in enumerate(names):
        v = values[:, k].double()
        v = v[torch.isfinite(v)]
        if v.numel() < 2:
            raise UserError(f"no training values for property {name!r}")
        stats[name] = [float(v.mean()), float(v.std().clamp_min(1e-12)), float(v.min()), float(v.max())]
    return stats


def normalise(values: torch.Tensor, names: list[str], stats: dict[str, list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Network inputs of ``values`` [B, K] (dataset units, NaN = not given): ``(z [B, K], given [B, K])``
    with z the standardised value where given and 0 elsewhere, ``given`` 1.0 / 0.0."""
    import torch

    mean = values.new_tensor([stats[n][0] for n in names])
    std = values.new_tensor([stats[n][1] for n in names])
    given = torch.isfinite(values)
    z = torch.where(given, (values - mean) / std, torch.zeros_like(values))
    return z, given.to(values.dtype)


def drop_conditions(values: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each value of ``values`` [B, K] replaced by NaN ("not given") independently with probability ``p``,
    so one model learns every subset of conditions, none included (classifier-free guidance)."""
    import torch

    keep = torch.rand(values.shape, generator=generator, device=values.device) >= p
    return torch.where(keep, values, torch.full_like(values, float("nan")))


def target_band(name: str, value: float | Range) -> tuple[float, float] | None:
    """The band ``(lo, hi)`` (bounds included) inside which a molecule meets the asked ``value`` of
    property ``name``: a range itself, a value ± the property's :attr:`Property.tolerance`; None for a
    property without one (QM9's)."""
    if isinstance(value, Range):
        return tuple(value)
    tol = BY_NAME[name].tolerance
    return None if tol is None else (float(value) - tol, float(value) + tol)


class Range(tuple):
    """A target range ``(lo, hi)`` of one property: each molecule gets a target drawn uniformly in it
    (:func:`condition_table`)."""

    def __new__(cls, lo: float, hi: float) -> "Range":
        return super().__new__(cls, (float(lo), float(hi)))

    def __getnewargs__(self) -> tuple[float, float]:  # pickling (sampling worker processes)
        return tuple(self)


def parse_conditions(items: list[str]) -> dict[str, float | Range]:
    """``["gap=0.25", "logp=2:3"]`` (the CLI's ``--condition``) → ``{"gap": 0.25, "logp": Range(2.0, 3.0)}``:
    a value, or a range LO:HI (each molecule's target drawn uniformly in it)."""
    out: dict[str, float | Range] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise UserError(f"--condition {item!r}: expected NAME=VALUE or NAME=LO:HI, e.g. gap=0.25 or logp=2:3")
        parts = text.split(":")
        try:
            numbers = [float(x) for x in parts]
        except ValueError:
            raise UserError(f"--condition {item!r}: {text.strip()!r} is not a number or a range LO:HI") from None
        if len(numbers) > 2 or (len(numbers) == 2 and not numbers[0] < numbers[1]):
            raise UserError(f"--condition {item!r}: a range is LO:HI with LO < HI")
        if name in out:
            raise UserError(f"--condition: {name} given twice")
        out[name] = Range(*numbers) if len(numbers) == 2 else numbers[0]
    return out


def check_conditions(values: dict[str, Any], names: list[str], stats: dict[str, list[float]]) -> dict[str, Any]:
    """``values`` (per property a number, or a sequence of numbers: one target per molecule) checked
    against a model's properties ``names`` and their training range: a value outside it is refused
    (the model has never seen such molecules and would quietly give others)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in BY_NAME:
            raise UserError(f"condition {name!r}: unknown property; choose from {', '.join(ALL_CONDITION_NAMES)}")
        if name not in names:
            raise UserError(f"condition {name!r}: this model is conditioned on {', '.join(names) or 'nothing'}")
        if isinstance(value, Range):  # a range must lie inside the training range, like a value
            lo, hi = stats[name][2], stats[name][3]
            if not (lo <= value[0] and value[1] <= hi):
                raise UserError(f"condition {name}={value[0]:g}:{value[1]:g}: outside the training range of {name}, "
                                f"[{lo:.6g}, {hi:.6g}] {BY_NAME[name].unit}")
            out[name] = value
            continue
        many = isinstance(value, (list, tuple)) or (hasattr(value, "shape") and len(getattr(value, "shape")) > 0)
        try:
            items = [float(v) for v in value] if many else [float(value)]
        except (TypeError, ValueError):
            raise UserError(f"condition {name}={value!r}: not a number") from None
        lo, hi = stats[name][2], stats[name][3]
        for v in items:
            if v != v or v in (float("inf"), float("-inf")):
                raise UserError(f"condition {name}={v}: the value must be finite")
            if not lo <= v <= hi:
                raise UserError(f"condition {name}={v:g}: outside the training range of {name}, "
                                f"[{lo:.6g}, {hi:.6g}] {BY_NAME[name].unit}")
        out[name] = items if many else items[0]
    return out


def condition_table(values: dict[str, Any], names: list[str], n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[n, K]`` float64 targets, molecule by molecule: a number is every molecule's target, a sequence
    of n numbers one per molecule, a :class:`Range` a target drawn uniformly in it for each molecule
    (from ``generator``); NaN for the model's properties not given."""
    import torch

    out = torch.full((n, len(names)), float("nan"), dtype=torch.float64)
    for name, value in values.items():
        if isinstance(value, Range):
            lo, hi = value
            out[:, names.index(name)] = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
        elif isinstance(value, list):
            if len(value) != n:
                raise UserError(f"condition {name}: {len(value)} targets for {n} molecules")
            out[:, names.index(name)] = torch.tensor(value, dtype=torch.float64)
        else:
            out[:, names.index(name)] = float(value)
    return out


def sizes_for_conditions(targets: torch.Tensor, table_sizes: torch.Tensor, table_values: torch.Tensor,
                         names: list[str], stats: dict[str, list[float]], generator: torch.Generator | None = None,
                         k: int = 64) -> torch.Tensor:
    """Atom counts [B] drawn from p(n | c), as EDM: for each row of ``targets`` [B, K] (NaN = not
    given), uniformly among the sizes of the k training molecules nearest in the given (standardised)
    properties. ``table_sizes`` [M] and ``table_values`` [M, K]: training molecules' sizes and values."""
    import torch

    zt, given = normalise(targets.double(), names, stats)
    zm, _ = normalise(table_values.double(), names, stats)
    k = min(k, len(table_sizes))
    out = torch.empty(len(targets), dtype=torch.long)
    for i in range(len(targets)):
        d = (((zm - zt[i]) ** 2) * given[i]).sum(1)
        nearest = torch.topk(d, k, largest=False).indices if given[i].any() else torch.arange(len(table_sizes))
        pick = torch.randint(len(nearest), (1,), generator=generator)
        out[i] = table_sizes[nearest[pick]]
    return out
