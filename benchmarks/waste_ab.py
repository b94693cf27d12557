"""Each kind of waste the product avoids, measured against the product side by side in one process.

Issue 19 lists the work a plain transformers pipeline does that DELRec's does not.  ``llm_speed.py``
measures all of it at once (the product's scorer against one plain float32 forward per
candidate); this script puts a number on each item alone: the product's step, and the same step
with exactly one kind of waste put back, alternating, on the same prompts, weights and adapters:

* ``float32``: the LLM's weights in float32 (the product runs bf16 where the CPU has bf16 units;
  the soft prompt and the adapters are float32 on both sides);
* ``full_logits``: the LM head and a float32 log-softmax over the whole vocabulary at every
  position of the packed rows, as ``model(...).logits`` computes them, kept in the graph so a
  training step also runs their backward (the product reads the head only where a title token is
  scored);
* ``frozen_grads``: gradients of every frozen weight in stage 2 (the product computes none: the
  base LLM is frozen, only the adapters train);
* ``per_candidate``: each candidate in its own row, its prompt computed again every time (one
  forward of C rows per user; the product packs one prompt and its C titles in one row);
* ``whole_prompts``: every row computes its prompt from the first token (the product computes the
  prompts' shared first tokens, template header and soft prompt, once per forward);
* ``eager``: transformers' eager attention instead of the product's prompt-split SDPA kernel;
* ``one_thread`` and ``oversubscribed``: PyTorch on one thread, or on twice as many threads as
  cores (the product leaves PyTorch its default: one thread per core);
* ``one_forward``: an evaluation batch of 32 users (``eval_batch_size: 640``) in one LLM forward
  (the product sorts its prompts by length and runs ``prompts_per_forward`` at a time).

One side is no waste but a price: ``no_lora_dropout`` runs the stage-2 step with AdaLoRA's
``lora_dropout`` modules taken out (the product keeps the method's ``lora_dropout: 0.05``), to
show what PEFT's dropout mask costs on a CPU; its "speed-up" is below 1 when the product pays for it.
A second price, ``heap_trimmed``: the heap gives back its free memory as every pass starts, the
worst case of ``malloc_reuse_max_share`` (the product does it only once the process holds more than
that share of the machine's memory), so every step faults its pages in afresh.

One side is an option the product leaves off: ``merged_adapters`` scores with AdaLoRA's adapters
merged into the bf16 weights (``llm_merge_adapters``: PEFT's ``merge_adapter``, the weights restored
bit for bit afterwards), so no adapter runs beside its projection; a "speed-up" above 1 favours
merging (its effect on rankings: ``benchmarks/merge_check.py``).

Every side is the product's own code (``ab_speed.setup``: its loader, prompts, scorer, AdaLoRA),
changed in that one respect only and back afterwards; each side computes the same scores (the
tests check it).  Measures: a stage-2 step (8 prefixes, forward and backward) and scoring one
batch of 8 users (``one_forward``: of 32), ms per prefix or user; each side once untimed, then ``--repeats`` times
alternating with the product; a figure is the median of its side's timed runs.  Records
``<device>.<model>.ab.<waste>.{<waste>,product}.<measure>`` (ms) and
``<device>.<model>.ab.<waste>.speedup.<measure>`` (waste / product)::

    python benchmarks/waste_ab.py --checkpoint_dir saved
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from recbole_delrec.llm.adapters import merged_adapters

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ab_speed  # noqa: E402  (the product's pieces, set up as llm_speed.py sets them up; its records)
import llm_speed  # noqa: E402

#: Each waste and what it is measured on (``frozen_grads`` only trains; ``per_candidate`` would
#: hold C times the activations of a training batch, so it is measured where a user meets it first).
MEASURES = {"float32": ("stage2", "scoring"), "full_logits": ("stage2", "scoring"), "frozen_grads": ("stage2",),
            "per_candidate": ("scoring",), "whole_prompts": ("stage2", "scoring", "scoring32"),
            "eager": ("stage2", "scoring"), "one_thread": ("stage2", "scoring"),
            "oversubscribed": ("stage2", "scoring"), "no_lora_dropout": ("stage2",),
            "heap_trimmed": ("stage2", "scoring"), "one_forward": ("scoring32",), "merged_adapters": ("scoring",)}
UNIT = {"stage2": "stage2_ms_per_prefix", "scoring": "scoring8_ms_per_user", "scoring32": "scoring32_ms_per_user"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = ab_speed.model_parser(__doc__.split("\n")[0])
    parser.add_argument("--waste", nargs="+", choices=list(MEASURES), default=list(MEASURES), help="what to measure")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side, alternating, after one untimed")
    parser.add_argument("--out", type=Path, help="JSON records (default: benchmarks/results/waste_ab.<model>.json)")
    args = parser.parse_args(argv)
    args.users, args.side, args.dtype = 8, "heap", None  # what ab_speed.setup reads: 8 users, malloc_reuse, auto dtype
    return args


class Steps:
    """The measures on one model: a stage-2 step and scoring a batch of 8 or of 32 users, each
    returning (ms per prefix or user, the scores)."""

    def __init__(self, product, llm, soft, parts, scorer) -> None:
        self.product, self.llm, self.soft, self.scorer = product, llm, soft, scorer
        self.part, self.part32 = parts
        self.per_forward = llm_speed.product_settings(product)["prompts_per_forward"]
        self.score_fn: Callable = self.packed

    def packed(self, base, part) -> torch.Tensor:
        """The product's scoring: ``prompts_per_forward`` prompts per forward, sorted by length."""
        return self.scorer.score_prompts(base, self.soft, part.prompts, part.candidates, self.per_forward)

    def stage2(self) -> tuple[float, torch.Tensor]:
        self.llm.train()
        begin = time.perf_counter()
        scores = self.score_fn(self.llm.get_base_model(), self.part)
        (F.cross_entropy(scores, self.part.labels) + self.product.orthogonal_penalty(self.llm)).backward()
        self.llm.zero_grad(set_to_none=True)
        return (time.perf_counter() - begin) * 1e3 / len(self.part.prompts), scores.detach()

    def scoring(self, part=None) -> tuple[float, torch.Tensor]:
        part = part or self.part
        self.llm.eval()
        begin = time.perf_counter()
        with torch.no_grad():
            scores = self.score_fn(self.llm.get_base_model(), part)
        return (time.perf_counter() - begin) * 1e3 / len(part.prompts), scores

    def scoring32(self) -> tuple[float, torch.Tensor]:
        return self.scoring(self.part32)


