"""PoseBusters' checks of single generated molecules (optional package; extra ``posebusters``):
:func:`posebusters_checks` returns pass rates per check. PoseBusters' logging is kept quiet and its
RDKit log handler pointed at a live stream (:func:`_quiet_posebusters`)."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from typing import Any, Iterator, Sequence

from rdkit import Chem, rdBase

from molediff.metrics.errors import MetricUnavailable

__all__ = ["posebusters_checks"]


@contextlib.contextmanager
def _quiet_posebusters() -> Iterator[None]:
    """PoseBusters' own logger at ERROR, warnings and RDKit messages off (PoseBusters may not switch them
    back on), for the ``with`` block.

    PoseBusters leaves RDKit's Python log handler on the sys.stderr of its previous call; when that
    stream has since been closed (a captured one), its next setStream fails on flushing it, and every
    molecule's InChI check fails with it: the handler gets the current stream, without flushing."""
    import rdkit

    handler = getattr(rdkit, "log_handler", None)
    if handler is not None and getattr(getattr(handler, "stream", None), "closed", False):
        handler.stream = sys.stderr
    from rdkit import RDLogger

    previous = logging.getLogger("posebusters").level
    logging.getLogger("posebusters").setLevel(logging.ERROR)
    # PoseBusters switches RDKit's messages back on inside its checks (RDLogger.EnableLog after each
    # DisableLog), past BlockLogs: InChI's stereo warnings then reached the terminal. Not in this block.
    enable = RDLogger.EnableLog
    RDLogger.EnableLog = lambda *args, **kwargs: None
    try:
        with warnings.catch_warnings(), rdBase.BlockLogs():
            warnings.simplefilter("ignore")
            yield
    finally:
        RDLogger.EnableLog = enable
        logging.getLogger("posebusters").setLevel(previous)


def posebusters_checks(mols: Sequence[Chem.Mol | None], config: str = "mol") -> dict[str, Any]:
    """PoseBusters' checks of single molecules (``config="mol"``: loading, sanitization, InChI,
    connectivity, radicals, bond lengths / angles / internal clash against distance-geometry bounds,
    aromatic and non-aromatic ring flatness, double bond flatness, internal energy vs an ETKDG ensemble —
    the last takes ~0.7 s per molecule; ``"mol_fast"`` skips it). Returns pass rates per check, the
    fraction passing all, counts, and ``passed``: per molecule, in input order, whether it passes all
    checks; ``None`` molecules fail every check. Raises
    :class:`~molediff.metrics.errors.MetricUnavailable` when ``posebusters`` is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from posebusters import PoseBusters
    except ImportError as exc:
        raise MetricUnavailable(f"posebusters is not installed ({exc}): pip install 'molediff[posebusters]'") from None
    present = [Chem.Mol(m) for m in mols if m is not None]
    n = len(mols)
    if n == 0:
        raise MetricUnavailable("no molecules")
    checks: dict[str, float] = {}
    all_pass = 0.0
    passed_all = [False] * n
    if present:
        with _quiet_posebusters():
            table = PoseBusters(config=config, max_workers=0).bust(present)
        # a check that could not run (NaN: e.g. geometry checks of a molecule that does not sanitize) is no pass
        passed = table.fillna(False).astype(bool).to_numpy()
        checks = {str(c): float(passed[:, k].sum()) / n for k, c in enumerate(table.columns)}
        all_pass = float(passed.all(axis=1).sum()) / n
        for k, ok in zip((i for i, m in enumerate(mols) if m is not None), passed.all(axis=1).tolist()):
            passed_all[k] = bool(ok)
    return {"config": config, "num_molecules": n, "num_missing": n - len(present), "checks": checks, "all_pass": all_pass,
            "all_pass_of_present": all_pass * n / len(present) if present else None, "passed": passed_all}
