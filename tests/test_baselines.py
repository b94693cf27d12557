"""Baselines: RecBole sequential models trained like the teacher, cached, scored on DELRec's candidates."""

from __future__ import annotations

import logging

import pytest
import torch

from recbole_delrec import run_delrec
from recbole_delrec.config import hidden_command_line
from recbole_delrec.delrec.trainer import DELRecTrainer
from recbole_delrec.evaluation.baselines import baseline_settings, load_or_train_baseline
from tests.conftest import TINY_TEACHER, tiny_dict

TINY_GRU = {"embedding_size": 32, "hidden_size": 32}


@pytest.fixture
def gru_config(tiny_data, tmp_path):
    """The tiny configuration with a GRU4Rec baseline and an empty checkpoint folder."""
    config = tiny_data[0]
    saved = {k: config[k] for k in ("baselines", "baseline_config", "checkpoint_dir")}
    config["baselines"], config["baseline_config"], config["checkpoint_dir"] = ["GRU4Rec"], {"GRU4Rec": TINY_GRU}, str(tmp_path)
    yield config
    for key, value in saved.items():
        config[key] = value


def test_a_baseline_is_trained_once_then_reused(gru_config, tiny_data, tmp_path, caplog):
    _, train, valid, _ = tiny_data
    assert baseline_settings(gru_config, "GRU4Rec") == {**TINY_TEACHER, **TINY_GRU}  # merged over teacher_config
    first = load_or_train_baseline(gru_config, "GRU4Rec", train, valid)
    cached = list(tmp_path.glob("teacher-ml-100k-GRU4Rec-*.pth"))
    assert len(cached) == 1 and type(first).__name__ == "GRU4Rec" and first.hidden_size == 32
    written = cached[0].stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        again = load_or_train_baseline(gru_config, "GRU4Rec", train, valid)
    assert f"reusing {cached[0]}" in caplog.text
    assert cached[0].stat().st_mtime_ns == written
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_a_baseline_is_scored_on_delrecs_candidates(gru_config, tiny_data, tiny_model):
    config, train, valid, test = tiny_data
    baseline = load_or_train_baseline(gru_config, "GRU4Rec", train, valid)
    trainer = DELRecTrainer(config, tiny_model)
    delrec, gru = trainer.score(tiny_model, test), trainer.score(baseline, test)
    assert [c.tolist() for c in gru.candidates] == [c.tolist() for c in delrec.candidates]
    assert len(gru.candidates) == len(test._dataset) and all(len(c) == 20 for c in gru.candidates)
    assert gru.users.tolist() == delrec.users.tolist() and gru.result.keys() == delrec.result.keys()
    assert ((gru.ranks >= 1) & (gru.ranks <= 20)).all()
    assert all(top in c for top, c in zip(gru.top1.tolist(), gru.candidates))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"baselines": ["GRU4Rec", "NoSuchRec"]}, r"baselines: 'NoSuchRec' is not a RecBole sequential model"),
        ({"baselines": ["GRU4Rec", "GRU4Rec"]}, r"baselines lists \['GRU4Rec'\] more than once"),
        ({"baselines": ["GRU4Rec"], "baseline_config": {"Caser": {"epochs": 1}}}, r"baseline_config has settings for \['Caser'\]"),
    ],
)
def test_bad_baselines_stop_before_anything_trains(tmp_path, override, message):
    with hidden_command_line(), pytest.raises(ValueError, match=message):
        run_delrec(config_dict=tiny_dict(tmp_path, **override))
    assert not list(tmp_path.glob("teacher-*.pth")) and not list(tmp_path.glob("DELRec-*"))


def test_popularity_row_and_a_zero_shot_llm_score_on_the_same_candidates(tmp_path):
    """``baselines: [Pop]`` ranks candidates by training counts; ``epochs: 0`` evaluates the
    LLM untrained (no stage 2), both beside the teacher on the run's candidate sets."""
    from recbole_delrec import run_delrec
    from recbole_delrec.config import hidden_command_line
    from tests.conftest import tiny_dict

    values = tiny_dict(tmp_path, baselines=["Pop"], epochs=0, n_soft_tokens=0, delrec_tasks=[])
    with hidden_command_line():
        result = run_delrec(config_dict=values)
    assert result["loss_history"] == [] and {"pop", "delrec"} <= set(result["row_keys"])
    records = __import__("pandas").read_parquet(result["records"])
    n_candidates = len(records["candidates"][0])
    assert records["rank.pop"].between(1, n_candidates).all() and (records["rank.pop"] == 1).any()
    assert (records["rank.delrec"] >= 1).all()


def test_popularity_scores_are_the_training_counts(tiny_data):
    from recbole_delrec.evaluation.popularity import Popularity
    from recbole_delrec.evaluation.records import training_counts

    config, train, _, _ = tiny_data
    model = Popularity(config, train._dataset)
    rows = train._dataset.inter_feat[torch.arange(8)]
    counts = training_counts(train._dataset)[1]
    assert model.predict(rows).tolist() == counts[rows[model.POS_ITEM_ID].numpy()].tolist()
    full = model.full_sort_predict(rows)
    assert full.shape == (8, train._dataset.item_num) and torch.equal(full[3], torch.as_tensor(counts, dtype=torch.float32))
    full[:, 0] = -1  # RecBole's full-sort evaluation writes into the scores (it masks padding and history)
    assert model.counts[0] == counts[0]
