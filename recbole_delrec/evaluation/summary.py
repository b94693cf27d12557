"""The evidence over finished run folders (one per seed): one summary a reviewer can check.

:func:`summarise` reads each folder's per-user records and gives, per model and metric, the
mean, standard deviation and 95% interval (Student t across seeds; with one seed a bootstrap
over users), DELRec's paired test against every other row (users paired, see
:mod:`~recbole_delrec.evaluation.stats`), both user breakdowns
(:mod:`~recbole_delrec.evaluation.buckets`, with the same tests inside each bucket), the
candidate-order analysis where a folder has one (:mod:`~recbole_delrec.evaluation.order`), and
test time per user.  It works on any list
of finished folders, so the seeds command and the report share it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from recbole_delrec.evaluation.buckets import Buckets, bucket_table, user_buckets
from recbole_delrec.evaluation.outcomes import distinct_metrics, metric_names, model_keys, outcome, parse_metric
from recbole_delrec.evaluation.records import load_records
from recbole_delrec.evaluation.stats import holm, interval, paired_test
from recbole_delrec.runs.artifacts import atomic_write, save_json

ORDER_FILE = "order.json"
EVIDENCE_KEYS = ("activity_edges", "popularity_edges", "cold_item_max")


def load_runs(run_dirs: list[str | Path]) -> tuple[list[pd.DataFrame], list[dict], list[Path]]:
    """Records of every folder, rows aligned on the same users; a clear error if they differ."""
    if not run_dirs:
        raise ValueError("Give at least one finished run folder.")
    paths = [Path(p) for p in run_dirs]
    loaded = [load_records(p) for p in paths]
    frames = [frame.sort_values("user", kind="stable").reset_index(drop=True) for frame, _ in loaded]
    metas = [meta for _, meta in loaded]
    for path, frame, meta in zip(paths[1:], frames[1:], metas[1:]):
        if meta["dataset"] != metas[0]["dataset"] or meta["mode"] != metas[0]["mode"]:
            raise ValueError(f"'{path}' is a {meta['dataset']}/{meta['mode']} run, '{paths[0]}' a "
                             f"{metas[0]['dataset']}/{metas[0]['mode']} run: summarise runs of one setting only.")
        if not frame["user"].equals(frames[0]["user"]) or model_keys(frame) != model_keys(frames[0]):
            raise ValueError(f"'{path}' and '{paths[0]}' tested different users or models: seeds of one "
                             f"setting test the same users with the same models.")
    return frames, metas, paths


def summarise(run_dirs: list[str | Path], out_dir: str | Path | None = None) -> dict[str, Any]:
    """The summary of ``run_dirs``; with ``out_dir``, also ``summary.json`` and ``summary.txt`` there."""
    frames, metas, paths = load_runs(run_dirs)
    meta, models = metas[0], model_keys(frames[0])
    metrics = metric_names(meta["metrics"], meta["topk"])
    options = _evidence_options(paths[0])
    seed = int(meta.get("seed", 0))
    summary = {
        "dataset": meta["dataset"], "mode": meta["mode"], "n_candidates": meta.get("n_candidates"),
        "seeds": [m.get("seed") for m in metas], "run_dirs": [str(p) for p in paths],
        "users": len(frames[0]), "names": {m: meta["models"].get(m, m) for m in models},
        "metrics": {m: {metric: _model_metric(frames, m, metric, seed) for metric in metrics} for m in models},
        "tests": _tests(frames, models, metrics),
        "buckets": {b.kind: {"edges": b.edges, "rows": _with_tests(bucket_table(frames, b, models, metrics, seed),
                                                                    frames, b, models, metrics)}
                    for b in user_buckets(frames[0], options)},
        "order": [json.loads((p / ORDER_FILE).read_text()) for p in paths if (p / ORDER_FILE).is_file()],
        "timings": _timings(paths, models),
    }
    if out_dir is not None:
        save_summary(summary, out_dir)
    return summary


def save_summary(summary: dict[str, Any], out_dir: str | Path) -> None:
    """``summary.json`` and ``summary.txt`` (the printed table) in ``out_dir``, atomically."""
    out = Path(out_dir)
    save_json(summary, out / "summary.json")
    text = summary_table(summary)
    atomic_write(out / "summary.txt", lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def _evidence_options(run_dir: Path) -> dict[str, Any]:
    """The run's own evidence settings (``config.json``), so a report cuts buckets like the run."""
    config = run_dir / "config.json"
    final = json.loads(config.read_text(encoding="utf-8")).get("final", {}) if config.is_file() else {}
    return {k: final[k] for k in EVIDENCE_KEYS if final.get(k) is not None}


