"""User breakdowns: exact partitions, documented defaults, clear errors, per-bucket intervals."""

import numpy as np
import pandas as pd
import pytest

from recbole_delrec.evaluation.buckets import activity_buckets, bucket_table, check_edges, popularity_buckets
from recbole_delrec.evaluation.stats import holm
from recbole_delrec.evaluation.summary import compare_runs, evidence_records, load_runs, summarise, summary_table
from tests.synthetic_runs import write_run


def test_activity_quartiles_partition_the_users_exactly():
    n_train = np.random.default_rng(0).integers(3, 500, size=1001)
    buckets = activity_buckets(n_train)
    assert buckets.names == ["user_1", "user_2", "user_3", "user_4"]
    counts = pd.Series(buckets.labels).value_counts()
    assert counts.sum() == 1001 and set(counts.index) <= set(buckets.names)
    assert all(abs(c - 1001 / 4) < 30 for c in counts)  # quartiles: about a quarter each
    for name, low_high in zip(buckets.names, zip([-np.inf, *buckets.edges], [*buckets.edges, np.inf])):
        inside = n_train[buckets.labels == name]
        assert (inside > low_high[0]).all() and (inside <= low_high[1]).all()


def test_configured_activity_edges():
    buckets = activity_buckets(np.array([1, 10, 11, 50, 51, 1000]), [10, 50])
    assert buckets.labels.tolist() == ["user_1", "user_1", "user_2", "user_2", "user_3", "user_3"]
    assert buckets.ranges == {"user_1": "<= 10", "user_2": "(10, 50]", "user_3": "> 50"}


def test_popularity_has_an_explicit_cold_bucket_and_partitions():
    counts = np.array([0, 0, 1, 3, 4, 20, 30, 100, 200, 400])
    buckets = popularity_buckets(counts, cold_item_max=3, edges=[25, 150])
    assert buckets.labels.tolist() == ["item_cold"] * 4 + ["item_tail"] * 2 + ["item_torso"] * 2 + ["item_head"] * 2
    default = popularity_buckets(np.random.default_rng(1).integers(0, 300, 999), cold_item_max=10)
    assert sorted(set(default.labels)) == sorted(default.names) and len(default.labels) == 999
    assert default.edges[1] > 10 and default.edges[1] < default.edges[2]


@pytest.mark.parametrize("edges", [[50, 10], [10, 10], [], ["a"]])
def test_bad_edges_name_the_option(edges):
    with pytest.raises(ValueError, match="activity_edges"):
        check_edges(edges, "activity_edges")


def test_popularity_edges_must_sit_above_the_cold_bucket():
    with pytest.raises(ValueError, match="popularity_edges"):
        popularity_buckets(np.array([1, 2, 3]), cold_item_max=10, edges=[5, 50])
    with pytest.raises(ValueError, match="cold_item_max"):
        popularity_buckets(np.array([1, 2, 3]), cold_item_max=-1)


def test_bucket_table_counts_and_intervals():
    frame = pd.DataFrame({"rank.delrec": [1, 1, 3, 8], "rank.teacher": [2, 1, 1, 9]})
    buckets = activity_buckets(np.array([5, 6, 50, 60]), [10])
    rows = bucket_table([frame], buckets, ["delrec", "teacher"], ["hit@1"])
    assert [r["users"] for r in rows] == [2, 2]
    assert rows[0]["models"]["delrec"]["hit@1"]["mean"] == 1.0
    assert rows[1]["models"]["teacher"]["hit@1"]["mean"] == 0.5
    across = bucket_table([frame, frame], buckets, ["delrec"], ["hit@1"])
    assert across[1]["models"]["delrec"]["hit@1"]["interval"] == "Student t across seeds"


@pytest.mark.parametrize("seeds", [(1,), (1, 2, 3)])
def test_a_bucket_of_every_user_has_the_summarys_interval(tmp_path, seeds):
    """Buckets and the summary compute their intervals alike: one bucket that holds every user
    gets the summary's mean and interval, with one seed (bootstrap) and with several (t)."""
    runs = [write_run(tmp_path / f"run{s}", seed=s, delrec_gain=2) for s in seeds]
    summary = summarise(runs)
    frames = load_runs(runs)[0]
    everyone = activity_buckets(frames[0]["n_train"].to_numpy(), [10**6])
    row = bucket_table(frames, everyone, ["delrec"], ["ndcg@5"], seed=seeds[0])[0]
    assert row["users"] == summary["users"]
    whole = summary["metrics"]["delrec"]["ndcg@5"]
    assert {k: row["models"]["delrec"]["ndcg@5"][k] for k in ("mean", "low", "high", "interval")} == \
        {k: whole[k] for k in ("mean", "low", "high", "interval")}


