"""Evaluation candidates: one owner (eval_args.mode), saved sets, re-scored identically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from recbole_delrec import run_delrec
from recbole_delrec.config import hidden_command_line, isolated_config
from recbole_delrec.data.candidates import CandidateSets, candidates_per_prompt
from recbole_delrec.delrec.trainer import DELRecTrainer
from recbole_delrec.evaluation.scoring import score
from recbole_delrec.runs.startup import build
from tests.conftest import tiny_dict
from tests.generated import histories, titles, write_atomic

SPLIT = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user"}


def _settings(valid: str, test: str, n_candidates=None, rerank_k: int = 20) -> dict:
    """The keys candidates_per_prompt reads, as RecBole's Config holds them."""
    return {"eval_args": {**SPLIT, "mode": {"valid": valid, "test": test}}, "n_candidates": n_candidates,
            "rerank_k": rerank_k}


@pytest.mark.parametrize(
    ("valid", "test", "rerank_k", "expected"),
    [("uni9", "uni9", 20, 10), ("uni19", "uni19", 20, 20), ("uni99", "uni99", 20, 100),
     ("full", "full", 15, 15), ("uni19", "full", 20, 20)],
)
def test_the_mode_decides_how_many_candidates(valid, test, rerank_k, expected):
    assert candidates_per_prompt(_settings(valid, test, rerank_k=rerank_k)) == expected
    assert candidates_per_prompt(_settings(valid, test, expected, rerank_k)) == expected  # repeating it is fine


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (_settings("uni99", "uni99", n_candidates=20), r"n_candidates: 20 disagrees with eval_args.mode 'uni99'.*uni19"),
        (_settings("pop99", "pop99"), r"pop99.*popularity-sampled.*uniN"),
        (_settings("labeled", "labeled"), r"'labeled'.*uniN"),
        (_settings("uni9", "uni19"), r"10 candidates per prompt in validation \(uni9\) and 20 in test"),
    ],
)
def test_a_mode_delrec_cannot_honour_is_a_clear_error(settings, message):
    with pytest.raises(ValueError, match=message):
        candidates_per_prompt(settings)


def test_a_mismatch_stops_before_anything_trains(tmp_path):
    values = tiny_dict(tmp_path, n_candidates=20, eval_args={**SPLIT, "mode": "uni9"})
    with hidden_command_line(), pytest.raises(ValueError, match="n_candidates: 20 disagrees"):
        run_delrec(config_dict=values)
    assert not list(tmp_path.glob("teacher-*.pth")) and not list(tmp_path.glob("DELRec-*"))


@pytest.fixture
def drawn(tiny_model, tiny_data):
    """The tiny model's test candidate sets, drawn for every test user."""
    _, _, _, test = tiny_data
    sets = CandidateSets.drawn(tiny_model.sampler, tiny_model.prompt_order)
    sets.cover(test._dataset, "test")
    return sets


def test_sets_are_in_prompt_order_and_saved_sets_score_identically(tiny_model, tiny_data, drawn, tmp_path):
    config, _, _, test = tiny_data
    dataset = test._dataset
    user, (target, items) = next(iter(drawn.sets["test"].items()))
    row = tiny_model.sampler.candidates(torch.tensor([user]), torch.tensor([target]),
                                        dataset.inter_feat[dataset.item_id_list_field][dataset.inter_feat[dataset.uid_field] == user], "test")
    assert items.tolist() == tiny_model.prompt_order(row[0], user).tolist()  # what the prompt lists, in its order
    drawn.save(tmp_path / "candidates.parquet", dataset)
    frame = pd.read_parquet(tmp_path / "candidates.parquet")
    assert list(frame.columns) == ["phase", "user", "target", "candidates"]
    assert len(frame) == len(dataset) and all(len(c) == 20 for c in frame["candidates"])
    assert all(t in c for t, c in zip(frame["target"], frame["candidates"]))
    loaded = CandidateSets.load(tmp_path, dataset, candidates_per_prompt(config))  # a folder holding the file
    assert {u: s[1].tolist() for u, s in loaded.sets["test"].items()} == {u: s[1].tolist() for u, s in drawn.sets["test"].items()}

    trainer = DELRecTrainer(config, tiny_model)  # RecBole's collector and evaluator for this config
    scores = [score(tiny_model, test, sets, trainer.eval_collector, trainer.evaluator, config["topk"]) for sets in (drawn, loaded)]
    assert scores[0].result == scores[1].result
    assert scores[0].ranks.tolist() == scores[1].ranks.tolist()
    assert [c.tolist() for c in scores[0].candidates] == [c.tolist() for c in scores[1].candidates]


