"""Statistics against known values: identical outcomes, planted differences, hand-computed intervals."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from recbole_delrec.evaluation.outcomes import distinct_metrics, outcome, parse_metric
from recbole_delrec.evaluation.stats import (ENUMERATED_WILCOXON, across_seeds, bootstrap_ci, holm, interval,
                                             paired_test, sign_test, wilcoxon_test)


def test_outcomes_from_ranks():
    ranks = np.array([1, 2, 5, 6])
    assert outcome(ranks, "hit@1").tolist() == [1, 0, 0, 0]
    assert outcome(ranks, "hit@5").tolist() == [1, 1, 1, 0]
    assert outcome(ranks, "ndcg@5") == pytest.approx([1, 1 / np.log2(3), 1 / np.log2(6), 0])
    assert outcome(ranks, "mrr@5") == pytest.approx([1, 0.5, 0.2, 0])
    with pytest.raises(ValueError, match="recall@5"):
        parse_metric("recall@5")


def test_t_interval_matches_a_hand_computation():
    spread = across_seeds([0.40, 0.42, 0.44])
    # mean 0.42, s = 0.02, t(0.975, 2) = 4.302653
    assert spread.mean == pytest.approx(0.42)
    assert spread.std == pytest.approx(0.02)
    assert spread.ci95 == pytest.approx(4.302653 * 0.02 / np.sqrt(3), rel=1e-6)
    one = across_seeds([0.5])
    assert one.ci95 is None and one.std == 0.0


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(1).random(500)
    low, high = bootstrap_ci(values, seed=3)
    assert (low, high) == bootstrap_ci(values, seed=3)
    assert low < values.mean() < high
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)  # the normal approximation
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)


def test_one_interval_rule_bootstrap_for_one_seed_t_for_several():
    users = [np.random.default_rng(s).random(300) for s in range(3)]
    one = interval(users[:1], seed=5)
    assert (one["low"], one["high"]) == bootstrap_ci(users[0], seed=5) and one["interval"] == "bootstrap over users"
    assert one["ci95"] == pytest.approx((one["high"] - one["low"]) / 2)
    several = interval(users, seed=5)
    t = across_seeds([u.mean() for u in users])
    assert several["interval"] == "Student t across seeds" and several["ci95"] == t.ci95
    assert (several["low"], several["high"]) == (t.mean - t.ci95, t.mean + t.ci95)


@pytest.mark.parametrize("metric", ["hit@1", "ndcg@5"])
def test_identical_outcomes_give_p_one_and_zero_difference(metric):
    ranks = np.random.default_rng(0).integers(1, 21, size=300)
    a = outcome(ranks, metric)
    result = paired_test(metric, a, a.copy())
    assert result.pvalue == 1.0 and result.difference == 0.0
    assert not result.significant and result.verdict.startswith("not significant at 0.05")


def test_planted_hit_difference_is_found_by_exact_mcnemar():
    rng = np.random.default_rng(0)
    b = (rng.random(400) < 0.3).astype(float)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:60]] = 1.0  # DELRec right on 60 more users, wrong on none fewer
    result = paired_test("hit@1", a, b)
    assert result.test.startswith("exact McNemar")
    assert result.difference == pytest.approx(60 / 400)
    assert result.pvalue == pytest.approx(2 * 0.5**60) and result.significant
    assert result.verdict.startswith("significant at 0.05")


def test_sign_test_counts_only_discordant_users():
    a = np.array([1, 1, 1, 0, 0, 1, 1])
    b = np.array([0, 0, 1, 1, 0, 1, 1])  # 2 wins, 1 loss, 4 ties
    assert sign_test(a, b).pvalue == pytest.approx(scipy_stats.binomtest(2, 3, 0.5).pvalue)


def test_planted_ndcg_difference_is_found_by_wilcoxon():
    rng = np.random.default_rng(2)
    ranks = rng.integers(1, 21, size=300)
    better = np.maximum(ranks - rng.integers(0, 4, size=300), 1)
    result = wilcoxon_test(outcome(better, "ndcg@5"), outcome(ranks, "ndcg@5"))
    assert result.difference > 0 and result.pvalue < 1e-6


def test_unpaired_lengths_are_refused():
    with pytest.raises(ValueError, match="one value per user"):
        paired_test("ndcg@5", np.zeros(3), np.zeros(4))


def test_holm_adjustment_matches_its_definition():
    # sorted 0.01, 0.03, 0.04 are scaled by 3, 2, 1 (0.03, 0.06, 0.04) and kept non-decreasing
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_distinct_metrics_count_the_at_one_outcome_once():
    assert distinct_metrics(["hit@1", "hit@5", "ndcg@1", "ndcg@5", "mrr@1", "mrr@5"]) == ["hit@1", "hit@5", "ndcg@5", "mrr@5"]
    assert distinct_metrics(["ndcg@1", "mrr@1", "mrr@10"]) == ["ndcg@1", "mrr@10"]


@pytest.mark.parametrize("seed", range(6))
def test_small_sample_wilcoxon_is_scipys_exact_answer(seed):
    """Up to 13 users the signed-rank p is enumerated: the same p scipy gives (exact, or its
    permutation test when outcomes tie or differences are zero), ties and zeros included."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, ENUMERATED_WILCOXON + 1))
    a, b = rng.choice([0.0, 0.5, 1.0, 1 / 3], n), rng.choice([0.0, 0.5, 1.0], n)
    if not np.any(a != b):
        a[0] = b[0] + 1
    ours = wilcoxon_test(a, b)
    theirs = scipy_stats.wilcoxon(a - b, zero_method="wilcox", alternative="two-sided")
    assert ours.pvalue == pytest.approx(min(float(theirs.pvalue), 1.0), rel=1e-9)
    assert ours.statistic == pytest.approx(float(theirs.statistic))
