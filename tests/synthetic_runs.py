"""Finished run folders written by hand, following the records contract (for summary/report tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = {"delrec": "DELRec", "teacher": "SASRec", "gru4rec": "GRU4Rec"}


def write_run(path: Path, seed: int, users: int = 120, delrec_gain: int = 0, order: dict | None = None) -> Path:
    """A run folder with ``records.parquet``, ``records.json``, ``result.json``, ``config.json``.

    Users and their activity/targets are the same for every seed; ranks vary with ``seed``;
    ``delrec_gain`` lowers DELRec's ranks (a planted improvement over the teacher).
    """
    path.mkdir(parents=True)
    fixed = np.random.default_rng(0)
    rng = np.random.default_rng(seed)
    teacher = rng.integers(1, 21, size=users)
    frame = pd.DataFrame({
        "user": [f"u{i}" for i in range(users)],
        "n_train": fixed.integers(5, 400, size=users),
        "n_shown": np.full(users, 10),
        "target": [f"i{i}" for i in range(users)],
        "target_train_count": fixed.integers(0, 300, size=users),
        "candidates": [[f"i{i}", "x", "y"] for i in range(users)],
        "rank.delrec": np.maximum(teacher - delrec_gain, 1),
        "rank.teacher": teacher,
        "rank.gru4rec": rng.integers(1, 21, size=users),
    })
    for key in MODELS:
        frame[f"top1.{key}"] = "i0"
    frame.to_parquet(path / "records.parquet")
    meta = {"models": MODELS, "mode": "uni19", "n_candidates": 20, "seed": seed, "dataset": "ml-100k",
            "topk": [1, 5], "metrics": ["Hit", "NDCG", "MRR"]}
    (path / "records.json").write_text(json.dumps(meta))
    result = {"run_dir": str(path), "records": str(path / "records.parquet"), "test_result": {}, "teacher_test_result": {},
              "stage1_result": {}, "loss_history": [], "valid_history": [],
              "timings": {"test_seconds": 1.2, "teacher_test_seconds": 0.1},
              "row_keys": {"delrec": "DELRec", "teacher": "SASRec (teacher)", "gru4rec": "GRU4Rec"},
              "cost": {"DELRec": {"test_ms_per_user": 10.0, "trained_parameters": 691156,
                                  "peak_memory_mb_per_stage": {"stage2": 1536.0}},
                       "SASRec (teacher)": {"test_ms_per_user": 0.5, "trained_parameters": 209088,
                                            "peak_memory_mb_per_stage": {}},
                       "GRU4Rec": {"test_ms_per_user": 0.4, "trained_parameters": 1000, "peak_memory_mb_per_stage": {}}}}
    (path / "result.json").write_text(json.dumps(result))
    (path / "config.json").write_text(json.dumps({"final": {"cold_item_max": 10}, "external": {}}))
    (path / "best.pth").write_bytes(b"")
    if order is not None:
        (path / "order.json").write_text(json.dumps(order))
    return path
