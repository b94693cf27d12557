"""Peak GPU memory of DELRec's LLM steps at Flan-T5 sizes, estimated on a machine without a GPU.

Issue 7 asks whether stage 2 at Flan-T5-XL fits a 24 GB card, and what each memory option
costs.  ``llm_speed.py`` measures that with ``torch.cuda.max_memory_allocated`` where a GPU is at
hand; this script answers the same question from the same code where none is:

1. **What is counted.**  A ``TorchDispatchMode`` sees every tensor that an operator returns
   (forward, backward, optimizer) and keeps, per storage, its size rounded up to 512 bytes as
   CUDA's caching allocator rounds it, until the storage is freed.  The peak of that sum is what
   ``max_memory_allocated`` reports: weights, optimizer state, gradients, activations kept for
   backward and transients.  Like it, it leaves out the CUDA context, cuBLAS workspaces and
   allocator fragmentation (reserved but unallocated memory).
2. **What runs.**  ``llm_speed.py``'s own stage-1 step, stage-2 step (AdaLoRA through the
   product's ``add_adalora``/``allocate_ranks``) and the product's candidate scorer, on the same
   real ML-100K prompts (real T5 vocabulary), in bf16, two steps each (the second holds the
   optimizer's state), at the size's full width but with 1, 2 and 3 layers in encoder and decoder.
3. **Depth.**  Every layer keeps the same activations and adds the same weights, so each peak is
   ``a + b * layers``.  The fit over the measured depths (its largest residual is printed and
   recorded) is evaluated at the size's own depth (24 for XL).  ``--check`` also measures the full
   depth and records the extrapolation's error (practical for small and base).
4. **Attention as a GPU runs it.**  On CUDA, ``sdpa`` sends T5's attention (an additive bias, no
   causal flag) to the memory-efficient fused kernel, which keeps q, k, v, the bias, the output and
   a float32 log-sum-exp for backward and recomputes the probabilities.  On a CPU, sdpa in training
   (dropout) falls back to the math path, which keeps the (B, H, L, L) probabilities in float32 in
   every layer: a GPU never allocates those.  So the script runs sdpa through :class:`FusedAttentionMemory`, which
   keeps exactly the fused kernel's set and recomputes the rest in backward, head by head.  (The
   kernel's attention dropout keeps only a random seed; the emulation leaves it out.)
   ``--attention eager`` measures the eager path, which keeps the probabilities on every device.
5. **Dropout as a GPU runs it.**  On CUDA, ``F.dropout`` is the fused ``native_dropout``, which keeps
   a 1-byte boolean mask; on a CPU it is a composite that keeps the mask in the input's dtype (2
   bytes in bf16).  The script runs dropout through ``torch.native_dropout``, as CUDA does.

The model is set up as DELRec sets it up (``set_speed_options``: attention kernel, the fused GELU
of ``fused_gelu``, gradient checkpointing).

Records: ``<size>.estimate[.eager][.gc][.gelu_new][.b<batch>].<stage1|stage2|scoring>.peak_gib`` and
``...fit_max_residual_gib`` (``device: cpu-<N>core``; ``.b<batch>`` only when the batch is not 8,
the batch of the issue's figures); with ``--breakdown`` also ``...stage2.per_layer_mib.<operator>``:
what one more layer adds to stage 2's peak, by the operator that produced it.  See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import shlex
import sys
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import llm_speed
import machine

#: CUDA's caching allocator hands out multiples of this many bytes.
BLOCK = 512
STAGES = ("stage1", "stage2", "scoring")


# ---------------------------------------------------------------------------- counting
class PeakMemory(TorchDispatchMode):
    """Bytes of live tensor storages (block-rounded), and their peak since :meth:`reset_peak`.

    ``at_peak`` splits the peak by the operator that made each storage (``weights`` for what
    existed before), which is what ``--breakdown`` reports.
    """

    def __init__(self, *existing) -> None:
        super().__init__()
        self.sizes: dict[int, tuple[int, str]] = {}
        self.current = self.peak = 0
        self.by_op: collections.Counter[str] = collections.Counter()
        self.at_peak: collections.Counter[str] = collections.Counter()
        self.track(*existing)

    def track(self, *objects) -> None:
        """Count storages made before the mode was entered: modules' weights, input tensors."""
        for obj in objects:
            tensors = [*obj.parameters(), *obj.buffers()] if isinstance(obj, torch.nn.Module) else tree_flatten(obj)[0]
            for tensor in tensors:
                self._add(tensor)

    def reset_peak(self) -> None:
        self.peak = self.current
        self.at_peak = self.by_op.copy()

    def _add(self, tensor, op: str = "weights") -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self.sizes:  # views and in-place results share a counted storage
            return
        size = -(-storage.nbytes() // BLOCK) * BLOCK
        self.sizes[key] = (size, op)
        self.current += size
        self.by_op[op] += size
        if self.current > self.peak:
            self.peak = self.current
            self.at_peak = self.by_op.copy()
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        size, op = self.sizes.pop(key, (0, ""))
        self.current -= size
        self.by_op[op] -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            self._add(tensor, func.__name__.split(".")[0])
        return out


# ---------------------------------------------------------------------------- kernels as on a GPU
class FusedAttentionMemory(torch.autograd.Function):
    """Attention that keeps for backward what CUDA's memory-efficient kernel keeps.

    Saved: q, k, v, the additive bias, the output and a float32 log-sum-exp (B, H, Lq); the
    probabilities are recomputed in backward, a few heads at a time, as the kernel does by tiles.
    """

    HEADS_PER_CHUNK = 4

    @staticmethod
    def forward(ctx, query, key, value, bias, scale):
        with torch.no_grad():
            out, lse = _attention(query, key, value, bias, scale)
        ctx.scale = scale
        ctx.save_for_backward(query, key, value, bias, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, bias, _, _ = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        grads = [torch.zeros_like(t) if need else None for t, need in zip((query, key, value), needs)]
        heads = query.shape[1]
        for start in range(0, heads, FusedAttentionMemory.HEADS_PER_CHUNK):
            part = slice(start, start + FusedAttentionMemory.HEADS_PER_CHUNK)
            with torch.enable_grad():
                leaves = [t[:, part].detach().requires_grad_(need) for t, need in zip((query, key, value), needs)]
                chunk_bias = None if bias is None else bias[:, part] if bias.shape[1] == heads else bias
                out, _ = _attention(*leaves, chunk_bias, ctx.scale)
                wanted = [t for t in leaves if t.requires_grad]
                found = iter(torch.autograd.grad(out, wanted, grad_out[:, part]))
            for grad, leaf in zip(grads, leaves):
                if leaf.requires_grad:
                    grad[:, part] = next(found)
        return (*grads, None, None)


def _attention(query, key, value, bias, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale + bias) v in (at least) float32, and each query row's log-sum-exp."""
    acc = torch.promote_types(query.dtype, torch.float32)
    scores = (query.to(acc) @ key.to(acc).transpose(-2, -1)) * scale
    if bias is not None:
        scores = scores + bias
    lse = scores.logsumexp(-1, keepdim=True)
    return ((scores - lse).exp() @ value.to(acc)).to(query.dtype), lse.squeeze(-1)


def fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Stands in for ``F.scaled_dot_product_attention`` with the fused kernel's memory."""
    if is_causal or enable_gqa or (attn_mask is not None and attn_mask.dtype == torch.bool):
        raise NotImplementedError("the emulation covers T5's case: an additive float bias, no causal flag, no GQA")
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return FusedAttentionMemory.apply(query, key, value, attn_mask, scale)


def fused_dropout(input, p=0.5, training=True, inplace=False):
    """Stands in for ``F.dropout`` with CUDA's fused kernel: it keeps a boolean mask."""
    if not training or p == 0:
        return input
    return torch.native_dropout(input, p, True)[0]


@contextlib.contextmanager
def gpu_kernels(attention: str):
    """Dropout, and for ``sdpa`` attention, with the memory of their CUDA kernels (module docstring)."""
    functional = torch.nn.functional
    originals = functional.scaled_dot_product_attention, functional.dropout
    functional.dropout = fused_dropout
    if attention == "sdpa":
        functional.scaled_dot_product_attention = fused_sdpa
    try:
        yield
    finally:
        functional.scaled_dot_product_attention, functional.dropout = originals


def check_emulation() -> float:
    """Largest difference of output and gradients between the emulation and PyTorch's sdpa."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 6, 9, 8, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, 6, 9, 9, generator=gen, dtype=torch.float64)
    outs = []
    for fn in (torch.nn.functional.scaled_dot_product_attention, fused_sdpa):
        out = fn(q, k, v, attn_mask=bias, scale=0.5)
        outs.append([out, *torch.autograd.grad(out.square().sum(), (q, k, v))])
    return max(float((a - b).detach().abs().max()) for a, b in zip(*outs))


# ---------------------------------------------------------------------------- one depth
def measure_depth(size: str, layers: int, ctx: SimpleNamespace, args) -> dict:
    """Peak GiB of stage 1, stage 2 and scoring for ``size`` cut to ``layers`` layers.

    ``stage2_by_op``: stage 2's peak split by producing operator (bytes).
    """
    device = torch.device("cpu")
    model = llm_speed.build_model(size, torch.bfloat16, device, layers)
    ctx.product.set_speed_options(model, args.attention, args.fused_gelu, args.gradient_checkpointing)
    soft_prompt = ctx.product.SoftPrompt.from_vocabulary(ctx.settings["n_soft_tokens"],
                                                         model.get_input_embeddings().weight, args.seed)
    bench = llm_speed.timed_batch(ctx.product, ctx.data, ctx.settings, args.batch, args.seed, device)
    steps = SimpleNamespace(repeats=1, warmup=1)  # two steps: the second holds the optimizer state
    peaks = {}
    inputs = (*vars(bench.batch).values(), bench.candidates, bench.labels, bench.scorer.labels)
    with gpu_kernels(args.attention), PeakMemory(model, soft_prompt, inputs) as tracker:
        tracker.reset_peak()
        llm_speed.stage1(model, soft_prompt, bench, ctx.settings, steps, device)
        peaks["stage1"] = tracker.peak
        tracker.reset_peak()
        llm, _ = llm_speed.stage2(ctx.product, model, soft_prompt, bench, ctx.settings, steps, device)
        peaks["stage2"], by_op = tracker.peak, tracker.at_peak
        llm.eval()
        tracker.reset_peak()
        with torch.no_grad():
            bench.scorer(llm.get_base_model(), soft_prompt, bench.batch, bench.candidates)
        peaks["scoring"] = tracker.peak
    return {**{stage: peak / 2**30 for stage, peak in peaks.items()}, "stage2_by_op": by_op}


def per_layer(measured: dict, depths: list[int]) -> dict[str, float]:
    """MiB that one more layer adds to stage 2's peak, by operator (the two deepest runs)."""
    low, high = sorted(depths)[-2:]
    diff = measured[high]["stage2_by_op"].copy()
    diff.subtract(measured[low]["stage2_by_op"])
    return {op: size / 2**20 / (high - low) for op, size in diff.most_common() if abs(size) >= 2**20}


def extrapolate(depths: list[int], peaks: list[float], target: int) -> tuple[float, float]:
    """Least-squares ``a + b * layers`` at ``target``, and the fit's largest residual."""
    slope, intercept = np.polyfit(depths, peaks, 1)
    residual = max(abs(p - (intercept + slope * d)) for d, p in zip(depths, peaks))
    return float(intercept + slope * target), float(residual)


# ---------------------------------------------------------------------------- output
def key_prefix(size: str, args) -> str:
    parts = [size, "estimate"]
    parts += ["eager"] if args.attention == "eager" else []
    parts += ["gc"] if args.gradient_checkpointing else []
    parts += [] if args.fused_gelu else ["gelu_new"]
    parts += [f"b{args.batch}"] if args.batch != 8 else []
    return ".".join(parts) + "."


def records(results: dict, args) -> list[dict]:
    date, device = datetime.date.today().isoformat(), machine.device_name("cpu")
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    attention = "fused-kernel sdpa" if args.attention == "sdpa" else "eager attention"
    unit = (f"GiB (estimated on CPU: tracked allocations, bf16, batch {args.batch}, {attention}, "
            f"extrapolated from {'/'.join(map(str, args.depths))} layers)")
    out = []
    for size, result in results.items():
        for name, value, this_unit in (
            *((f"{stage}.peak_gib", result[stage], unit) for stage in STAGES),
            *((f"{stage}.fit_max_residual_gib", result[f"{stage}_residual"], "GiB") for stage in STAGES),
            *((f"{stage}.check_error_gib", result.get(f"{stage}_error"), "GiB (extrapolated - measured at full depth)")
              for stage in STAGES),
            *((f"stage2.per_layer_mib.{op}", mib, "MiB per layer at stage 2's peak, by producing operator")
              for op, mib in result.get("per_layer", {}).items()),
        ):
            if value is not None:
                out.append({"metric": key_prefix(size, args) + name, "value": round(value, 4), "unit": this_unit,
                            "device": device, "date": date, "command": command})
    return out


# ---------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["xl"], choices=list(llm_speed.FLAN_T5))
    parser.add_argument("--batch", type=int, default=8, help="prompts per step (20 candidates each)")
    parser.add_argument("--depths", nargs="+", type=int, default=[1, 2, 3], help="layers measured (at least 2)")
    parser.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--no-fused-gelu", dest="fused_gelu", action="store_false",
                        help="keep transformers' gelu_new (the product's fused_gelu: False)")
    parser.add_argument("--check", action="store_true", help="also measure the full depth (small, base)")
    parser.add_argument("--breakdown", action="store_true",
                        help="print and record what one layer adds to stage 2's peak, by operator")
    parser.add_argument("--out", type=Path, help="write the JSON records here")
    parser.add_argument("--ml100k-dir", type=Path, help="folder with ml-100k.item and ml-100k.inter")
    parser.add_argument("--spiece", type=Path, default=llm_speed.DEFAULT_SPIECE, help="T5 SentencePiece model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if len(set(args.depths)) < 2:
        parser.error("--depths needs at least two different depths to fit a line")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    error = check_emulation()
    if error > 1e-9:
        raise SystemExit(f"the fused-attention emulation differs from sdpa by {error:.2e}")
    product = llm_speed.import_product(no_recbole=False)
    settings = llm_speed.product_settings(product)
    args.fused_gelu = args.fused_gelu and settings["fused_gelu"]  # the product's setting, unless switched off
    titles, sequences = llm_speed.load_ml100k(llm_speed.ml100k_dir(args), product.normalize_title)
    data = llm_speed.build_prompts(product, llm_speed.load_tokenizer(args.spiece), titles, sequences, settings, args.seed)
    ctx = SimpleNamespace(product=product, settings=settings, data=data)
    results = {}
    for size in args.sizes:
        full = llm_speed.FLAN_T5[size]["num_layers"]
        measured = {}
        for layers in sorted(set(args.depths + ([full] if args.check else []))):
            begin = time.perf_counter()
            measured[layers] = measure_depth(size, layers, ctx, args)
            print(f"{size} x {layers} layers: " + ", ".join(f"{s} {measured[layers][s]:.3f} GiB" for s in STAGES)
                  + f" ({time.perf_counter() - begin:.0f} s)", flush=True)
        result = {}
        for stage in STAGES:
            peaks = [measured[d][stage] for d in args.depths]
            result[stage], result[f"{stage}_residual"] = extrapolate(args.depths, peaks, full)
            if args.check:
                result[f"{stage}_error"] = result[stage] - measured[full][stage]
        if args.breakdown:
            result["per_layer"] = per_layer(measured, args.depths)
            print(f"{size}: one layer adds to stage 2's peak (MiB, by producing operator): "
                  + ", ".join(f"{op} {mib:.1f}" for op, mib in result["per_layer"].items()), flush=True)
        results[size] = result
        print(f"{size} ({full} layers, batch {args.batch}, {args.attention}"
              f"{', gradient checkpointing' if args.gradient_checkpointing else ''}"
              f"{'' if args.fused_gelu else ', gelu_new'}): "
              + ", ".join(f"{s} {result[s]:.2f} GiB (fit residual {result[s + '_residual']:.3f}"
                          + (f", error vs measured {result[s + '_error']:+.3f}" if args.check else "") + ")"
                          for s in STAGES), flush=True)
    if args.out:
        product.save_json(records(results, args), args.out)  # atomic: a failed run leaves the old file
        print(f"records -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
