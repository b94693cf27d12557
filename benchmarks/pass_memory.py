"""How much memory one stage-2 pass takes fresh, and how fast a warm heap grows across batches.

``malloc_reuse_max_share`` bounds the process's peak: as a pass starts, the heap gives its free
memory back when the resident set plus the largest growth a pass on a warm heap has shown would
pass the bound (``recbole_delrec/runs/allocator.py``).  Two numbers decide how often that happens and what
it costs, both measured here on the product's stage-2 step (AdaLoRA, soft prompt, packed
candidates) over the same seeded batches, in one process:

* ``fresh``: the heap gives back everything free before each batch, as at a give-back: the step's
  peak resident set minus the resident set before it is the memory the pass takes fresh, and its
  time is a step's after a give-back;
* ``kept``: the same batches in the same order with nothing given back, as the product runs below
  its bound: the resident set's growth per batch (batches of many lengths fragment the heap), its
  largest growth over one warm batch (what the bound anticipates) and a step's time on a warm heap.

    python benchmarks/pass_memory.py --checkpoint_dir saved/bench-full-budget --users 96
    python benchmarks/pass_memory.py --checkpoint_dir saved --users 96 --side huge --model-name smollm2.huge_pages
        # the same with tensors of 2 MiB and more on transparent huge pages

Records: ``benchmarks/results/pass_memory.<model>.json`` (or ``--out``).  Linux only (``VmHWM``).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ab_speed  # noqa: E402  (the product's pieces, seeded prompts, its stage-2 step)
import llm_speed  # noqa: E402  (records' command and paths)
import machine  # noqa: E402  (the records' device name)

GIB = 2**30


def fresh(product, llm, soft, bench) -> tuple[list[float], list[float]]:
    """Each batch after a give-back: the GiB its pass took and its ms per prefix."""
    from recbole_delrec.evaluation.cost import StageCosts
    from recbole_delrec.runs.allocator import resident_bytes

    costs, taken, ms = StageCosts("cpu"), [], []
    for index, part in enumerate(bench.batches):
        costs.start()  # the heap gives back what it holds free; the peak is reset
        before = resident_bytes()
        ms.append(ab_speed.stage2_step(product, llm, soft, bench, part))
        costs.stop(f"batch{index}")
        taken.append(costs.peak_mb[f"batch{index}"] / 1024 - before / GIB)
        print(f"fresh batch {index}: {taken[-1]:.2f} GiB, {ms[-1]:.0f} ms per prefix", flush=True)
    return taken, ms


def kept(product, llm, soft, bench) -> tuple[list[float], list[float]]:
    """The same batches on a heap that keeps what they free: resident GiB after each, ms per prefix."""
    from recbole_delrec.runs.allocator import release_free_memory, resident_bytes

    release_free_memory()
    resident, ms = [], []
    for index, part in enumerate(bench.batches):
        ms.append(ab_speed.stage2_step(product, llm, soft, bench, part))
        resident.append(resident_bytes() / GIB)
        print(f"kept batch {index}: resident {resident[-1]:.2f} GiB, {ms[-1]:.0f} ms per prefix", flush=True)
    return resident, ms


def records(taken, fresh_ms, resident, kept_ms, key: str, command: str) -> list[dict]:
    """The records; a warm step's time leaves out the first kept batch (it faults its pages in)."""
    warm = statistics.median(kept_ms[1:] or kept_ms)
    values = {
        "fresh.pass_gib.median": (statistics.median(taken), "GiB"),
        "fresh.pass_gib.max": (max(taken), "GiB"),
        "fresh.stage2_ms_per_prefix": (statistics.median(fresh_ms), "ms"),
        "kept.stage2_ms_per_prefix": (warm, "ms"),
        "kept.resident_gib.first": (resident[0], "GiB"),
        "kept.resident_gib.last": (resident[-1], "GiB"),
        "kept.growth_gib_per_batch": ((resident[-1] - resident[0]) / max(len(resident) - 1, 1), "GiB"),
        "kept.growth_gib.max": (max((b - a for a, b in zip(resident, resident[1:])), default=0.0), "GiB"),
        "fresh_over_kept.stage2": (statistics.median(fresh_ms) / warm, "x"),
    }
    date, device = time.strftime("%Y-%m-%d"), machine.device_name("cpu")
    return [{"metric": f"{key}{name}", "value": float(f"{value:.4g}"), "unit": unit, "device": device, "date": date,
             "command": command} for name, (value, unit) in values.items()]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = ab_speed.parse_args(argv)
    ab_speed.use_side(args.side)  # --side huge: PyTorch's transparent huge pages, before the first tensor
    product, llm, soft, benches = ab_speed.setup(args)
    bench = benches[8]  # the stage-2 batch
    taken, fresh_ms = fresh(product, llm, soft, bench)
    resident, kept_ms = kept(product, llm, soft, bench)
    model_name = args.model_name or llm_speed.model_slug(args.llm_path)
    out = records(taken, fresh_ms, resident, kept_ms, f"cpu.{model_name}.pass_memory.",
                  llm_speed.recorded_command(argv, __file__))
    path = args.out or llm_speed.REPO / "benchmarks" / "results" / f"pass_memory.{model_name}.json"
    llm_speed.import_product(False).save_json(out, path)  # atomic
    for r in out:
        print(f"{r['metric']}: {r['value']} {r['unit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
