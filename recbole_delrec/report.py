"""A reviewer's report of finished run folders: ``python -m recbole_delrec.report RUN_DIR [RUN_DIR ...]``.

One folder per seed (or one folder).  Writes into ``--out`` (default: next to the first folder,
``report-<dataset>-<time>/``): ``report.md`` (main table with 95% intervals and significance
marks against DELRec, the paired tests, bucket tables for every metric and model, the
candidate-order analysis), PNG pictures (per-seed points, bucket bars with intervals, the
position of the top-1 pick), ``report.html`` (the same pictures, interactive, plotly) and the
``summary.json`` / ``summary.txt`` they come from (:func:`~recbole_delrec.evaluation.summary.summarise`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from plotly.subplots import make_subplots
from recbole.utils import get_local_time

from recbole_delrec.evaluation.outcomes import distinct_metrics
from recbole_delrec.evaluation.stats import ALPHA
from recbole_delrec.evaluation.summary import save_summary, summarise, summary_table
from recbole_delrec.runs.artifacts import atomic_write


def write_report(run_dirs: list[str | Path], out_dir: str | Path | None = None) -> Path:
    """Summary, pictures and ``report.md`` of ``run_dirs`` in ``out_dir``; returns the Markdown file."""
    first = Path(run_dirs[0]) if run_dirs else Path(".")
    summary = summarise(run_dirs)
    out = Path(out_dir) if out_dir else first.parent / f"report-{summary['dataset']}-{get_local_time()}"
    save_summary(summary, out)  # summary.json / summary.txt beside the report
    figures = {"seeds": _seed_points(summary), **{f"buckets_{k}": _bucket_bars(summary, k) for k in summary["buckets"]}}
    if summary["order"]:
        figures["order_positions"] = _position_curve(summary)
    for name, (figure, _) in figures.items():
        atomic_write(out / f"{name}.png", lambda tmp, f=figure: f.savefig(tmp, format="png", dpi=110))
    html = "\n".join(fig.to_html(full_html=False, include_plotlyjs=i == 0) for i, (_, (_, fig)) in enumerate(figures.items()))
    atomic_write(out / "report.html", lambda tmp: tmp.write_text(f"<html><body>{html}</body></html>", encoding="utf-8"))
    markdown = _markdown(summary, list(figures))
    return atomic_write(out / "report.md", lambda tmp: tmp.write_text(markdown, encoding="utf-8"))


def _shown_metrics(summary: dict[str, Any]) -> list[str]:
    """Metrics worth a picture: NDCG@1 and MRR@1 equal Hit@1, so only one of them at k = 1."""
    return distinct_metrics(list(next(iter(summary["metrics"].values()))))


def _mark(pvalue: float) -> str:
    """Significance mark of DELRec's difference to a row, from the Holm-adjusted p (the tests
    are named under the table), so a mark survives making all the table's tests at once."""
    return "***" if pvalue < 0.001 else "**" if pvalue < 0.01 else "*" if pvalue < ALPHA else " (n.s.)"


