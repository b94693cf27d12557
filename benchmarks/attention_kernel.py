"""PyTorch's CPU flash-attention kernel alone, at SmolLM2's shapes: what its calls cost.

    python benchmarks/attention_kernel.py

On a CPU without AMX the attention kernel takes ~42% of a SmolLM2 scoring batch at ~8% of the
bf16 matmul peak (BENCHMARKS.md), so this asks whether a different cut of the same work pays:
1. a causal call against a full one of the same length (does the kernel skip the masked half?),
   and the full call's rate in query-key scores per second;
2. the prompt's causal attention split into blocks of queries, each attending unmasked to the
   blocks before it and causally to itself, the parts merged exactly by the log-sum-exp the
   kernel returns (half the scores of a full call, in smaller calls); its largest deviation from
   the causal call is recorded too;
3. float32 inputs against bf16, on the prompt's causal call and on the titles' masked call
   (``--titles`` title tokens against the prompt's and their own keys, each title seeing the
   prompt and itself, through ``scaled_dot_product_attention`` with a boolean mask, as the
   product calls it).
Each figure is the median of ``--repeats`` timed runs (after one untimed) of ``--layers`` calls,
one per layer, of ``--batch`` prompts x ``--heads`` heads of ``--head-dim``; one process, no
model.  Records ``cpu.attention.*`` (ms per pass over the layers) in
``benchmarks/results/attention_kernel.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llm_speed  # noqa: E402  (the one owner of a record's relative command)
import machine  # noqa: E402  (the one owner of the records' device name)

RESULTS = Path(__file__).resolve().parent / "results"
flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="prompts per call (the product's prompts_per_forward)")
    parser.add_argument("--heads", type=int, default=9, help="query heads (SmolLM2: 9)")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=30, help="calls per timed pass (SmolLM2: 30 layers)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[250, 500, 1000], help="causal against full")
    parser.add_argument("--prompt", type=int, default=500, help="prompt tokens (SmolLM2's LSR prompts: ~500)")
    parser.add_argument("--titles", type=int, default=212, help="title tokens after the prompt (20 titles)")
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4, 6], help="query blocks of the split")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device-name", default=machine.device_name(), help="the records' device")
    parser.add_argument("--out", type=Path, default=RESULTS / "attention_kernel.json")
    return parser.parse_args(argv)


def merge(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Attention over the union of disjoint key sets from each set's (output, log-sum-exp)."""
    lse = torch.logsumexp(torch.stack([p[1] for p in parts]), dim=0)
    out = sum(o.float() * (l - lse).exp().unsqueeze(-1) for o, l in parts)
    return out.to(parts[0][0].dtype)


def block_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocks: int) -> torch.Tensor:
    """Causal attention as ``blocks`` blocks of queries: unmasked against the keys before the block,
    causal against the block's own, merged exactly (half the scores of a full call)."""
    length, step = q.shape[2], -(-q.shape[2] // blocks)
    outs = []
    for a in range(0, length, step):
        b = min(a + step, length)
        parts = [flash(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], 0.0, True)]
        if a:
            parts.append(flash(q[:, :, a:b], k[:, :, :a], v[:, :, :a], 0.0, False))
        outs.append(merge(parts) if a else parts[0][0])
    return torch.cat(outs, dim=2)


def title_mask(batch: int, prompt: int, titles: int, per_title: int = 10) -> torch.Tensor:
    """``(B, 1, titles, prompt + titles)``, True = attend: every title token sees the prompt and
    the tokens of its own title up to itself."""
    mask = torch.zeros(batch, 1, titles, prompt + titles, dtype=torch.bool)
    mask[..., :prompt] = True
    for start in range(0, titles, per_title):
        end = min(start + per_title, titles)
        own = torch.ones(end - start, end - start, dtype=torch.bool).tril()
        mask[:, :, start:end, prompt + start:prompt + end] = own
    return mask


def timed(fn: Callable[[], object], layers: int, repeats: int) -> float:
    """Median ms of ``repeats`` passes of ``layers`` calls, after one untimed pass."""
    runs = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        for _ in range(layers):
            fn()
        if i:
            runs.append((time.perf_counter() - start) * 1e3)
    return statistics.median(runs)


def measure(args) -> dict[str, float]:
    """Every figure of the module docstring, keyed as recorded (after ``cpu.attention.``)."""
    shape = (args.batch, args.heads)
    rand = lambda length, dtype: torch.randn(*shape, length, args.head_dim, dtype=dtype)  # noqa: E731
    run = lambda fn: timed(fn, args.layers, args.repeats)  # noqa: E731
    out: dict[str, float] = {}
    for length in args.lengths:
        q, k, v = (rand(length, torch.bfloat16) for _ in range(3))
        out[f"causal_ms.L{length}"] = run(lambda: flash(q, k, v, 0.0, True))
        out[f"full_ms.L{length}"] = run(lambda: flash(q, k, v, 0.0, False))
        scores = args.batch * args.heads * length * length * args.layers
        out[f"full_scores_per_second.L{length}"] = scores / out[f"full_ms.L{length}"] * 1e3
    q, k, v = (rand(args.prompt, torch.bfloat16) for _ in range(3))
    reference = flash(q, k, v, 0.0, True)[0].float()
    for blocks in args.blocks:
        out[f"block_split_ms.blocks{blocks}"] = run(lambda: block_causal(q, k, v, blocks))
        out[f"block_split_max_abs_diff.blocks{blocks}"] = float((block_causal(q, k, v, blocks).float() - reference).abs().max())
    mask = title_mask(args.batch, args.prompt, args.titles)
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        qp, kp, vp = (rand(args.prompt, dtype) for _ in range(3))
        qt, kt, vt = rand(args.titles, dtype), rand(args.prompt + args.titles, dtype), rand(args.prompt + args.titles, dtype)
        out[f"{name}.prompt_causal_ms"] = run(lambda: flash(qp, kp, vp, 0.0, True))
        out[f"{name}.titles_masked_ms"] = run(lambda: F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask))
    return out


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    torch.manual_seed(0)
    values = measure(args)
    command = llm_speed.recorded_command(sys.argv[1:] if argv is None else argv, __file__)
    date = datetime.date.today().isoformat()
    unit = lambda key: "ms" if "_ms" in key else ("scores/s" if "per_second" in key else "")  # noqa: E731
    out = [{"metric": f"cpu.attention.{key}", "value": round(value, 6 if "diff" in key else 1), "unit": unit(key),
            "device": args.device_name, "date": date, "command": command} for key, value in values.items()]
    from recbole_delrec.runs.artifacts import save_json

    save_json(out, args.out)
    print("\n".join(f"{r['metric']}: {r['value']} {r['unit']}" for r in out))
    return out


if __name__ == "__main__":
    main()