def test_summary_over_seeds_partitions_users_and_finds_a_planted_gain(tmp_path):
    runs = [write_run(tmp_path / f"run{s}", seed=s, delrec_gain=4) for s in (1, 2, 3)]
    summary = summarise(runs, tmp_path / "evidence")
    assert summary["seeds"] == [1, 2, 3] and summary["users"] == 120
    for kind in summary["buckets"].values():
        assert sum(row["users"] for row in kind["rows"]) == 120
    hit = summary["metrics"]["delrec"]["hit@1"]
    assert hit["interval"] == "Student t across seeds" and len(hit["per_seed"]) == 3 and hit["ci95"] > 0
    assert summary["tests"]["teacher"]["ndcg@5"]["pvalue"] < 0.001
    assert summary["tests"]["teacher"]["ndcg@5"]["test"] == "Wilcoxon signed-rank"
    assert summary["tests"]["teacher"]["hit@1"]["test"] == "sign test on per-user seed means"
    tests = summary["tests"]
    distinct = [(o, m) for o in tests for m in tests[o] if m.endswith("@5") or m == "hit@1"]  # @1 metrics coincide
    assert [tests[o][m]["pvalue_holm"] for o, m in distinct] == pytest.approx(holm([tests[o][m]["pvalue"] for o, m in distinct]))
    assert all(tests[o]["mrr@1"]["pvalue_holm"] == tests[o]["hit@1"]["pvalue_holm"] for o in tests)
    assert all(t["pvalue_holm"] >= t["pvalue"] for per_metric in tests.values() for t in per_metric.values())
    assert f"these {len(distinct)} distinct tests" in summary_table(summary)
    records = evidence_records(summary)
    assert records["seeds"] == 3 and "buckets.item_cold.users" in records
    assert "buckets.item_cold.delrec.hit@1" in records and "delrec_vs_teacher.hit@1.pvalue" in records
    assert records["delrec_vs_teacher.hit@1.pvalue_holm"] == summary["tests"]["teacher"]["hit@1"]["pvalue_holm"]
    assert records["delrec.test_ms_per_user"] == pytest.approx(10.0)
    assert records["teacher.test_ms_per_user"] == pytest.approx(0.5)
    assert records["delrec.stage2.peak_rss_gib"] == 1.5
    assert records["delrec.trained_parameters"] == 691156 and "buckets.activity.edge0" in records
    assert (tmp_path / "evidence" / "summary.json").is_file()
    assert "significant at 0.05" in (tmp_path / "evidence" / "summary.txt").read_text()


def test_summary_of_identical_models_says_not_significant(tmp_path):
    summary = summarise([write_run(tmp_path / "run", seed=1, delrec_gain=0)])
    for test in summary["tests"]["teacher"].values():
        assert test["pvalue"] == 1.0 and test["difference"] == 0.0
        assert test["verdict"].startswith("not significant at 0.05")
    assert summary["metrics"]["delrec"]["hit@1"]["interval"] == "bootstrap over users"


def test_summary_refuses_runs_of_different_users(tmp_path):
    a = write_run(tmp_path / "a", seed=1)
    b = write_run(tmp_path / "b", seed=2, users=50)
    with pytest.raises(ValueError, match="different users"):
        summarise([a, b])


def test_compare_runs_pairs_two_settings_on_the_same_seeds(tmp_path):
    """An ablation variant against the full model: same seeds, same users, DELRec against DELRec."""
    full = [write_run(tmp_path / f"full{s}", seed=s, delrec_gain=0) for s in (1, 2, 3)]
    better = [write_run(tmp_path / f"better{s}", seed=s, delrec_gain=4) for s in (1, 2, 3)]
    same = compare_runs(full, full)
    assert same["ndcg@5"]["pvalue"] == 1.0 and same["ndcg@5"]["difference"] == 0.0
    gain = compare_runs(full, better)
    assert gain["ndcg@5"]["difference"] > 0 and gain["ndcg@5"]["pvalue"] < 0.01
    with pytest.raises(ValueError, match="same seeds"):
        compare_runs(full, better[:2] + [write_run(tmp_path / "other9", seed=9)])


def test_each_bucket_tests_delrec_on_its_own_users(tmp_path):
    """A gain planted only on head targets is significant in ``item_head`` and absent (p = 1,
    no difference) in ``item_tail``, where DELRec ranks exactly as the teacher; the records carry
    both p values with Holm over the bucket's family."""
    runs = []
    for s in (1, 2):
        run = write_run(tmp_path / f"run{s}", seed=s)
        frame = pd.read_parquet(run / "records.parquet")
        head = frame["target_train_count"] > frame["target_train_count"].quantile(0.6)
        frame["rank.delrec"] = np.where(head, 1, frame["rank.teacher"])
        frame.to_parquet(run / "records.parquet")
        runs.append(run)
    summary = summarise(runs)
    rows = {row["name"]: row for row in summary["buckets"]["popularity"]["rows"]}
    assert rows["item_head"]["tests"]["teacher"]["hit@1"]["pvalue"] < 0.001
    tail = rows["item_tail"]["tests"]["teacher"]["ndcg@5"]
    assert tail["pvalue"] == 1.0 and tail["difference"] == 0.0
    records = evidence_records(summary)
    key = "buckets.item_head.delrec_vs_teacher.hit@1"
    assert records[f"{key}.pvalue_holm"] >= records[f"{key}.pvalue"] == rows["item_head"]["tests"]["teacher"]["hit@1"]["pvalue"]
