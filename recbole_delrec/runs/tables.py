"""Metric tables the way RecBole users compare models: one row per model."""

from __future__ import annotations

from collections.abc import Mapping

from tabulate import tabulate


def side_by_side(rows: Mapping[str, Mapping[str, float]], formats: Mapping[str, str] | None = None) -> str:
    """A metric table, one row per model, the metrics of the first row as columns.

    Metrics print with four decimals; ``formats`` gives other columns their own (cost columns).
    """
    metrics = list(next(iter(rows.values())))
    return tabulate(
        [[name] + [values[m] for m in metrics] for name, values in rows.items()],
        headers=["model"] + metrics, floatfmt=["", *[(formats or {}).get(m, ".4f") for m in metrics]],
    )