def per_candidate_scorer(steps: Steps) -> Callable:
    """Scores as one row per candidate: each user's prompt repeated C times, one title each, and
    computed again in each row."""
    def score(base, part) -> torch.Tensor:
        rows = []
        with whole_prompts(steps.scorer):
            for prompt, candidates in zip(part.prompts, part.candidates):
                batch = steps.product.PromptBatch.collate([prompt] * len(candidates), steps.scorer.pad_id,
                                                          steps.soft.n_tokens)
                rows.append(steps.scorer(base, steps.soft, batch, candidates.unsqueeze(1)).view(1, -1))
        return torch.cat(rows)
    return score


def one_forward_scorer(steps: Steps) -> Callable:
    """Scores a whole batch in one forward, its prompts padded to the longest."""
    def score(base, part) -> torch.Tensor:
        return steps.scorer(base, steps.soft, part.batch, part.candidates)
    return score


def full_logits_hook(model) -> Callable:
    """A forward hook on the LLM's body: the LM head and a float32 log-softmax at every position,
    added to the hidden states times zero (same values; their backward runs in training)."""
    head = model.get_output_embeddings()

    def hook(module, args, output):
        hidden = output.last_hidden_state
        log_probs = F.log_softmax(head(hidden).float(), dim=-1)
        output.last_hidden_state = hidden + 0.0 * log_probs.sum(-1, keepdim=True).to(hidden.dtype)
        return output
    return hook


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def attention(llm, kernel: str) -> Iterator[None]:
    base = llm.get_base_model()
    before = base.config._attn_implementation
    base.set_attn_implementation(kernel)
    try:
        yield
    finally:
        base.set_attn_implementation(before)


@contextlib.contextmanager
def whole_prompts(scorer) -> Iterator[None]:
    """The causal scorer with its shared-prefix cache off: each row computes its whole prompt."""
    scorer.share_prefix = False
    try:
        yield
    finally:
        scorer.share_prefix = True


@contextlib.contextmanager
def hooked(module, hook) -> Iterator[None]:
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def frozen_grads(llm) -> Iterator[None]:
    frozen = [p for p in llm.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)
            p.grad = None


@contextlib.contextmanager
def without_dropout(llm) -> Iterator[None]:
    """AdaLoRA's ``lora_dropout`` modules replaced by identities for the call (scores then differ:
    the method's own dropout is off, so only its cost is measured)."""
    taken = [(m.lora_dropout, key, d) for m in llm.modules() if hasattr(m, "lora_dropout")
             for key, d in m.lora_dropout.items() if isinstance(d, nn.Dropout)]
    for dropouts, key, _ in taken:
        dropouts[key] = nn.Identity()
    try:
        yield
    finally:
        for dropouts, key, dropout in taken:
            dropouts[key] = dropout


@contextlib.contextmanager
def heap_trimmed(product) -> Iterator[None]:
    """The heap bound at (almost) nothing for the call: every pass starts by giving the heap's free
    memory back (``bound_heap``); the product's own share afterwards."""
    product.reuse_heap_memory(1e-12)
    try:
        yield
    finally:
        product.reuse_heap_memory(llm_speed.product_settings(product)["malloc_reuse_max_share"])


