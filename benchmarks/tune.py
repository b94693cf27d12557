"""A real Ray Tune sweep of DELRec on ML-100K, recorded.

    python benchmarks/tune.py [--samples=4] [--key=value ...]

Sweeps the stage-2 settings in ``benchmarks/sweep.hyper`` (hyperopt TPE, ASHA on validation
NDCG@5), so every trial shares the cached teacher and soft prompt, and writes
``results/ml100k.tune.json``: ``ml100k.tune.trials``, ``ml100k.tune.best.valid_ndcg@5``,
``ml100k.tune.best.test_hit@1`` and ``ml100k.tune.seconds``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (the one owner of the records' device name)

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--cpus-per-trial", type=float, default=1)
    args, rest = parser.parse_known_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    from recbole_delrec.runs.artifacts import save_json
    from recbole_delrec.config import external_values
    from recbole_delrec.tune import run_sweep

    start = time.time()
    table = run_sweep(model="DELRec", dataset="ml-100k", space_file=HERE / "sweep.hyper", samples=args.samples,
                      search="hyperopt", scheduler="asha", cpus_per_trial=args.cpus_per_trial,
                      config_dict=external_values(argv=rest), output_dir=Path("saved/sweeps/ml100k-benchmark"))
    seconds = time.time() - start
    best = table[table["status"] != "ERROR"].iloc[0]
    date = datetime.date.today().isoformat()
    values = {"trials": len(table), "best.valid_ndcg@5": best["valid/ndcg@5"],
              "best.test_hit@1": best["test/hit@1"], "seconds": seconds}
    records = [{"metric": f"ml100k.tune.{k}", "value": round(float(v), 4), "unit": "s" if k == "seconds" else "",
                "device": machine.device_name(), "date": date, "command": command} for k, v in values.items()]
    save_json(records, HERE / "results" / "ml100k.tune.json")  # atomic
    print(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
