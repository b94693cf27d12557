"""Which training prefixes stage 2 learns from.

RecBole's augmentation turns every interaction into a training prefix (97,171 on
ML-100K); an LLM step per prefix is far beyond a CPU budget.  Each user's most recent
prefixes are the closest to what is evaluated (the next item after the whole history), so
``train_prefixes_per_user`` keeps that many per user (``~``: keep all), and
``train_max_prefixes`` at most that many of those (a seeded sample: a fixed CPU budget for a
real LLM, whatever the catalogue's size).
"""

from __future__ import annotations

import numpy as np
from recbole.data.dataset import Dataset


def latest_prefix_rows(dataset: Dataset, per_user: int | None, cap: int | None = None, seed: int = 0) -> np.ndarray:
    """Row indices of each user's ``per_user`` latest prefixes (all rows when ``None``), at most
    ``cap`` of them (a sample seeded by ``seed``)."""
    rows = _latest(dataset, per_user)
    if cap and len(rows) > cap:
        rows = np.sort(np.random.default_rng(seed).choice(rows, cap, replace=False))
    return rows


def _latest(dataset: Dataset, per_user: int | None) -> np.ndarray:
    feat = dataset.inter_feat
    if not per_user:
        return np.arange(len(feat))
    users = feat[dataset.uid_field].numpy()
    times = feat[dataset.time_field].numpy() if dataset.time_field in feat else np.arange(len(feat))
    order = np.lexsort((np.arange(len(feat)), times, users))
    sorted_users = users[order]
    # position from the end within each user's run of rows
    run_end = np.r_[np.nonzero(np.diff(sorted_users))[0], len(order) - 1]
    ends = np.repeat(run_end, np.diff(np.r_[-1, run_end]))
    keep = (ends - np.arange(len(order))) < per_user
    return np.sort(order[keep])


def stage2_rows(dataset: Dataset, config) -> np.ndarray:
    """The training rows stage 2 learns from (``train_prefixes_per_user``, ``train_max_prefixes``)."""
    return latest_prefix_rows(dataset, config["train_prefixes_per_user"], config["train_max_prefixes"], config["seed"])


def stage2_prefixes(dataset: Dataset, config) -> Dataset:
    """A copy of ``dataset`` with only :func:`stage2_rows`."""
    if not config["train_prefixes_per_user"] and not config["train_max_prefixes"]:
        return dataset
    return dataset.copy(dataset.inter_feat[stage2_rows(dataset, config)])
