"""Before and after, measured side by side: the attention split and the CPU allocator.

Speed on a shared 2-core machine drifts by 10% or more within minutes, more than either change
saves, so both sides are measured alternately, never in two separate sessions:

* **attention**, inside one process, alternating in rounds: transformers' ``sdpa`` over the whole
  packed row's mask (``masked``, the scorer before the split) against the product's
  :data:`~recbole_delrec.llm.attention.PROMPT_SPLIT` (``split``), on a stage-2 step (forward and
  backward, 8 prefixes, AdaLoRA on) and on scoring (no grad, 8 prompts per batch);
* **allocator**, one process per side (how ``malloc`` keeps memory is process state: a process
  that switched back and forth measured neither side), alternating: glibc's defaults (``mmap``:
  large blocks mapped fresh every batch) against the product's ``malloc_reuse`` (``heap``), and
  (``--sides heap huge``) ``heap`` against ``heap`` with PyTorch's transparent huge pages for
  tensors of 2 MiB and more (``huge``: ``THP_MEM_ALLOC_ENABLE=1``, one page fault per 2 MiB
  instead of 512), on the split kernel's stage-2 step and scoring with 8 and with 32 prompts per
  batch (DELRec's ``eval_batch_size: 640`` is 32 users).

Each measure runs once untimed and then ``--repeats`` times in a row: a run repeats the same step
hundreds of times, and that steady state (the heap already grown, or the fresh pages mapped
again) is what it pays.  Each figure is the median of every timed run of its side (repeats,
rounds and processes together): a single pass can take twice as long when the machine's
neighbours are busy.  Everything is the product's code, set up as
``benchmarks/llm_speed.py`` sets it up (its loaders, prompts, scorer, ``set_speed_options``,
``add_adalora``).  Records ``<device>.<model>.ab.<change>.<side>.<measure>`` (ms) and
``<device>.<model>.ab.<change>.speedup.<measure>`` (before / after)::

    python benchmarks/ab_speed.py --checkpoint_dir saved
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llm_speed  # noqa: E402  (the benchmark beside this one: loaders, prompts, timing, records)
import machine  # noqa: E402  (the one owner of the records' device name)

#: Scoring batches timed: the stage-2 batch (8) and DELRec's evaluation batch (32 users).
SCORING_BATCHES = (8, 32)
#: What each kernel is measured on in a process.
MEASURED = {"masked": ("stage2_ms_per_prefix", "scoring8_ms_per_user"),
            "split": ("stage2_ms_per_prefix", "scoring8_ms_per_user", "scoring32_ms_per_user")}
#: The allocator's sides: a child process runs with (``heap``) or without (``mmap``) ``malloc_reuse``,
#: or with it and PyTorch's transparent huge pages (``huge``).
ALLOCATOR_SIDES = ("mmap", "heap", "huge")
#: Each change the allocator sides measure: its (before, after) sides.
ALLOCATOR_CHANGES = {"malloc_reuse": ("mmap", "heap"), "huge_pages": ("heap", "huge")}
#: PyTorch's switch for transparent huge pages: read once, at the process's first CPU tensor.
THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def model_parser(description: str) -> argparse.ArgumentParser:
    """The options of every side-by-side script: the LLM, where its converted weights live, key names."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--llm_path", "--llm-path", default=llm_speed.DEFAULT_LLM)
    parser.add_argument("--llm_gguf_file", "--llm-gguf-file")
    parser.add_argument("--checkpoint_dir", "--checkpoint-dir", type=Path, default=Path("saved"))
    parser.add_argument("--model-name", help="model slug in metric keys (default: from --llm_path)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = model_parser(__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=32, help="scored users (a multiple of 32)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per process")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each measure in a row, after one untimed")
    parser.add_argument("--processes", type=int, default=2, help="processes per allocator side, alternating")
    parser.add_argument("--out", type=Path, help="JSON records (default: benchmarks/results/ab_speed.<model>.json)")
    parser.add_argument("--sides", nargs=2, choices=ALLOCATOR_SIDES, default=["mmap", "heap"],
                        help="the allocator's two sides, before and after (mmap heap, or heap huge)")
    parser.add_argument("--side", choices=ALLOCATOR_SIDES,
                        help="run one side in this process (the children's option; pass_memory.py: heap or huge)")
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if tuple(args.sides) not in ALLOCATOR_CHANGES.values():
        parser.error(f"--sides {' '.join(args.sides)}: measure one of {list(ALLOCATOR_CHANGES.values())}")
    return args