def _markdown(summary: dict[str, Any], pictures: list[str]) -> str:
    metrics = list(next(iter(summary["metrics"].values())))
    interval = summary["metrics"]["delrec" if "delrec" in summary["metrics"] else next(iter(summary["metrics"]))]
    interval = interval[metrics[0]]["interval"]
    lines = [f"# Evidence: {summary['dataset']} ({summary['mode']})", "",
             f"{summary['users']} test users, seeds {summary['seeds']}; cells are mean [95% interval] ({interval}).",
             "Marks compare DELRec with the row on the same users, on p adjusted (Holm) for all the table's "
             "tests: * p < 0.05, ** p < 0.01, *** p < 0.001, (n.s.) not significant at 0.05. The paired tests "
             "below give both p.", "",
             "| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for model, values in summary["metrics"].items():
        tests = summary["tests"].get(model, {})
        cells = [f"{v['mean']:.4f} [{v['low']:.4f}, {v['high']:.4f}]" + (_mark(tests[m]["pvalue_holm"]) if m in tests else "")
                 for m, v in values.items()]
        lines.append(f"| {summary['names'][model]} | " + " | ".join(cells) + " |")
    lines += ["", "## Paired tests (DELRec - row, users paired)", "", "```", summary_table(summary), "```", "",
              "![per-seed points](seeds.png)", ""]
    for kind, table in summary["buckets"].items():
        lines += [f"## By {kind}", "", f"![{kind} buckets](buckets_{kind}.png)", "",
                  "Marks: DELRec against the row on the bucket's own users, Holm over the bucket's tests.", ""]
        for metric in metrics:
            lines += [f"**{metric}**", "", "| bucket | range | users | " + " | ".join(summary["names"].values()) + " |",
                      "|---" * (3 + len(summary["names"])) + "|"]
            for row in table["rows"]:
                cells = [_bucket_cell(row["models"][m][metric], row["tests"].get(m, {}).get(metric))
                         for m in summary["names"]]
                lines.append(f"| {row['name']} | {row['range']} | {row['users']} | " + " | ".join(cells) + " |")
            lines.append("")
    if summary["order"]:
        lines += ["## Candidate order", "", "![position of the top-1 pick](order_positions.png)", ""]
        for order in summary["order"]:
            lines.append(f"- {order['orders']} orders x {order['users']} users: Hit@1 {order['hit@1']['mean']:.4f} "
                         f"± {order['hit@1']['std']:.4f} (std across orders), top-1 agreement "
                         f"{order['top1_agreement']:.3f}, top-1 at position 1: {order['position_share'][0]:.3f} "
                         f"(flat: {order['uniform_share']:.3f}, chi-square p = {order['position_chi2_pvalue']:.3g}), "
                         f"mean over orders Hit@1 {order['mean_of_orders']['hit@1']:.4f}, "
                         f"{order['ms_per_user']:.1f} ms per user")
        lines.append("")
    if summary["timings"]:
        lines += ["## Cost", ""] + [f"- {k}: {v:.3f}" for k, v in summary["timings"].items()] + [""]
    lines += ["Pictures: " + ", ".join(f"`{p}.png`" for p in pictures) + "; interactive: `report.html`.", ""]
    return "\n".join(lines)


def _bucket_cell(value: dict[str, Any], test: dict[str, Any] | None) -> str:
    """A bucket's mean [interval], marked like the main table from the bucket's own tests."""
    if value["mean"] is None:
        return "-"
    return f"{value['mean']:.4f} [{value['low']:.4f}, {value['high']:.4f}]" + (_mark(test["pvalue_holm"]) if test else "")


def _seed_points(summary: dict[str, Any]) -> tuple[Figure, go.Figure]:
    """Every seed's value per model, with the mean and its 95% interval."""
    metrics = _shown_metrics(summary)
    figure = Figure(figsize=(3.2 * len(metrics), 3.4), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    interactive = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    names = list(summary["names"].values())
    for col, (ax, metric) in enumerate(zip(axes, metrics), start=1):
        for x, (model, values) in enumerate(summary["metrics"].items()):
            v = values[metric]
            ax.scatter([x] * len(v["per_seed"]), v["per_seed"], s=14, alpha=0.6, color="grey")
            ax.errorbar([x + 0.15], [v["mean"]], yerr=[[v["mean"] - v["low"]], [v["high"] - v["mean"]]], fmt="o", capsize=3)
            interactive.add_trace(go.Scatter(x=[summary["names"][model]] * len(v["per_seed"]), y=v["per_seed"],
                                             mode="markers", name=f"{summary['names'][model]} seeds",
                                             showlegend=col == 1), row=1, col=col)
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_title(metric)
    interactive.update_layout(title="Per-seed values (points) per model")
    return figure, interactive


def _bucket_bars(summary: dict[str, Any], kind: str) -> tuple[Figure, go.Figure]:
    """Bars per bucket and model with their 95% intervals; the user count under each bucket."""
    rows = summary["buckets"][kind]["rows"]
    metrics, models = _shown_metrics(summary), list(summary["names"])
    figure = Figure(figsize=(3.6 * len(metrics), 3.6), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    interactive = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    labels = [f"{r['name']}\n{r['range']}\nn={r['users']}" for r in rows]
    width = 0.8 / len(models)
    for col, (ax, metric) in enumerate(zip(axes, metrics), start=1):
        for i, model in enumerate(models):
            cells = [r["models"][model][metric] for r in rows]
            mean = np.array([c["mean"] if c["mean"] is not None else np.nan for c in cells])
            low = np.array([c["low"] if c["low"] is not None else np.nan for c in cells])
            high = np.array([c["high"] if c["high"] is not None else np.nan for c in cells])
            ax.bar(np.arange(len(rows)) + i * width, mean, width, yerr=[mean - low, high - mean], capsize=2,
                   label=summary["names"][model])
            interactive.add_trace(go.Bar(x=[lab.replace("\n", " ") for lab in labels], y=mean,
                                         error_y={"type": "data", "symmetric": False, "array": high - mean,
                                                  "arrayminus": mean - low},
                                         name=summary["names"][model], showlegend=col == 1), row=1, col=col)
        ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, labels, fontsize=7)
        ax.set_title(f"{metric} by {kind}")
    axes[0].legend(fontsize=7)
    interactive.update_layout(title=f"By {kind} (95% intervals)", barmode="group")
    return figure, interactive


def _position_curve(summary: dict[str, Any]) -> tuple[Figure, go.Figure]:
    """Share of DELRec's top-1 picks at each listed position; flat = no position bias."""
    figure = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = figure.subplots()
    interactive = go.Figure()
    for i, order in enumerate(summary["order"]):
        positions = np.arange(1, len(order["position_share"]) + 1)
        ax.plot(positions, order["position_share"], marker="o", ms=3, label=f"run {i + 1}")
        interactive.add_trace(go.Scatter(x=positions, y=order["position_share"], name=f"run {i + 1}"))
    uniform = summary["order"][0]["uniform_share"]
    ax.axhline(uniform, color="grey", ls="--", label=f"flat (1/{round(1 / uniform)})")
    interactive.add_hline(y=uniform, line_dash="dash")
    ax.set_xlabel("listed position of the top-1 pick")
    ax.set_ylabel("share of top-1 picks")
    ax.legend(fontsize=7)
    interactive.update_layout(title="Position of DELRec's top-1 pick", xaxis_title="listed position")
    return figure, interactive


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="finished run folders (one per seed)")
    parser.add_argument("--out", default=None, help="output folder (default: report-<dataset>-<time> beside the first)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.run_dirs, args.out)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"report: {path}")


if __name__ == "__main__":
    main()