def _model_metric(frames: list[pd.DataFrame], model: str, metric: str, seed: int) -> dict[str, Any]:
    """Mean, std, 95% interval and per-seed values of one model's metric."""
    per_user = [outcome(f[f"rank.{model}"].to_numpy(), metric) for f in frames]
    return {**interval(per_user, seed), "per_seed": [float(v.mean()) for v in per_user]}


def _tests(frames: list[pd.DataFrame], models: list[str], metrics: list[str]) -> dict[str, dict]:
    """DELRec against every other model, per metric, on per-user outcomes averaged over seeds;
    ``pvalue_holm`` adjusts each p for the family of these tests, each distinct outcome once
    (NDCG@1 and MRR@1 repeat Hit@1's test and share its adjusted p)."""
    if "delrec" not in models:
        return {}
    tests = {
        other: {metric: paired_test(metric, user_means(frames, "delrec", metric), user_means(frames, other, metric),
                                    len(frames)).as_dict() for metric in metrics}
        for other in models if other != "delrec"
    }
    distinct = distinct_metrics(metrics)
    family = [(other, metric) for other in tests for metric in distinct]
    adjusted = dict(zip(family, holm([tests[other][metric]["pvalue"] for other, metric in family])))
    same = {metric: metric if metric in distinct else next(m for m in distinct if parse_metric(m)[1] == 1)
            for metric in metrics}
    for other, per_metric in tests.items():
        for metric, t in per_metric.items():
            t["pvalue_holm"] = adjusted[(other, same[metric])]
    return tests


def _with_tests(rows: list[dict], frames: list[pd.DataFrame], buckets: Buckets, models: list[str],
                metrics: list[str]) -> list[dict]:
    """Each bucket row with DELRec's paired tests on the bucket's own users (``tests``, shaped as
    the summary's, Holm over the bucket's family): a lead on a subgroup of users is a finding only
    with a test, and a subgroup can reverse what the whole table says."""
    for row in rows:
        members = buckets.labels == row["name"]
        row["tests"] = _tests([f[members] for f in frames], models, metrics) if row["users"] else {}
    return rows


def user_means(frames: list[pd.DataFrame], model: str, metric: str) -> np.ndarray:
    """Each user's outcome of ``model`` averaged over the seeds (the pairing unit of every test)."""
    return np.mean([outcome(f[f"rank.{model}"].to_numpy(), metric) for f in frames], axis=0)


def compare_runs(reference: list[str | Path], other: list[str | Path], model: str = "delrec") -> dict[str, dict]:
    """``model`` under two settings (two ablation variants, say), each run with the same seeds:
    per metric, the paired test of ``other`` against ``reference`` on per-user outcomes averaged
    over the seeds.  The same seeds give the same candidate sets, so each user is a pair."""
    ref_frames, ref_metas, _ = load_runs(reference)
    other_frames, other_metas, _ = load_runs(other)
    if [m.get("seed") for m in ref_metas] != [m.get("seed") for m in other_metas] or \
            not other_frames[0]["user"].equals(ref_frames[0]["user"]):
        raise ValueError(f"Compare runs of the same seeds and users: {reference[0]} has seeds "
                         f"{[m.get('seed') for m in ref_metas]}, {other[0]} has {[m.get('seed') for m in other_metas]}.")
    metrics = metric_names(ref_metas[0]["metrics"], ref_metas[0]["topk"])
    return {metric: paired_test(metric, user_means(other_frames, model, metric), user_means(ref_frames, model, metric),
                                len(ref_frames)).as_dict() for metric in metrics}