@contextlib.contextmanager
def scored_by(steps: Steps, score_fn: Callable) -> Iterator[None]:
    steps.score_fn = score_fn
    try:
        yield
    finally:
        steps.score_fn = steps.packed


def setup(args) -> SimpleNamespace:
    """The product's model with AdaLoRA, its first batch of 8 users and of 32; the float32 twin on demand."""
    product, llm, soft, benches = ab_speed.setup(args)
    part = benches[8].batches[0]
    steps = Steps(product, llm, soft, (part, benches[32].batches[0]), benches[8].scorer)
    return SimpleNamespace(product=product, llm=llm, soft=soft, part=part, steps=steps)


def float32_steps(args, env) -> Steps:
    """The same LLM loaded in float32 by the product's loader, AdaLoRA added as on the product side."""
    _, llm, _, benches = ab_speed.setup(argparse.Namespace(**{**vars(args), "dtype": "fp32"}))
    return Steps(env.product, llm, env.soft, (env.part, env.steps.part32), benches[8].scorer)


def waste_side(name: str, args, env) -> tuple[Steps, Callable[[], contextlib.AbstractContextManager]]:
    """The steps a waste runs on (the product's, or the float32 twin's) and a fresh context that
    puts the waste back for one call."""
    if name == "float32":
        return float32_steps(args, env), contextlib.nullcontext
    base = env.llm.get_base_model()
    contexts = {
        "full_logits": lambda: hooked(base.base_model, full_logits_hook(base)),
        "frozen_grads": lambda: frozen_grads(env.llm),
        "per_candidate": lambda: scored_by(env.steps, per_candidate_scorer(env.steps)),
        "whole_prompts": lambda: whole_prompts(env.steps.scorer),
        "eager": lambda: attention(env.llm, "eager"),
        "one_thread": lambda: threads(1),
        "oversubscribed": lambda: threads(2 * (os.cpu_count() or 1)),
        "no_lora_dropout": lambda: without_dropout(env.llm),
        "heap_trimmed": lambda: heap_trimmed(env.product),
        "one_forward": lambda: scored_by(env.steps, one_forward_scorer(env.steps)),
        "merged_adapters": lambda: merged_adapters(env.llm),
    }
    return env.steps, contexts[name]


#: Largest score difference, relative to the mean |score|, where a side runs in bf16: another batch
#: shape, kernel or dtype rounds differently (SmolLM2 on ML-100K prompts: up to 6% of the mean
#: |score| in a mean log-likelihood, against float32 and against one row per candidate alike;
#: a wrong function moves scores by their whole size).
BF16_TOLERANCE = 0.1


def check_same(name: str, product: torch.Tensor, waste: torch.Tensor, dtypes: set[torch.dtype]) -> None:
    """A waste side must compute the product's scores (to rounding), or its time measures something else."""
    relative = BF16_TOLERANCE if torch.bfloat16 in dtypes else llm_speed.TOLERANCE["fp32"]
    tolerance = relative * float(product.float().abs().mean())
    diff = float((product.float() - waste.float()).abs().max())
    if diff > tolerance:
        raise AssertionError(f"waste side '{name}' scores differ from the product's by {diff:.3g} (> {tolerance:.3g})")


def measure(name: str, args, env) -> dict[str, dict[str, float]]:
    """Both sides of one waste, alternating: ``{waste: {unit: ms}, "product": {unit: ms}}``.
    Scoring (no dropout) also checks that the waste side computes the product's scores."""
    steps, context = waste_side(name, args, env)
    dtypes = {env.llm.get_base_model().dtype, steps.llm.get_base_model().dtype}
    times: dict[str, dict[str, float]] = {name: {}, "product": {}}
    for step in MEASURES[name]:
        runs: dict[str, list[float]] = {name: [], "product": []}
        for index in range(args.repeats + 1):  # each side's first run untimed
            product_ms, product_scores = getattr(env.steps, step)()
            with context():
                waste_ms, waste_scores = getattr(steps, step)()
            if step.startswith("scoring"):
                check_same(name, product_scores, waste_scores, dtypes)
            if index:
                runs["product"].append(product_ms)
                runs[name].append(waste_ms)
        for side, values in runs.items():
            times[side][UNIT[step]] = statistics.median(values)
        print(f"{name}.{step}: " + ", ".join(f"{side} {times[side][UNIT[step]]:.0f} ms" for side in runs), flush=True)
    return times


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    env = setup(args)
    result = {}
    for name in args.waste:  # the records so far are written after each waste: a failure keeps them
        result[name] = measure(name, args, env)
        ab_speed.save(result, args, argv, __file__, "waste_ab")
    return 0


if __name__ == "__main__":
    sys.exit(main())
