"""Stage-1 ablations on ML-100K with the offline default model, and their table.

    python benchmarks/ablations.py            # runs the five variants, then tabulates
    python benchmarks/ablations.py --table    # only tabulates existing results
    python benchmarks/ablations.py --seeds-of=saved/evidence-ml-100k-<time> [variant ...]
        # each variant once per seed of that evidence run, compared with its full model;
        # other --key=value (e.g. the evidence run's --llm_path) go to every variant
    python benchmarks/ablations.py --seeded-table   # only that table, with Holm-adjusted p

``full`` and ``teacher`` are the 2026-11-24 default run (``ml100k.default_before_issue13``);
each other variant is one run of ``benchmarks/run.py`` with the overrides below (the teacher
comes from the cache, so only the soft prompt and stage 2 change).  Writes
``results/ml100k.ablation.json`` with ``ml100k.ablation.<variant>.hit@1`` (and hit@5,
ndcg@5) records and the default run's ``ml100k.stage1.fidelity.{random,distilled}``, and
prints the markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

from recbole_delrec.runs.artifacts import save_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (the one owner of the records' device name)

RESULTS = Path(__file__).resolve().parent / "results"
SEEDED = RESULTS / "ml100k.ablation_seeds.json"
VARIANTS = {
    "ta_only": ["--delrec_tasks=['ta']"],
    "rps_only": ["--delrec_tasks=['rps']"],
    "no_distill": ["--delrec_tasks=[]"],
    "no_soft_prompt": ["--n_soft_tokens=0"],
    "rps_kl": ["--rps_loss=kl"],
}
METRICS = ("hit@1", "hit@5", "ndcg@5")


def run_variants() -> None:
    for variant, overrides in VARIANTS.items():
        command = [sys.executable, "benchmarks/run.py",  # relative: it is recorded as the command
                   f"--name=ml100k.ablation.{variant}", "--show_progress=False", *overrides]
        subprocess.run(command, check=True)


def _metrics(name: str, who: str) -> tuple[dict[str, float], dict]:
    records = json.loads((RESULTS / f"{name}.json").read_text())
    values = {r["metric"].split(f"{name}.{who}.")[1]: r["value"] for r in records
              if r["metric"].startswith(f"{name}.{who}.")}
    return values, records[0]


def tabulate() -> str:
    baseline = "ml100k.default_before_issue13"  # the default run of the day the variants ran
    rows = {"full": _metrics(baseline, "delrec"), "teacher": _metrics(baseline, "teacher")}
    rows.update({v: _metrics(f"ml100k.ablation.{v}", "delrec") for v in VARIANTS})
    records = [{**template, "metric": f"ml100k.ablation.{variant}.{metric}", "value": values[metric]}
               for variant, (values, template) in rows.items() for metric in METRICS]
    default = json.loads((RESULTS / f"{baseline}.json").read_text())
    records += [{**r, "metric": r["metric"].replace(f"{baseline}.stage1.", "ml100k.stage1.")}
                for r in default if ".stage1.fidelity." in r["metric"]]
    save_json(records, RESULTS / "ml100k.ablation.json")  # atomic
    lines = ["| variant | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    lines += [f"| {v} | " + " | ".join(f"{values[m]:.4f}" for m in METRICS) + " |" for v, (values, _) in rows.items()]
    return "\n".join(lines)


def seeded(full_summary: Path, variants: list[str], command: str, extra: list[str]) -> None:
    """Each variant on the seeds of a finished evidence run (``full``), DELRec against the full
    DELRec on the same seeds, users paired; records ``ml100k.ablation_seeds.*``.  ``extra``
    ``--key=value`` settings go to every variant: give the ones the evidence run was made with."""
    from recbole_delrec.delrec.quick_start import run_seeds
    from recbole_delrec.evaluation.summary import compare_runs

    full = json.loads((full_summary / "summary.json").read_text())
    values = {f"full.delrec.{m}.{k}": full["metrics"]["delrec"][m][k] for m in METRICS for k in ("mean", "ci95")}
    for variant in variants:
        runs = run_seeds(full["seeds"], argv=[*extra, *VARIANTS[variant], "--show_progress=False"])
        tests = compare_runs(full["run_dirs"], runs["run_dirs"])
        for m in METRICS:
            values.update({f"{variant}.delrec.{m}.{k}": runs["metrics"]["delrec"][m][k] for k in ("mean", "ci95")})
            values.update({f"{variant}.vs_full.{m}.{k}": tests[m][k] for k in ("difference", "pvalue")})
        print(variant, {m: tests[m]["verdict"] for m in METRICS}, flush=True)
    date = datetime.date.today().isoformat()
    records = [{"metric": f"ml100k.ablation_seeds.{k}", "device": machine.device_name(), "date": date, "command": command,
                "unit": "", "value": float(f"{v:.3g}") if k.endswith("pvalue") else round(float(v), 4)}
               for k, v in values.items()]
    fresh = {r["metric"] for r in records}
    kept = [r for r in json.loads(SEEDED.read_text())] if SEEDED.is_file() else []  # other variants' records
    save_json([r for r in kept if r["metric"] not in fresh] + records, SEEDED)  # atomic
    print(seeded_table(command, date))


def seeded_table(command: str, date: str) -> str:
    """The seeded table for BENCHMARKS.md from the records, after (re)writing the Holm-adjusted
    p of every variant-vs-full test recorded so far (one family: all variants, all metrics)."""
    from recbole_delrec.evaluation.stats import holm

    records = [r for r in json.loads(SEEDED.read_text()) if not r["metric"].endswith(".pvalue_holm")]
    tests = [r for r in records if r["metric"].endswith(".pvalue")]
    adjusted = [{**r, "metric": r["metric"] + "_holm", "value": float(f"{p:.3g}"), "command": command, "date": date}
                for r, p in zip(tests, holm([r["value"] for r in tests]))]
    save_json(records + adjusted, SEEDED)  # atomic
    value = {r["metric"].removeprefix("ml100k.ablation_seeds."): r["value"] for r in records + adjusted}
    variants = ["full", *(v for v in VARIANTS if f"{v}.delrec.hit@1.mean" in value)]
    lines = ["| variant | " + " | ".join(METRICS) + " | " + " | ".join(f"vs full: {m}" for m in METRICS) + " |",
             "|---|" + "---|" * 2 * len(METRICS)]
    for v in variants:
        cells = [f"{value[f'{v}.delrec.{m}.mean']:.4f} ± {value[f'{v}.delrec.{m}.ci95']:.4f}" for m in METRICS]
        cells += ["" if v == "full" else f"{value[f'{v}.vs_full.{m}.difference']:+.4f}, p = "
                  f"{value[f'{v}.vs_full.{m}.pvalue']:.2g} (Holm {value[f'{v}.vs_full.{m}.pvalue_holm']:.2g})"
                  for m in METRICS]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    seeds_of = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--seeds-of=")), None)
    if "--seeded-table" in sys.argv:
        print(seeded_table("python " + " ".join(sys.argv), datetime.date.today().isoformat()))
    elif seeds_of:
        chosen = [a for a in sys.argv[1:] if not a.startswith("--")] or list(VARIANTS)
        extra = [a for a in sys.argv[1:] if a.startswith("--") and not a.startswith("--seeds-of=")]
        seeded(Path(seeds_of), chosen, "python " + " ".join(sys.argv), extra)
    else:
        if "--table" not in sys.argv:
            run_variants()
        print(tabulate())
