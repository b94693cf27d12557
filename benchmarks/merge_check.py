"""Adapters merged into the LLM's weights at evaluation (``llm_merge_adapters``), against the
adapters beside their weights (the default), on a finished run's test users and candidates.

    python benchmarks/merge_check.py --run=saved/<a finished DELRec run folder>

Merging folds each AdaLoRA update into its bf16 projection, so one matmul replaces the base
weight's plus PEFT's float32 side path; the update is rounded into weights of far larger
magnitude on the way.  This evaluates the run twice through the plugin's own ``load`` (nothing
trains; the run's saved candidates): first with the adapters beside the weights, then merged.
It records the share of users whose top-1 is the same, the paired tests of Hit@1 and NDCG@5
between the two (users paired), both sides' values and both test times (one after the other, not
alternating: compare the times only as a first reading).  Records ``<device>.<model>.merged.*`` in
``benchmarks/results/merge_check.<model>.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llm_speed  # noqa: E402  (the one owner of a record's relative command)
import machine  # noqa: E402  (the one owner of the records' device name)
import smollm2  # noqa: E402  (the one owner of the agreement of two scorings)

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("hit@1", "ndcg@5")  # each paired between the two scorings (users paired)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished DELRec run folder (trained adapters)")
    parser.add_argument("--model-name", default="smollm2", help="the records' model part")
    parser.add_argument("--device-name", default=machine.device_name(), help="the records' device")
    parser.add_argument("--out", type=Path, default=None, help="records file (default: results/merge_check.<model>.json)")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for both evaluations (a YAML value), e.g. state=WARNING")
    return parser.parse_args(argv)


def evaluate(run: str, merged: bool, extra: dict) -> dict:
    """The run's test, through ``run_delrec(load=...)``, with or without merged adapters."""
    from recbole_delrec import run_delrec
    from recbole_delrec.config import hidden_command_line

    with hidden_command_line():
        return run_delrec(load=run, config_dict={**extra, "llm_merge_adapters": merged})


def main(argv=None) -> list[dict]:
    import torch
    import yaml

    args = parse_args(argv)
    extra = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.config)}
    plain, merged = (evaluate(args.run, side, extra) for side in (False, True))
    prefix = f"{'cuda' if torch.cuda.is_available() else 'cpu'}.{args.model_name}.merged"
    values = {**smollm2.agreement(merged, plain, "plain", METRICS), **{m: merged["test_result"][m] for m in METRICS},
              "plain.test_seconds": plain["timings"]["test_seconds"],
              "test_seconds": merged["timings"]["test_seconds"]}
    command = llm_speed.recorded_command(sys.argv[1:] if argv is None else argv, __file__)
    date = datetime.date.today().isoformat()
    out = [{"metric": f"{prefix}.{key}", "value": round(float(value), 6 if "pvalue" in key else 4),
            "unit": "s" if key.endswith("seconds") else "", "device": args.device_name, "date": date,
            "command": command} for key, value in values.items()]
    from recbole_delrec.runs.artifacts import save_json

    save_json(out, args.out or RESULTS / f"merge_check.{args.model_name}.json")
    print("\n".join(f"{r['metric']}: {r['value']}" for r in out))
    return out


if __name__ == "__main__":
    main()
