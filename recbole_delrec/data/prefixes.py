"""Which training prefixes stage 2 learns from.

RecBole's augmentation turns every interaction into a training prefix (97,171 on
ML-100K); an LLM step per prefix is far beyond a CPU budget.  Each user's most recent
prefixes are the closest to what is evaluated (the next item after the whole history), so
``train_prefixes_per_user`` keeps that many per user (``~``: keep all).
"""

from __future__ import annotations

import numpy as np
from recbole.data.dataset import Dataset


def latest_prefix_rows(dataset: Dataset, per_user: int | None) -> np.ndarray:
    """Row indices of each user's ``per_user`` latest prefixes (all rows when ``None``)."""
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


def latest_prefixes(dataset: Dataset, per_user: int | None) -> Dataset:
    """A copy of ``dataset`` with only each user's latest ``per_user`` prefixes."""
    if not per_user:
        return dataset
    return dataset.copy(dataset.inter_feat[latest_prefix_rows(dataset, per_user)])
