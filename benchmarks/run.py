"""Run DELRec once and record its figures in ``benchmarks/results/<name>.json``.

    python benchmarks/run.py --name=ml100k.default --dataset=ml-100k [--key=value ...]

Every ``--key=value`` after the script's own options goes to RecBole's Config, exactly as
with ``run_delrec.py``; ``--resume=<run folder>`` continues an interrupted run from its
``last.pth`` (a run longer than a session: its records then time this process only).  Records
follow the project's format (metric, value, unit, device, date, command); a rerun replaces the
file.  Metric keys: ``<name>.teacher.<metric>``,
``<name>.delrec.<metric>`` (test, same candidates), ``<name>.<stage>_seconds``,
``<name>.total_seconds``, ``<name>.users``, ``<name>.peak_memory_gib.<stage>`` (each DELRec stage's
own peak: resident memory on a CPU, allocated memory on a GPU), ``<name>.heap_give_backs.<stage>`` (the
passes that met ``malloc_reuse_max_share``), with full ranking
``<name>.rerank_seconds``, and, when stage 1 ran, ``<name>.stage1.fidelity.*``.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (the one owner of the records' device name)

RESULTS = Path(__file__).resolve().parent / "results"


def records(name: str, result: dict, command: str, device: str) -> list[dict]:
    """The project's metric records for one run's result dict."""
    date = datetime.date.today().isoformat()

    def record(metric: str, value: float, unit: str = "") -> dict:
        return {"metric": f"{name}.{metric}", "value": round(float(value), 4), "unit": unit,
                "device": device, "date": date, "command": command}

    out = [record(f"{who}.{metric}", value)
           for who, key in (("teacher", "teacher_test_result"), ("delrec", "test_result"))
           for metric, value in result[key].items()]
    out += [record(key, value, "s") for key, value in result["timings"].items()]
    out += [record(f"stage1.fidelity.{key.split('_')[1]}", value)
            for key, value in (result.get("stage1_result") or {}).items() if key.startswith("fidelity_")]
    out += [record(f"valid.epoch{epoch}.{metric}", value)
            for epoch, values in enumerate(result.get("valid_history") or []) for metric, value in values.items()]
    out.append(record("users", result["test_users"]))
    out += [record(f"peak_memory_gib.{stage}", mib / 1024, "GiB")
            for stage, mib in result["cost"]["DELRec"]["peak_memory_mb_per_stage"].items()]
    out += [record(f"heap_give_backs.{stage}", passes, "passes")
            for stage, passes in result["cost"]["DELRec"].get("heap_give_backs_per_stage", {}).items()]
    if result["eval_mode"] == "full":  # DELRec's test pass: K LLM candidate scorings per user
        out.append(record("rerank_seconds", result["timings"]["test_seconds"], "s"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="metric prefix and file name, e.g. ml100k.default")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--device-name", default=machine.device_name(), help="the records' device")
    parser.add_argument("--load", default=None, help="evaluate a finished run folder instead of training")
    parser.add_argument("--resume", default=None, help="continue an interrupted run folder (its last.pth)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files, as run_delrec.py")
    args, rest = parser.parse_known_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    sys.argv = sys.argv[:1] + rest
    from recbole_delrec import run_delrec
    from recbole_delrec.runs.artifacts import save_json

    files = args.config_files.split() if args.config_files else None
    result = run_delrec(model="DELRec", dataset=args.dataset, config_file_list=files, load=args.load,
                        resume=args.resume)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name}.json"
    save_json(records(args.name, result, command, args.device_name), path)  # atomic
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
