"""benchmarks/titles.py: titles tokenised as a run does, and a length preference found where planted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.benchmark_scripts import load_script
from tests.conftest import tiny_dict


def seed_frame(seed: int, users: int = 60) -> tuple[pd.DataFrame, dict[str, int]]:
    """Users with 5 candidates of lengths 1..5 tokens in shuffled order; the target is a random
    candidate; ``longest`` always picks the longest title, ``fair`` always the target."""
    rng = np.random.default_rng(seed)
    lengths = {f"i{u}_{k}": k + 1 for u in range(users) for k in range(5)}
    candidates = [list(rng.permutation([f"i{u}_{k}" for k in range(5)])) for u in range(users)]
    target = [c[rng.integers(5)] for c in candidates]
    longest = [max(c, key=lengths.get) for c in candidates]
    frame = pd.DataFrame({"user": [f"u{u}" for u in range(users)], "candidates": candidates, "target": target,
                          "top1.longest": longest, "rank.longest": [1 if a == b else 2 for a, b in zip(longest, target)],
                          "top1.fair": target, "rank.fair": 1})
    return frame, lengths


def test_a_row_that_always_picks_the_longest_title_is_found():
    titles = load_script("titles")
    (first, lengths), (second, _) = seed_frame(0), seed_frame(0)
    figures = titles.summarise([first, second], lengths, {k: 1.0 for k in lengths})
    assert figures["longest.top1_length_percentile"] == 1.0
    assert figures["longest.top1_length_percentile.pvalue"] < 1e-6
    assert figures["fair.top1_length_percentile"] == figures["target.top1_length_percentile"]
    assert figures["fair.top1_length_percentile.pvalue"] == 1.0  # no difference at all: no test to pass
    assert sum(figures[f"by_length.{b}.users"] for b in titles.BUCKETS) == 60
    assert figures["by_length.long.fair.hit@1"] == 1.0
    assert figures["by_length.long.longest.hit@1"] > figures["by_length.short.longest.hit@1"] == 0.0
    assert figures["tokens.max"] == 5 and figures["tokens.mean"] == 3
    assert "by_length.long.delrec_vs_fair.hit@1.pvalue" not in figures  # no DELRec row: nothing to test


def test_delrec_is_tested_against_every_row_inside_each_length_tercile():
    titles = load_script("titles")
    frame, lengths = seed_frame(1)
    frame["top1.delrec"], frame["rank.delrec"] = frame["top1.fair"], frame["rank.fair"]
    figures = titles.summarise([frame], lengths, {k: 1.0 for k in lengths})
    long, short = "by_length.long.delrec_vs_longest.hit@1", "by_length.short.delrec_vs_longest.hit@1"
    assert figures[f"{short}.pvalue"] < 0.01 < figures[f"{long}.pvalue"]  # ``longest`` misses only short targets
    assert figures[f"{short}.pvalue_holm"] >= figures[f"{short}.pvalue"]


def test_titles_are_tokenised_as_the_run_scores_them(tiny_data, tiny_model, saved_dir):
    """The script's lengths are the scored titles of a real DELRec on the same data and LLM."""
    titles = load_script("titles")
    config, train, _, _ = tiny_data
    lengths, per_word = titles.title_lengths("ml-100k", tiny_dict(saved_dir))
    dataset = train._dataset
    tokens = dataset.field2id_token[dataset.iid_field]
    labels = tiny_model.scorer.labels
    budget = config["max_title_tokens"]
    for item in (1, 2, dataset.item_num // 2, dataset.item_num - 1):
        scored = int((labels[item] != -100).sum()) - 1  # the end token follows the title
        assert min(lengths[tokens[item]], budget) == scored
    assert len(lengths) == dataset.item_num - 1 and min(per_word.values()) > 0
    with pytest.raises(KeyError):
        lengths["[PAD]"]
