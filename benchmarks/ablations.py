"""Stage-1 ablations on ML-100K with the offline default model, and their table.

    python benchmarks/ablations.py            # runs the four variants, then tabulates
    python benchmarks/ablations.py --table    # only tabulates existing results

``full`` and ``teacher`` are the default run (``benchmarks/run.py --name=ml100k.default``);
each other variant is one run of ``benchmarks/run.py`` with the overrides below (the teacher
comes from the cache, so only the soft prompt and stage 2 change).  Writes
``results/ml100k.ablation.json`` with ``ml100k.ablation.<variant>.hit@1`` (and hit@5,
ndcg@5) records and the default run's ``ml100k.stage1.fidelity.{random,distilled}``, and
prints the markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from recbole_delrec.runs.artifacts import save_json

RESULTS = Path(__file__).resolve().parent / "results"
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
        command = [sys.executable, str(Path(__file__).with_name("run.py")),
                   f"--name=ml100k.ablation.{variant}", "--show_progress=False", *overrides]
        subprocess.run(command, check=True)


def _metrics(name: str, who: str) -> tuple[dict[str, float], dict]:
    records = json.loads((RESULTS / f"{name}.json").read_text())
    values = {r["metric"].split(f"{name}.{who}.")[1]: r["value"] for r in records
              if r["metric"].startswith(f"{name}.{who}.")}
    return values, records[0]


def tabulate() -> str:
    rows = {"full": _metrics("ml100k.default", "delrec"), "teacher": _metrics("ml100k.default", "teacher")}
    rows.update({v: _metrics(f"ml100k.ablation.{v}", "delrec") for v in VARIANTS})
    records = [{**template, "metric": f"ml100k.ablation.{variant}.{metric}", "value": values[metric]}
               for variant, (values, template) in rows.items() for metric in METRICS]
    default = json.loads((RESULTS / "ml100k.default.json").read_text())
    records += [{**r, "metric": r["metric"].replace("ml100k.default.stage1.", "ml100k.stage1.")}
                for r in default if ".stage1.fidelity." in r["metric"]]
    save_json(records, RESULTS / "ml100k.ablation.json")  # atomic
    lines = ["| variant | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    lines += [f"| {v} | " + " | ".join(f"{values[m]:.4f}" for m in METRICS) + " |" for v, (values, _) in rows.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    if "--table" not in sys.argv:
        run_variants()
    print(tabulate())