def _timings(paths: list[Path], models: list[str]) -> dict[str, Any]:
    """Test milliseconds per user of each model (mean over seeds), its trained parameters and stage 2's peak memory,
    from each run's ``cost`` rows (``row_keys`` maps a model key to its row)."""
    results = [json.loads((p / "result.json").read_text(encoding="utf-8")) for p in paths]
    costs = [{key: r["cost"][row] for key, row in r.get("row_keys", {}).items()} for r in results]
    out: dict[str, Any] = {}
    for model in models:
        per_user = [c[model]["test_ms_per_user"] for c in costs if model in c]
        if per_user:
            out[f"{model}.test_ms_per_user"] = float(np.mean(per_user))
    for model in models:
        params = [c[model]["trained_parameters"] for c in costs if model in c]
        if params:
            out[f"{model}.trained_parameters"] = params[0]  # the same in every seed
    peaks = [c["delrec"]["peak_memory_mb_per_stage"]["stage2"] for c in costs
             if "stage2" in c.get("delrec", {}).get("peak_memory_mb_per_stage", {})]
    if peaks:
        out["delrec.stage2.peak_rss_gib"] = float(max(peaks)) / 1024
    return out


def summary_table(summary: dict[str, Any]) -> str:
    """The main table (mean +- 95% half-width per metric) and DELRec's tests, as plain text."""
    first = next(iter(summary["metrics"].values()))
    metrics = list(first)
    rows = [[summary["names"][m]] + [f"{v[k]['mean']:.4f} ± {v[k]['ci95'] or 0:.4f}" for k in metrics]
            for m, v in summary["metrics"].items()]
    interval = first[metrics[0]]["interval"]
    lines = [f"{summary['dataset']} ({summary['mode']}), {summary['users']} test users, seeds {summary['seeds']}; "
             f"± = 95% interval half-width ({interval})",
             tabulate(rows, headers=["model", *metrics], disable_numparse=True)]
    tests = [[f"DELRec vs {summary['names'][other]}", metric, f"{t['difference']:+.4f}", f"{t['pvalue']:.3g}",
              f"{t['pvalue_holm']:.3g}", t["verdict"]]
             for other, per_metric in summary["tests"].items() for metric, t in per_metric.items()]
    if tests:
        n_tests = len(summary["tests"]) * len(distinct_metrics(metrics))
        lines += ["", f"paired tests, users paired (difference = DELRec - other; Holm: p adjusted for these "
                      f"{n_tests} distinct tests, read it when asking whether any difference is real):",
                  tabulate(tests, headers=["comparison", "metric", "difference", "p", "p (Holm)", "verdict"],
                           disable_numparse=True)]
    return "\n".join(lines)


def evidence_records(summary: dict[str, Any]) -> dict[str, float]:
    """The flat figures the benchmarks record (prefix added by the caller, e.g. ``ml100k.evidence.``)."""
    out: dict[str, float] = {"seeds": len(summary["seeds"])}
    for model, per_metric in summary["metrics"].items():
        for metric, v in per_metric.items():
            out[f"{model}.{metric}.mean"] = v["mean"]
            out[f"{model}.{metric}.ci95"] = v["ci95"]
    out.update(_test_records(summary["tests"]))
    for name, kind in summary["buckets"].items():
        out.update({f"buckets.{name}.edge{i}": edge for i, edge in enumerate(kind["edges"])})
        for row in kind["rows"]:
            out[f"buckets.{row['name']}.users"] = row["users"]
            for model, per_metric in row["models"].items():
                for metric, v in per_metric.items():
                    if v["mean"] is not None:
                        out[f"buckets.{row['name']}.{model}.{metric}"] = v["mean"]
            out.update(_test_records(row.get("tests", {}), f"buckets.{row['name']}."))
    if summary["order"]:
        out.update({f"order.{k}": v for k, v in summary["order"][0]["records"].items()})
    out.update(summary["timings"])
    return out


def _test_records(tests: dict[str, dict], prefix: str = "") -> dict[str, float]:
    """``<prefix>delrec_vs_<row>.<metric>.pvalue`` and ``.pvalue_holm`` of a family of DELRec's tests."""
    return {f"{prefix}delrec_vs_{other}.{metric}.{kind}": t[kind]
            for other, per_metric in tests.items() for metric, t in per_metric.items()
            for kind in ("pvalue", "pvalue_holm")}
