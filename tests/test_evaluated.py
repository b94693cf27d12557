"""``eval_max_users``: the validation and test splits keep a sample of users, the same for every
seed, and the whole run (teacher, DELRec, records) is scored on it.

A generated data set of 40 users (``tests/generated.py``), the tiny models of ``tests/conftest.py``.
"""

from __future__ import annotations

import logging

import pandas as pd

from recbole_delrec import run_delrec
from recbole_delrec.config import hidden_command_line, isolated_config
from recbole_delrec.runs.startup import prepare_data
from tests.conftest import tiny_dict
from tests.generated import LOAD_COL, histories, titles, write_atomic


def _values(tmp_path, **overrides) -> dict:
    write_atomic(tmp_path, "many", histories(40, 10, 60), titles(60, (2, 5)))
    return tiny_dict(tmp_path / "saved", data_path=str(tmp_path), load_col=LOAD_COL, domain="products",
                     user_inter_num_interval="[1,inf)", **overrides)


def _users(split) -> set[int]:
    dataset = split._dataset
    return set(dataset.inter_feat[dataset.uid_field].tolist())


def test_valid_and_test_keep_the_same_sample_for_every_seed(tmp_path, caplog):
    samples = []
    for seed in (2020, 2021):
        with caplog.at_level(logging.WARNING):
            train, valid, test = prepare_data(isolated_config("DELRec", "many", _values(tmp_path, eval_max_users=12,
                                                                                        seed=seed)))
        assert len(_users(test)) == 12 and _users(valid) == _users(test)
        assert len(_users(train)) == 40  # training is untouched
        samples.append(_users(test))
    assert samples[0] == samples[1]
    assert "Evaluation: 12 of 40 users are validated and tested (eval_max_users: 12" in caplog.text


def test_no_cap_or_a_larger_one_evaluates_everyone(tmp_path):
    for cap in (None, 40):
        _, valid, test = prepare_data(isolated_config("DELRec", "many", _values(tmp_path, eval_max_users=cap)))
        assert len(_users(test)) == 40 and len(_users(valid)) == 40


def test_a_run_scores_and_records_only_the_sample(tmp_path):
    with hidden_command_line():
        result = run_delrec(dataset="many", config_dict=_values(tmp_path, eval_max_users=12))
    records = pd.read_parquet(result["records"])
    assert result["test_users"] == 12 and records["user"].nunique() == 12
