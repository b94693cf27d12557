"""TSLRec on ML-100K with the offline default LLM: plain backbone, CI and TSLRec rows.

    python benchmarks/tslrec.py [--key=value ...]

Runs ``run_tslrec`` for SASRec and GRU4Rec (the knowledge-enhanced embeddings are computed
once and reused by the second backbone), and writes ``results/ml100k.tslrec.json`` with
``ml100k.tslrec.<backbone>.<variant>.{ndcg@10,hit@10}`` and
``ml100k.tslrec.llm_seconds_per_epoch``; ``ml100k.delrec.llm_seconds_per_epoch`` is taken
from the DELRec default run's record (stage-2 training time per epoch, same data, machine).
"""

from __future__ import annotations

import datetime
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (the one owner of the records' device name)

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    from recbole_delrec.runs.artifacts import save_json
    from recbole_delrec.tslrec.quick_start import run_tslrec

    date = datetime.date.today().isoformat()
    records = []

    def record(metric: str, value: float, unit: str = "") -> None:
        records.append({"metric": metric, "value": round(float(value), 4), "unit": unit,
                        "device": machine.device_name(), "date": date, "command": command})

    for backbone in ("SASRec", "GRU4Rec"):
        result = run_tslrec(dataset="ml-100k", backbone=backbone)
        for variant in ("base", "ci", "tslrec"):
            for metric in ("ndcg@10", "hit@10"):
                record(f"ml100k.tslrec.{backbone.lower()}.{variant}.{metric}", result[variant][metric])
        if result.get("llm_seconds_per_epoch"):
            llm_seconds = result["llm_seconds_per_epoch"]
    record("ml100k.tslrec.llm_seconds_per_epoch", llm_seconds, "s")
    delrec = json.loads((RESULTS / "ml100k.default.json").read_text())
    per_epoch = next(r for r in delrec if r["metric"] == "ml100k.default.stage2_seconds_per_epoch")
    records.append({**per_epoch, "metric": "ml100k.delrec.llm_seconds_per_epoch"})
    save_json(records, RESULTS / "ml100k.tslrec.json")  # atomic
    print(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
