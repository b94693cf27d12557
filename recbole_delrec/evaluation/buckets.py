"""Breakdowns of test users: by their activity and by their target item's popularity.

* Activity: the user's training interactions (``n_train``), cut at ``activity_edges``
  (interior cut points; bucket ``user_i`` holds ``edge[i-1] < n_train <= edge[i]``).  Default:
  the quartiles of the test users' ``n_train``, so each bucket holds about a quarter of them.
* Popularity: the target's training interactions (``target_train_count``).  ``item_cold``
  holds targets seen at most ``cold_item_max`` times (never seen included); the rest are cut
  at ``popularity_edges = [tail_max, torso_max]`` into ``item_tail``, ``item_torso`` and
  ``item_head``.  Default: the terciles of the non-cold targets' counts, so the three buckets
  hold similar numbers of users and their intervals are comparably tight.

Every user falls in exactly one bucket of each kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recbole_delrec.evaluation.outcomes import outcome
from recbole_delrec.evaluation.stats import interval

POPULARITY = ("item_tail", "item_torso", "item_head")


@dataclass(frozen=True)
class Buckets:
    """One way of cutting the users: bucket names in order, their ranges, each user's bucket."""

    kind: str
    names: list[str]
    ranges: dict[str, str]
    labels: np.ndarray  # one bucket name per user (row of the records frame)
    edges: list[float]


def check_edges(edges: Sequence[float], option: str) -> list[float]:
    """``edges`` as a list of numbers, strictly increasing, or an error naming ``option``."""
    values = list(edges)
    if not values or not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in values):
        raise ValueError(f"`{option}` must be a non-empty list of numbers; found {values!r}. Example: [20, 50, 150].")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"`{option}` must be strictly increasing; found {values!r}. Sort it and drop repeats.")
    return values


def _cut(values: np.ndarray, edges: list[float], names: list[str]) -> tuple[np.ndarray, dict[str, str]]:
    """Bucket ``i`` = ``edges[i-1] < value <= edges[i]`` (first: ``<= edges[0]``, last: ``> edges[-1]``)."""
    index = np.searchsorted(np.asarray(edges, dtype=float), values, side="left")
    bounds = [None, *edges, None]
    ranges = {}
    for i, name in enumerate(names):
        low, high = bounds[i], bounds[i + 1]
        ranges[name] = f"<= {high:g}" if low is None else f"> {low:g}" if high is None else f"({low:g}, {high:g}]"
    return np.asarray(names, dtype=object)[index], ranges


def _quantile_edges(values: np.ndarray, quantiles: Sequence[float]) -> list[float]:
    """Whole-number quantile cut points, repeats dropped (small or tied data)."""
    if values.size == 0:
        return []
    return [float(e) for e in np.unique(np.floor(np.quantile(values, quantiles)))]


def activity_buckets(n_train: np.ndarray, edges: Sequence[float] | None = None) -> Buckets:
    """Users by training interactions; ``edges`` None = quartiles of ``n_train``."""
    n_train = np.asarray(n_train, dtype=float)
    cuts = _quantile_edges(n_train, (0.25, 0.5, 0.75)) if edges is None else check_edges(edges, "activity_edges")
    names = [f"user_{i + 1}" for i in range(len(cuts) + 1)]
    labels, ranges = _cut(n_train, cuts, names)
    return Buckets("activity", names, ranges, labels, cuts)


def check_options(options: Mapping) -> None:
    """The evidence settings (``activity_edges``, ``cold_item_max``, ``popularity_edges``) can
    cut users: checked at start-up, so that a seeded run does not fail in its summary after
    every seed has trained."""
    if options.get("activity_edges") is not None:
        check_edges(options["activity_edges"], "activity_edges")
    _popularity_cuts(options.get("cold_item_max", 10), options.get("popularity_edges"))


def _popularity_cuts(cold_item_max: int, edges: Sequence[float] | None) -> list[float] | None:
    """``popularity_edges`` as two cut points above ``cold_item_max`` (None: unset), or an
    error naming the setting."""
    if isinstance(cold_item_max, bool) or not isinstance(cold_item_max, (int, np.integer)) or cold_item_max < 0:
        raise ValueError(f"`cold_item_max` must be an integer >= 0; found {cold_item_max!r}.")
    if edges is None:
        return None
    cuts = check_edges(edges, "popularity_edges")
    if len(cuts) != 2 or cuts[0] <= cold_item_max:
        raise ValueError(
            f"`popularity_edges` must be two cut points [tail_max, torso_max] above cold_item_max="
            f"{cold_item_max}; found {cuts!r}. Example: [{cold_item_max + 40}, {cold_item_max + 150}]."
        )
    return cuts


def popularity_buckets(counts: np.ndarray, cold_item_max: int, edges: Sequence[float] | None = None) -> Buckets:
    """Users by their target's training count: cold, then tail / torso / head."""
    cuts = _popularity_cuts(cold_item_max, edges)
    counts = np.asarray(counts, dtype=float)
    warm = counts > cold_item_max
    if cuts is None:  # terciles of the warm targets, kept above the cold bucket and increasing
        tail_max, torso_max = (np.floor(np.quantile(counts[warm], (1 / 3, 2 / 3))) if warm.any()
                               else (cold_item_max + 1, cold_item_max + 2))
        tail_max = max(float(tail_max), cold_item_max + 1.0)
        cuts = [tail_max, max(float(torso_max), tail_max + 1)]
    labels, ranges = _cut(counts, cuts, list(POPULARITY))
    labels[~warm] = "item_cold"
    ranges = {"item_cold": f"<= {cold_item_max}", "item_tail": f"({cold_item_max}, {cuts[0]:g}]",
              **{k: v for k, v in ranges.items() if k != "item_tail"}}
    return Buckets("popularity", ["item_cold", *POPULARITY], ranges, labels, [float(cold_item_max), *cuts])


def user_buckets(frame: pd.DataFrame, options: Mapping) -> list[Buckets]:
    """Both breakdowns of a records frame, with the evidence options (``activity_edges``, ...)."""
    return [
        activity_buckets(frame["n_train"].to_numpy(), options.get("activity_edges")),
        popularity_buckets(frame["target_train_count"].to_numpy(), options.get("cold_item_max", 10),
                           options.get("popularity_edges")),
    ]


def bucket_table(frames: list[pd.DataFrame], buckets: Buckets, models: list[str], metrics: list[str],
                 seed: int = 0) -> list[dict]:
    """Per bucket: its users and every model's metrics with a 95% interval.

    The interval is the summary's (:func:`~recbole_delrec.evaluation.stats.interval`) over the
    bucket's users.  ``frames`` hold the same users in the same row order as ``buckets.labels``.
    """
    rows = []
    for name in buckets.names:
        members = buckets.labels == name
        row = {"name": name, "range": buckets.ranges[name], "users": int(members.sum()), "models": {}}
        for model in models:
            row["models"][model] = {
                metric: _bucket_interval([outcome(f[f"rank.{model}"].to_numpy()[members], metric) for f in frames], seed)
                for metric in metrics
            }
        rows.append(row)
    return rows


def _bucket_interval(per_seed: list[np.ndarray], seed: int) -> dict:
    """:func:`interval` of a bucket's metric, or None figures when the bucket is empty."""
    if per_seed[0].size == 0:
        return {"mean": None, "low": None, "high": None, "interval": "empty bucket"}
    return interval(per_seed, seed)
