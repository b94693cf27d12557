"""The report on hand-written run folders: Markdown, PNG and HTML files; errors on non-runs."""

import pytest

from recbole_delrec.report import main, write_report
from tests.synthetic_runs import write_run

ORDER = {"orders": 3, "users": 120, "n_candidates": 20, "hit@1": {"mean": 0.3, "std": 0.02},
         "ndcg@5": {"mean": 0.5, "std": 0.01}, "top1_agreement": 0.8, "position_share": [0.05] * 20,
         "uniform_share": 0.05, "position_chi2_pvalue": 1.0, "mean_of_orders": {"hit@1": 0.31, "ndcg@5": 0.5},
         "evaluation_order": {"hit@1": 0.3, "ndcg@5": 0.5}, "ms_per_user": 12.0, "ms_per_user_per_order": 4.0,
         "records": {"hit@1.std": 0.02}}


def test_report_over_seeds_writes_markdown_pictures_and_html(tmp_path):
    runs = [write_run(tmp_path / f"run{s}", seed=s, delrec_gain=3, order=ORDER if s == 1 else None) for s in (1, 2)]
    markdown = write_report(runs, tmp_path / "report")
    text = markdown.read_text()
    assert "| DELRec |" in text and "***" in text and "Student t across seeds" in text
    assert "item_cold" in text and "user_1" in text and "## Candidate order" in text
    bucket_rows = [line for line in text.splitlines() if line.startswith("| user_")]
    assert bucket_rows and all(line.count("]*") + line.count("] (n.s.)") == 2 for line in bucket_rows)  # 2 rows vs DELRec
    for name in ("seeds", "buckets_activity", "buckets_popularity", "order_positions"):
        png = tmp_path / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plotly" in (tmp_path / "report" / "report.html").read_text()[:200000].lower()
    assert (tmp_path / "report" / "summary.json").is_file()


def test_report_of_one_run_uses_the_bootstrap(tmp_path):
    text = write_report([write_run(tmp_path / "run", seed=1)], tmp_path / "out").read_text()
    assert "bootstrap over users" in text and "## Candidate order" not in text


def test_report_on_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a finished run folder"):
        write_report([tmp_path / "empty"])
    with pytest.raises(SystemExit, match="records.parquet"):
        main([str(tmp_path / "empty")])
