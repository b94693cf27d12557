"""Per-user test records: what every analysis of a run reads instead of re-running a model.

``records.parquet`` in the run folder holds one row per test user:

* ``user`` (atomic-file token), ``n_train`` (the user's interactions in the training split),
  ``n_shown`` (history items DELRec's prompt showed), ``target`` (token),
  ``target_train_count`` (the target's interactions in the training split; 0 = never seen),
  ``candidates`` (tokens in prompt order; empty in ``full`` mode);
* per model key ``m`` (``delrec``, ``teacher``, each baseline's lower-cased name):
  ``rank.<m>`` (1-based rank of the target among the candidates, or over the catalogue in
  ``full`` mode) and ``top1.<m>`` (token of the model's best item).

``records.json`` beside it: ``models`` (key -> RecBole model name), ``mode``,
``n_candidates``, ``seed``, ``dataset``, ``topk``, ``metrics``.  Ranks come from the score
matrix RecBole's evaluator saw (:func:`recbole_delrec.evaluation.scoring.target_ranks`), and
:func:`metrics_from_records` computes RecBole's top-k metrics from them with the per-user
outcomes every statistic uses (:mod:`~recbole_delrec.evaluation.outcomes`), so they equal the
printed ones (tested).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from recbole.data.dataset import Dataset

from recbole_delrec import distributed
from recbole_delrec.data.fields import item_seq_field
from recbole_delrec.evaluation.outcomes import metric_names, outcome
from recbole_delrec.evaluation.scoring import Scored, user_rows
from recbole_delrec.runs.artifacts import atomic_write, save_json
from recbole_delrec.runs.folder import RunDirectory


def training_counts(train: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Interactions per user and per item in the training split (index: internal id).

    RecBole's sequential split keeps one row per training target; each user's first item is
    a target of no row, it opens the prefix of the user's first row (length 1).
    """
    feat = train.inter_feat
    users, targets = feat[train.uid_field].numpy(), feat[train.iid_field].numpy()
    first_rows = feat[train.item_list_length_field].numpy() == 1
    firsts = feat[item_seq_field(train)].numpy()[first_rows, 0]
    per_user = np.bincount(users, minlength=train.user_num) + np.bincount(users[first_rows], minlength=train.user_num)
    per_item = np.bincount(targets, minlength=train.item_num) + np.bincount(firsts, minlength=train.item_num)
    return per_user, per_item


def build_records(
    test: Dataset, train: Dataset, scored: Mapping[str, Scored], n_shown: Mapping[int, int], full: bool
) -> pd.DataFrame:
    """One row per test user from each model's outcomes (all scored on the same users)."""
    first = next(iter(scored.values()))
    per_user, per_item = training_counts(train)
    tokens = lambda field, ids: [str(t) for t in test.id2token(field, np.asarray(ids, dtype=np.int64))]  # noqa: E731
    frame = pd.DataFrame({
        "user": tokens(test.uid_field, first.users),
        "n_train": per_user[first.users].astype(np.int64),
        "n_shown": np.asarray([n_shown[u] for u in first.users.tolist()], dtype=np.int64),
        "target": tokens(test.iid_field, first.targets),
        "target_train_count": per_item[first.targets].astype(np.int64),
        "candidates": [[] for _ in first.users] if full else [tokens(test.iid_field, c) for c in first.candidates],
    })
    for key, outcome in scored.items():
        if not np.array_equal(outcome.users, first.users):
            raise RuntimeError(f"records: model '{key}' was scored on other users than the first model.")
        frame[f"rank.{key}"] = outcome.ranks.astype(np.int64)
        frame[f"top1.{key}"] = tokens(test.iid_field, outcome.top1)
    return frame


def save_records(run_dir: str | Path, frame: pd.DataFrame, meta: Mapping[str, Any]) -> Path:
    """``records.parquet`` and its ``records.json``, each written atomically."""
    run = RunDirectory(run_dir)
    atomic_write(run.records, lambda tmp: frame.to_parquet(tmp, index=False))
    save_json(dict(meta), run.records_meta)
    return run.records


def load_records(run_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A run's records and their description; a clear error if the folder has none."""
    run = RunDirectory(run_dir)
    files = run.records, run.records_meta
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(
            f"'{run_dir}' is not a finished run folder with records ({files[0].name} and {files[1].name}): "
            f"point at the run_dir of a run_delrec run that reached its test."
        )
    frame = pd.read_parquet(files[0])
    frame["candidates"] = [list(c) for c in frame["candidates"]]
    return frame, json.loads(files[1].read_text(encoding="utf-8"))


def _ranks(frame: pd.DataFrame, model_key: str) -> np.ndarray:
    column = f"rank.{model_key}"
    if column not in frame.columns:
        models = sorted(c[len("rank."):] for c in frame.columns if c.startswith("rank."))
        raise KeyError(f"records have no model '{model_key}': they hold {models}.")
    return frame[column].to_numpy(dtype=np.int64)


def metrics_from_records(
    frame: pd.DataFrame,
    model_key: str,
    topk: Sequence[int],
    metrics: Sequence[str] = ("hit", "ndcg", "mrr"),
    decimal_place: int | None = 4,
) -> dict[str, float]:
    """RecBole's metric dict (``"hit@1"``, ``"ndcg@5"``...) recomputed from the ranks: the mean
    of each user's outcome (:func:`~recbole_delrec.evaluation.outcomes.outcome`, RecBole's
    definitions for one true item per user).

    ``decimal_place`` is RecBole's ``metric_decimal_place`` (its printed values);
    ``None`` keeps full precision.
    """
    ranks = _ranks(frame, model_key)
    result = {}
    for name in metric_names(list(metrics), list(topk)):
        value = float(outcome(ranks, name).mean())
        result[name] = round(value, decimal_place) if decimal_place is not None else value
    return result


def prompt_history_lengths(model, eval_data, candidate_sets) -> dict[int, int]:
    """History items DELRec's prompt showed each user (``candidate_sets`` ``None``: full ranking),
    from every rank of a distributed run."""
    dataset = eval_data._dataset
    phase = eval_data._sampler.phase if eval_data._sampler is not None else "test"
    shown: dict[int, int] = {}
    for batch in eval_data:
        rows = user_rows(batch)[0]
        users = rows[dataset.uid_field]
        candidates = None if candidate_sets is None else candidate_sets.rows(
            phase, users, rows[dataset.iid_field], rows[item_seq_field(dataset)])
        shown.update(zip(users.tolist(), model.shown_history(rows.to(model.device), candidates)))
    return {user: n for part in distributed.gathered(shown) for user, n in part.items()}