def speed_arguments(args) -> list[str]:
    """``llm_speed.py``'s arguments for the same model, users, allocator side and (if given) dtype."""
    return ([f"--llm_path={args.llm_path}", "--checkpoint_dir", str(args.checkpoint_dir), "--device", "cpu",
             "--users", str(args.users), "--batch", "8"]
            + (["--llm_gguf_file", args.llm_gguf_file] if args.llm_gguf_file else [])
            + (["--model-name", args.model_name] if args.model_name else [])
            + (["--no-malloc-reuse"] if args.side == "mmap" else [])
            + (["--dtype", args.dtype] if getattr(args, "dtype", None) else []))


def use_side(side: str | None) -> None:
    """This process's huge-page setting (``huge`` or not), before its first CPU tensor: PyTorch
    reads it once, at that tensor."""
    os.environ[THP_VARIABLE] = "1" if side == "huge" else "0"


def huge_pages_active() -> bool:
    """Whether PyTorch puts this process's CPU tensors of 2 MiB and more on huge pages: it then
    aligns them to the page (otherwise to 64 bytes)."""
    return all(torch.empty(2**21, dtype=torch.uint8).data_ptr() % 4096 == 0 for _ in range(4))


def setup(args):
    """The product's pieces, the LLM with AdaLoRA on it, the soft prompt and the seeded prompts."""
    if huge_pages_active() != (args.side == "huge"):
        raise RuntimeError(f"side {args.side}: transparent huge pages are {'off' if args.side == 'huge' else 'on'}; "
                           f"{THP_VARIABLE} was read before this process's side was set")
    speed_args = llm_speed.parse_args(speed_arguments(args))
    product = llm_speed.import_product(False)
    settings = llm_speed.product_settings(product)
    device = torch.device("cpu")
    llm_speed.configure(speed_args, product, settings, device)  # malloc_reuse as the product's start-up, unless mmap
    titles, sequences = llm_speed.load_ml100k(llm_speed.ml100k_dir(speed_args), product.normalize_title)
    backbone, _ = llm_speed.targets(product, speed_args, device)
    data = llm_speed.build_prompts(product, backbone, titles, sequences, settings, args.seed)
    model = backbone.model
    product.set_speed_options(model, settings["llm_attention"], speed_args.fused_gelu, False)
    soft = product.SoftPrompt.from_vocabulary(settings["n_soft_tokens"], model.get_input_embeddings().weight, args.seed)
    total, _ = llm_speed.adalora_schedule(settings)
    llm = product.add_adalora(model, settings["adalora"], total, product.family_of(model.config).task_type)
    benches = {b: llm_speed.timed_users(product, data, settings, max(args.users, b), b, args.seed, device)
               for b in SCORING_BATCHES}  # each at least one full batch
    return product, llm, soft, benches


def stage2_step(product, llm, soft, bench, part) -> float:
    """One stage-2 step on ``part`` of ``bench`` (forward, loss, backward); its ms per prefix."""
    llm.train()
    begin = time.perf_counter()
    scores = bench.scorer(llm.get_base_model(), soft, part.batch, part.candidates)
    (F.cross_entropy(scores, part.labels) + product.orthogonal_penalty(llm)).backward()
    llm.zero_grad(set_to_none=True)
    return (time.perf_counter() - begin) * 1e3 / len(part.prompts)


def timers(product, llm, soft, benches) -> dict[str, Callable[[], float]]:
    """Each measure: a call that runs it once and returns its ms per prefix or per user."""
    base = llm.get_base_model()

    def train_step() -> float:
        return stage2_step(product, llm, soft, benches[8], benches[8].batches[0])

    def scoring(bench) -> Callable[[], float]:
        def run() -> float:
            llm.eval()
            begin = time.perf_counter()
            with torch.no_grad():
                for part in bench.batches:
                    bench.scorer(base, soft, part.batch, part.candidates)
            return (time.perf_counter() - begin) * 1e3 / sum(len(part.prompts) for part in bench.batches)
        return run

    return {"stage2_ms_per_prefix": train_step, **{f"scoring{b}_ms_per_user": scoring(benches[b]) for b in SCORING_BATCHES}}


