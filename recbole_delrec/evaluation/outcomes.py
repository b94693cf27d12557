"""Per-user outcomes from the rank of the target: the unit every statistic here is built on.

A metric name is RecBole's lower-cased ``<name>@<k>`` (``hit@1``, ``ndcg@5``, ``mrr@5``).  From
a 1-based rank ``r``: hit@k = r <= k; ndcg@k = 1/log2(r+1) if r <= k else 0; mrr@k = 1/r if
r <= k else 0 (one relevant item per user, RecBole's definitions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KINDS = ("hit", "ndcg", "mrr")


def parse_metric(metric: str) -> tuple[str, int]:
    """``"ndcg@5"`` -> ``("ndcg", 5)``; a clear error for anything else."""
    name, _, k = metric.lower().partition("@")
    if name not in KINDS or not k.isdigit() or int(k) < 1:
        raise ValueError(f"Metric '{metric}' is not one of {KINDS} at a cut-off, e.g. 'hit@1' or 'ndcg@5'.")
    return name, int(k)


def outcome(ranks: np.ndarray | pd.Series, metric: str) -> np.ndarray:
    """Each user's value of ``metric`` given the 1-based rank of their target."""
    name, k = parse_metric(metric)
    r = np.asarray(ranks, dtype=float)
    inside = r <= k
    if name == "hit":
        return inside.astype(float)
    if name == "ndcg":
        return np.where(inside, 1.0 / np.log2(r + 1.0), 0.0)
    return np.where(inside, 1.0 / r, 0.0)


def metric_names(metrics: list[str], topk: list[int]) -> list[str]:
    """RecBole's ``metrics`` x ``topk`` as lower-cased names, those this module can compute."""
    return [f"{m.lower()}@{k}" for m in metrics if m.lower() in KINDS for k in topk]


def distinct_metrics(metrics: list[str]) -> list[str]:
    """``metrics`` without repeats of one per-user outcome: at k = 1, Hit, NDCG and MRR are all
    1 when the target is first and 0 otherwise, so only the first of them is kept (a picture
    or a family of tests counts each outcome once)."""
    at_one = [m for m in metrics if parse_metric(m)[1] == 1]
    return [m for m in metrics if parse_metric(m)[1] > 1 or m == at_one[0]]


def model_keys(frame: pd.DataFrame) -> list[str]:
    """The model keys of a records frame (its ``rank.<key>`` columns), DELRec first."""
    keys = [c.split(".", 1)[1] for c in frame.columns if c.startswith("rank.")]
    return sorted(keys, key=lambda k: (k != "delrec", k != "teacher", k))
