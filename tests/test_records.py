"""Per-user records: every model's rank and top-1, reproducing the printed metrics exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recbole_delrec import run_delrec
from recbole_delrec.config import hidden_command_line
from recbole_delrec.evaluation.records import load_records, metrics_from_records, training_counts
from tests.conftest import tiny_dict

SPLIT = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user"}
TINY_GRU = {"GRU4Rec": {"embedding_size": 32, "hidden_size": 32}}
ROWS = {"teacher": "SASRec (teacher)", "gru4rec": "GRU4Rec", "delrec": "DELRec"}


def _run(saved: Path, mode: str, **overrides) -> dict:
    values = tiny_dict(saved, eval_args={**SPLIT, "mode": mode}, baselines=["GRU4Rec"], baseline_config=TINY_GRU, **overrides)
    with hidden_command_line():
        return run_delrec(config_dict=values)


@pytest.fixture(scope="module")
def sampled_run(saved_dir) -> dict:
    return _run(saved_dir, "uni9")


@pytest.fixture(scope="module")
def full_run(saved_dir) -> dict:
    return _run(saved_dir, "full", topk=[1, 10, 100], valid_metric="NDCG@10")


@pytest.mark.parametrize("run", ["sampled_run", "full_run"])
def test_records_reproduce_the_printed_metrics_of_every_model(run, request):
    result = request.getfixturevalue(run)
    frame, meta = load_records(result["run_dir"])
    assert meta["models"] == {"teacher": "SASRec", "gru4rec": "GRU4Rec", "delrec": "DELRec"}
    assert list(result["rows"]) == list(ROWS.values())  # teacher, baselines, DELRec
    for key, row in ROWS.items():
        assert metrics_from_records(frame, key, meta["topk"]) == result["rows"][row], key
    assert result["rows"]["DELRec"] == result["test_result"]
    assert result["rows"]["SASRec (teacher)"] == result["teacher_test_result"]
    assert len(frame) == result["test_users"] and frame["user"].is_unique


def test_records_follow_the_contract_in_sampled_mode(sampled_run):
    frame, meta = load_records(sampled_run["run_dir"])
    assert {"mode": "uni9", "n_candidates": 10, "dataset": "ml-100k", "seed": 7, "topk": [1, 5]}.items() <= meta.items()
    assert list(frame.columns[:6]) == ["user", "n_train", "n_shown", "target", "target_train_count", "candidates"]
    assert all(isinstance(v, str) for v in [*frame["user"], *frame["target"], *frame["top1.delrec"]])
    for column in ("n_train", "n_shown", "target_train_count", "rank.delrec", "rank.teacher", "rank.gru4rec"):
        assert frame[column].dtype == np.int64, column
    assert all(len(c) == 10 and t in c for t, c in zip(frame["target"], frame["candidates"]))  # uni9: 10 candidates
    for key in ROWS:
        assert frame[f"rank.{key}"].between(1, 10).all()
        assert all(top in c for top, c in zip(frame[f"top1.{key}"], frame["candidates"]))
        assert ((frame[f"rank.{key}"] == 1) == (frame[f"top1.{key}"] == frame["target"])).all()
    assert (frame["n_shown"] == 4).all()  # history_length, nothing cut at 512 tokens
    assert (frame["n_train"] >= 300 - 2).all() and (frame["target_train_count"] >= 0).all()


def test_full_ranking_records_rank_over_the_catalogue(full_run):
    frame, meta = load_records(full_run["run_dir"])
    assert meta["mode"] == "full" and meta["n_candidates"] == 20  # rerank_k
    assert all(len(c) == 0 for c in frame["candidates"])
    assert frame["rank.teacher"].max() > 20  # the catalogue, not a candidate set
    assert not (Path(full_run["run_dir"]) / "candidates.parquet").exists()


def test_a_run_folder_holds_its_candidate_sets(sampled_run):
    sets = pd.read_parquet(Path(sampled_run["run_dir"]) / "candidates.parquet")
    frame, _ = load_records(sampled_run["run_dir"])
    assert set(sets["phase"]) == {"valid", "test"}
    test = sets[sets["phase"] == "test"].set_index("user")
    assert [list(test.loc[u, "candidates"]) for u in frame["user"]] == list(frame["candidates"])


def test_another_run_scores_exactly_the_saved_sets(sampled_run):
    """Another seed draws other sets; with candidates_path it scores the saved ones."""
    run_dir = Path(sampled_run["run_dir"])
    own = {name: (run_dir / name).read_bytes() for name in ("candidates.parquet", "records.parquet", "result.json")}
    values = {"seed": 8, "baselines": [], "baseline_config": {}}  # the teacher and DELRec come from the folder
    with hidden_command_line():
        again = run_delrec(load=str(run_dir), config_dict={**values, "candidates_path": str(run_dir)})
        other = run_delrec(load=str(run_dir), config_dict=values)
    for row in ("SASRec (teacher)", "DELRec"):
        assert again["rows"][row] == sampled_run["rows"][row]
        assert other["rows"][row] != sampled_run["rows"][row]
    saved = load_records(run_dir)[0]["candidates"].tolist()
    assert load_records(again["run_dir"])[0]["candidates"].tolist() == saved
    assert load_records(other["run_dir"])[0]["candidates"].tolist() != saved
    # each load wrote its own evaluation folder inside the run; the run's own files are untouched
    assert {Path(r["run_dir"]).parent for r in (again, other)} == {run_dir / "evaluations"}
    assert again["run_dir"] != other["run_dir"]
    assert all((run_dir / name).read_bytes() == data for name, data in own.items())


def test_result_json_has_rows_and_cost_per_model(sampled_run):
    saved = json.loads((Path(sampled_run["run_dir"]) / "result.json").read_text())
    assert set(saved["rows"]) == set(saved["cost"]) == set(ROWS.values())
    delrec, teacher = saved["cost"]["DELRec"], saved["cost"]["SASRec (teacher)"]
    assert set(delrec["train_seconds"]) == {"stage1", "stage2"} and set(teacher["train_seconds"]) == {"teacher"}
    assert 0 < delrec["trained_parameters"] < teacher["trained_parameters"] * 10
    assert all(c["test_ms_per_user"] > 0 and c["peak_memory_mb"] > 0 for c in saved["cost"].values())
    assert set(delrec["heap_give_backs_per_stage"]) == set(delrec["peak_memory_mb_per_stage"]) == {"stage1", "stage2",
                                                                                                   "test.delrec"}


def test_a_folder_without_records_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"'{tmp_path}' is not a finished run folder with records"):
        load_records(tmp_path)


def test_training_counts_are_the_training_splits_interactions(tiny_data):
    """Every user's interactions but the valid and test ones; items count the same interactions."""
    config, train, _, test = tiny_data
    per_user, per_item = training_counts(train._dataset)
    inter = pd.read_csv(Path(config["data_path"]) / "ml-100k.inter", sep="\t")
    totals = inter.iloc[:, 0].astype(str).value_counts()
    dataset = test._dataset
    users = dataset.inter_feat[dataset.uid_field].numpy()
    tokens = dataset.id2token(dataset.uid_field, users)
    assert [int(per_user[u]) for u in users] == [int(totals[t]) - 2 for t in tokens]
    assert per_item.sum() == per_user.sum() and per_item[0] == 0
