"""Per-user test records of a finished run (``records.parquet`` + ``records.json``).

Minimal reader of the records contract: one row per test user with ``user``, ``n_train``,
``n_shown``, ``target``, ``target_train_count``, ``candidates`` and per model key ``m``
``rank.<m>`` (1-based rank of the target) and ``top1.<m>``; the sidecar names the models, the
mode, ``n_candidates``, ``seed``, ``dataset``, ``topk`` and ``metrics``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from recbole_delrec.evaluation.outcomes import outcome

RECORDS = "records.parquet"
META = "records.json"
RESULT = "result.json"


def load_records(run_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The per-user frame and its sidecar; a clear error if ``run_dir`` is not a finished run."""
    run_dir = Path(run_dir)
    missing = [name for name in (RECORDS, META, RESULT) if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"'{run_dir}' is not a finished run folder: {', '.join(missing)} missing. Give the folder a "
            f"finished `run_delrec` printed as 'run folder' (it writes {RECORDS}, {META} and {RESULT})."
        )
    frame = pd.read_parquet(run_dir / RECORDS)
    meta = json.loads((run_dir / META).read_text(encoding="utf-8"))
    return frame, meta


def metrics_from_records(frame: pd.DataFrame, model_key: str, topk: list[int]) -> dict[str, float]:
    """RecBole's hit/ndcg/mrr at each ``topk`` for one model, from its per-user ranks."""
    ranks = frame[f"rank.{model_key}"].to_numpy()
    return {f"{name}@{k}": float(outcome(ranks, f"{name}@{k}").mean()) for name in ("hit", "ndcg", "mrr") for k in topk}