def test_a_saved_set_that_does_not_fit_the_data_is_a_clear_error(tiny_data, drawn, tmp_path):
    config, _, _, test = tiny_data
    dataset = test._dataset
    frame = drawn.frame(dataset)
    frame.at[0, "candidates"] = ["no-such-item"] + list(frame.loc[0, "candidates"])[1:]
    frame.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet.*item_id token\(s\) \['no-such-item'\]"):
        CandidateSets.load(tmp_path / "bad.parquet", dataset, 20)
    with pytest.raises(ValueError, match="lists 20 candidates.*asks for 10"):
        CandidateSets.load(tmp_path / "bad.parquet", dataset, 10)
    with pytest.raises(FileNotFoundError, match="candidates_path"):
        CandidateSets.load(tmp_path / "missing", dataset, 20)
    frame.iloc[1:].to_parquet(tmp_path / "part.parquet")  # the first user is not in it
    partial = CandidateSets.load(tmp_path / "part.parquet", dataset, 20)
    user = dataset.token2id(dataset.uid_field, frame.loc[0, "user"])
    first = dataset.inter_feat[dataset.inter_feat[dataset.uid_field] == user]
    with pytest.raises(ValueError, match="no test candidates for user id"):
        partial.rows("test", first[dataset.uid_field], first[dataset.iid_field], first[dataset.item_id_list_field])


def test_a_saved_file_is_parsed_once_for_the_check_and_the_evaluation(tiny_data, drawn, tmp_path):
    """The start-up's check parses ``candidates_path`` before the split and keeps it; every
    split shares that parse and the trainer evaluates on it, without reading the file again."""
    config, _, _, test = tiny_data
    drawn.save(tmp_path / "candidates.parquet", test._dataset)
    values = tiny_dict(Path(config["checkpoint_dir"]), candidates_path=str(tmp_path))
    with hidden_command_line():
        started = build(isolated_config("DELRec", "ml-100k", values))
    kept = started.test_data._dataset.saved_candidate_sets
    assert kept is started.train_data._dataset.saved_candidate_sets
    assert started.trainer.candidate_sets(started.test_data._dataset) is kept
    assert started.config["n_candidates"] == 20 and set(kept.sets) == {"test"}


def test_no_negative_reads_as_its_target(tmp_path):
    """A catalogue of tracks, twelve of them called 'Intro': a target from that group never
    meets another 'Intro' among its candidates (the LLM could tell them apart only by a tie-break)."""
    intro = {f"i{n}" for n in range(1, 13)}
    names = {**titles(40, (2, 4)), **{item: "Intro" for item in intro}}
    write_atomic(tmp_path, "tracks", histories(24, 6, 40), names)
    values = tiny_dict(tmp_path / "saved", data_path=str(tmp_path), user_inter_num_interval="[1,inf)")
    started = build(isolated_config("DELRec", "tracks", values))
    sets = CandidateSets.drawn(started.model.sampler, started.model.prompt_order)
    sets.cover(started.test_data._dataset, "test")
    tokens = started.test_data._dataset.id2token
    drawn = [(tokens("item_id", target), set(tokens("item_id", items))) for target, items in sets.sets["test"].values()]
    from_intro = [items for target, items in drawn if target in intro]
    assert len(from_intro) >= 4 and all(len(items & intro) == 1 for items in from_intro)
    assert any(len(items & intro) > 1 for target, items in drawn if target not in intro)  # others may list several
