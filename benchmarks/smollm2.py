"""SmolLM2-135M-Instruct on ML-100K before any training: load times, zero-shot, popularity, bf16.

    python benchmarks/smollm2.py [--checkpoint_dir=saved/smollm2-bench] [--skip-fp32]

1. Load times: the GGUF file dequantized into a fresh folder (first run on a machine), then
   loaded from that cached ``save_pretrained`` folder (every later run).
2. Zero-shot: SmolLM2 with no soft prompt and no training (``n_soft_tokens: 0``,
   ``delrec_tasks: []``, ``epochs: 0``), prompt and scorer only, beside the popularity floor
   (``baselines: [Pop]``) and the teacher, on the default protocol's candidates.
3. The fast path's accuracy: the same zero-shot scoring in float32 on the same users and
   candidates (``candidates_path``): the share of users whose top-1 is the same, and the
   paired test of Hit@1 between the two (users paired).

Records go to ``benchmarks/results/ml100k.smollm2.json``; the runs' per-user records are
copied beside it (``ml100k.smollm2.zeroshot.<dtype>.records.parquet``).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (the one owner of the records' device name)

RESULTS = Path(__file__).resolve().parent / "results"
ZERO_SHOT = {"n_soft_tokens": 0, "delrec_tasks": [], "epochs": 0, "baselines": ["Pop"]}


def load_times(device: str) -> dict[str, float]:
    """Seconds to load SmolLM2 from its GGUF file (dequantizing) and from the cached folder."""
    from recbole_delrec.llm.loading import load_backbone

    with tempfile.TemporaryDirectory() as folder:
        settings = {"llm_path": "smollm2-135m-instruct", "llm_gguf_file": None, "llm_dtype": "auto",
                    "device": device, "scratch_llm": {}, "checkpoint_dir": folder}
        seconds = []
        for _ in range(2):
            start = time.time()
            load_backbone(settings, [])
            seconds.append(time.time() - start)
    return {"gguf_load_seconds": seconds[0], "cached_load_seconds": seconds[1]}


def zero_shot(checkpoint_dir: str, **extra) -> dict:
    """One zero-shot run (Pop and the teacher beside it) through the plugin's own entry point."""
    from recbole_delrec import run_delrec
    from recbole_delrec.config import hidden_command_line

    with hidden_command_line():
        return run_delrec(model="DELRec", dataset="ml-100k",
                          config_dict={**ZERO_SHOT, "checkpoint_dir": checkpoint_dir, **extra})


def agreement(fast: dict, reference: dict, reference_name: str = "fp32",
              metrics: tuple[str, ...] = ("hit@1",)) -> dict[str, float]:
    """Top-1 agreement and the paired test of each metric of ``fast`` against ``reference``: two
    runs' results (``run_delrec``'s) on the same users and candidates."""
    import pandas as pd

    from recbole_delrec.evaluation.summary import compare_runs

    a, b = pd.read_parquet(fast["records"]), pd.read_parquet(reference["records"])
    merged = a.merge(b, on="user", suffixes=("_fast", "_reference"))
    tests = compare_runs([Path(reference["run_dir"])], [Path(fast["run_dir"])])
    return {"top1_agreement": float((merged["top1.delrec_fast"] == merged["top1.delrec_reference"]).mean()),
            **{f"{metric}.pvalue": float(tests[metric]["pvalue"]) for metric in metrics},
            **{f"{reference_name}.{metric}": reference["test_result"][metric] for metric in metrics},
            "users": float(len(merged))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_dir", default="saved/smollm2-bench")
    parser.add_argument("--device-name", default=machine.device_name(), help="the records' device")
    parser.add_argument("--skip-fp32", action="store_true", help="leave out the float32 comparison")
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    date = datetime.date.today().isoformat()
    out: list[dict] = []

    def record(metric: str, value: float, unit: str = "") -> None:
        out.append({"metric": metric, "value": round(float(value), 4), "unit": unit,
                    "device": args.device_name, "date": date, "command": command})

    for key, value in load_times("cpu").items():
        record(f"ml100k.smollm2.{key}", value, "s")
    bf16 = zero_shot(args.checkpoint_dir)
    for row, prefix in (("delrec", "ml100k.smollm2.zeroshot"), ("pop", "ml100k.popularity"), ("teacher", "ml100k.smollm2.zeroshot.teacher")):
        for metric, value in bf16["rows"][bf16["row_keys"][row]].items():
            record(f"{prefix}.{metric}", value)
    record("ml100k.smollm2.zeroshot.test_seconds", bf16["timings"]["test_seconds"], "s")
    _keep_records(bf16, "bf16")
    if not args.skip_fp32:
        fp32 = zero_shot(args.checkpoint_dir, llm_dtype="float32", candidates_path=bf16["run_dir"])
        _keep_records(fp32, "fp32")
        for key, value in agreement(bf16, fp32).items():
            record(f"cpu.smollm2.bf16.{key}", value)
        record("ml100k.smollm2.zeroshot.fp32.test_seconds", fp32["timings"]["test_seconds"], "s")
    from recbole_delrec.runs.artifacts import save_json

    save_json(out, RESULTS / "ml100k.smollm2.json")
    print("\n".join(f"{r['metric']}: {r['value']}" for r in out))


def _keep_records(result: dict, dtype: str) -> None:
    """The run's per-user records beside the results (small: one row per test user)."""
    shutil.copyfile(result["records"], RESULTS / f"ml100k.smollm2.zeroshot.{dtype}.records.parquet")


if __name__ == "__main__":
    main()
