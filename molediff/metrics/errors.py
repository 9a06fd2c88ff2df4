"""The one error type of the metrics: a metric that cannot be computed here."""

from __future__ import annotations

__all__ = ["MetricUnavailable"]


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed here (an optional package is missing, too few molecules, ...); the
    message says why. :func:`molediff.metrics.moses.moses_metrics` and
    :func:`molediff.metrics.druglike.evaluate_druglike` turn it into ``None`` plus a note."""
