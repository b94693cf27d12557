"""Metric tables the way RecBole users compare models: one row per model."""

from __future__ import annotations

from collections.abc import Mapping

from tabulate import tabulate


def side_by_side(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A metric table, one row per model, the metrics of the first row as columns."""
    metrics = list(next(iter(rows.values())))
    return tabulate(
        [[name] + [values[m] for m in metrics] for name, values in rows.items()],
        headers=["model"] + metrics, floatfmt=".4f",
    )