def child(args) -> dict[str, dict[str, list[float]]]:
    """One process: both kernels alternating in rounds, under this process's allocator side."""
    from recbole_delrec.llm.attention import PROMPT_SPLIT

    product, llm, soft, benches = setup(args)
    run = timers(product, llm, soft, benches)
    kernels = {"masked": "sdpa", "split": PROMPT_SPLIT}
    times: dict[str, dict[str, list[float]]] = {k: {m: [] for m in MEASURED[k]} for k in kernels}
    for round_ in range(args.rounds):
        for kernel, name in kernels.items():
            llm.get_base_model().set_attn_implementation(name)
            for measure in MEASURED[kernel]:
                run[measure]()  # untimed: the step's steady state, as a run repeats it hundreds of times
                times[kernel][measure] += [run[measure]() for _ in range(args.repeats)]
        print(f"{args.side} round {round_}: " + "; ".join(f"{k}.{m} {v[-1]:.0f}" for k, ms in times.items()
                                                         for m, v in ms.items()), flush=True)
    return times


def run_children(args, argv: list[str]) -> dict[str, list[dict]]:
    """``--processes`` child processes per allocator side, alternating; each one's timings."""
    results: dict[str, list[dict]] = {side: [] for side in args.sides}
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.processes):
            for side in args.sides:
                out = Path(folder) / f"{side}{index}.json"
                subprocess.run([sys.executable, __file__, *argv, "--side", side, "--child-out", str(out)], check=True)
                results[side].append(json.loads(out.read_text()))
    return results


def summary(results: dict[str, list[dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """Medians over every timed run of a side (repeats, rounds, processes): the attention sides
    from the product's (``heap``) processes, the allocator sides from the split kernel's measures."""
    def median(side: str, kernel: str, measure: str) -> float:
        return statistics.median(ms for r in results[side] for ms in r[kernel][measure])

    sides = tuple(results)
    change = next(name for name, pair in ALLOCATOR_CHANGES.items() if pair == sides)
    return {
        "prompt_split": {k: {m: median("heap", k, m) for m in MEASURED["masked"]} for k in ("masked", "split")},
        change: {s: {m: median(s, "split", m) for m in MEASURED["split"]} for s in sides},
    }


def records(result, key: str, command: str, device_name: str) -> list[dict]:
    out = []
    date = time.strftime("%Y-%m-%d")

    def add(metric: str, value: float, unit: str) -> None:
        out.append({"metric": metric, "value": float(f"{value:.5g}"), "unit": unit, "device": device_name,
                    "date": date, "command": command})

    for change, by_side in result.items():
        before, after = by_side.values()
        for side, values in by_side.items():
            for measure, ms in values.items():
                add(f"{key}ab.{change}.{side}.{measure}", ms, "ms")
        for measure in before:
            add(f"{key}ab.{change}.speedup.{measure.rsplit('_ms_', 1)[0]}", before[measure] / after[measure], "x")
    return out


def save(result, args, argv: list[str], script: str, stem: str) -> Path:
    """``result``'s records, printed and written to ``--out`` or ``benchmarks/results/<stem>.<model>.json``."""
    model_name = args.model_name or llm_speed.model_slug(args.llm_path)
    out = records(result, f"cpu.{model_name}.", llm_speed.recorded_command(argv, script),
                  machine.device_name("cpu"))
    path = args.out or llm_speed.REPO / "benchmarks" / "results" / f"{stem}.{model_name}.json"
    llm_speed.import_product(False).save_json(out, path)  # atomic
    for r in out:
        print(f"{r['metric']:<60} {r['value']:>10} {r['unit']}")
    print(f"{len(out)} records -> {path}")
    return path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.side:
        use_side(args.side)
        args.child_out.write_text(json.dumps(child(args)))
        return 0
    save(summary(run_children(args, argv)), args, argv, __file__, "ab_speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
