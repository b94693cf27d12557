"""Where in the prompt's candidate list each model's top-1 item sits: a cheap look at
position bias from a run's per-user records (no model is run).

    python benchmarks/positions.py benchmarks/results/ml100k.smollm2.zeroshot.bf16.records.parquet \
        --name=ml100k.smollm2.zeroshot

Records ``<name>.<model>.top1_at.<k>`` (share of users whose model top-1 is listed k-th, k from
1) and ``<name>.target_at.<k>`` (the true item's share: the candidates are shuffled per user, so
about 1/C each).  A model without position bias puts its top-1 at each position about as often
as the target sits there.  The seeded order analysis (``--candidate_orders``) is the test; this
only shows where to look.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (the one owner of the records' device name)

RESULTS = Path(__file__).resolve().parent / "results"


def shares(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Share of users whose ``column`` item is listed at each candidate position."""
    positions = [list(c).index(item) for c, item in zip(frame["candidates"], frame[column])]
    return np.bincount(positions, minlength=len(frame["candidates"].iloc[0])) / len(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", help="a run's records.parquet")
    parser.add_argument("--name", required=True, help="metric prefix; results go to <name>.positions.json")
    parser.add_argument("--device-name", default=machine.device_name(), help="the records' device")
    args = parser.parse_args()
    frame = pd.read_parquet(args.records)
    figures = {f"target_at.{k + 1}": v for k, v in enumerate(shares(frame, "target"))}
    for column in (c for c in frame.columns if c.startswith("top1.")):
        figures.update({f"{column[5:]}.top1_at.{k + 1}": v for k, v in enumerate(shares(frame, column))})
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    date = datetime.date.today().isoformat()
    records = [{"metric": f"{args.name}.{k}", "value": round(float(v), 4), "unit": "share", "device": args.device_name,
                "date": date, "command": command} for k, v in figures.items()]
    (RESULTS / f"{args.name}.positions.json").write_text(json.dumps(records, indent=2) + "\n")
    print({k: round(float(v), 3) for k, v in figures.items() if k.endswith((".1", ".2", ".20"))})


if __name__ == "__main__":
    main()
