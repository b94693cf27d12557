"""Seeds, paired tests, breakdowns and candidate-order sensitivity, recorded.

    python benchmarks/evidence.py --name=ml100k.evidence --dataset=ml-100k --seeds=3 --candidate_orders=5 [--key=value ...]

Runs the whole pipeline once per seed (``recbole_delrec.evaluation.seeds``), the order analysis
on the first seed's run folder, then the summary, and records its figures in
``benchmarks/results/<name>.json`` (keys: ``seeds``, ``<model>.<metric>.mean`` / ``.ci95``,
``delrec_vs_<model>.<metric>.pvalue`` (and ``.pvalue_holm``), ``buckets.<bucket>.users`` / ``.<model>.<metric>``,
``order.*``, ``<model>.test_ms_per_user``, ``delrec.stage2.peak_rss_gib``).
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
UNITS = {"ms_per_user": "ms", "peak_rss_gib": "GiB"}


def rounded(key: str, value: float) -> float:
    """Four decimals, but p-values to three significant digits (1.4e-63 must not read 0.0)."""
    return float(f"{value:.3g}") if key.endswith(("pvalue", "pvalue_holm")) else round(float(value), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="metric prefix and file name, e.g. ml100k.evidence")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", default="3", help="a count or a list, as run_delrec.py --seeds")
    parser.add_argument("--candidate_orders", type=int, default=5, help="orders of the order analysis")
    parser.add_argument("--device-name", default=machine.device_name(), help="the records' device")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files, as run_delrec.py")
    args, rest = parser.parse_known_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    sys.argv = sys.argv[:1] + rest + [f"--seeds={args.seeds}"]  # run_delrec runs each seed
    from recbole_delrec.evaluation.order import analyse_run
    from recbole_delrec import run_delrec
    from recbole_delrec.evaluation.summary import evidence_records, summarise
    from recbole_delrec.runs.artifacts import save_json

    files = args.config_files.split() if args.config_files else None
    first = run_delrec(dataset=args.dataset, config_file_list=files)
    analyse_run(first["run_dirs"][0], args.candidate_orders, dataset=args.dataset, config_file_list=files)
    summary = summarise(first["run_dirs"], first["summary_dir"])  # now with the order analysis
    date = datetime.date.today().isoformat()
    records = [{"metric": f"{args.name}.{key}", "value": rounded(key, value),
                "unit": next((u for suffix, u in UNITS.items() if key.endswith(suffix)), ""),
                "device": args.device_name, "date": date, "command": command}
               for key, value in evidence_records(summary).items() if value is not None]
    path = save_json(records, RESULTS / f"{args.name}.json")  # atomic
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
