"""Speed of DELRec's LLM paths at real Flan-T5 sizes (random weights), on real ML-100K prompts.

For each requested size (small, base, large, xl: the published google/flan-t5-* shapes), one
run measures, on one fixed batch of ``--batch`` test prompts with 20 candidates each:

(a) stage 1: frozen LLM, only the soft prompt trains: forward (encoder + candidate scoring),
    backward, Adam step;
(b) stage 2: AdaLoRA on q, v (PEFT, the product's ``add_adalora``): forward, backward (loss =
    cross-entropy + ``orthogonal_penalty``), AdamW step, ``allocate_ranks`` (AdaLoRA's
    ``update_and_allocate``), at global steps inside AdaLoRA's budgeting phase;
(c) inference scoring (no grad, adapters on, as at test time): ms per user;
(d) the naive scorer: each candidate its own plain HF ``model(inputs_embeds=..., labels=...)``
    forward (prompt re-encoded every time; the soft prompt can only enter as embeddings), its
    time (one run of B x C forwards after a one-forward warm-up), the speed-up of (c) over it,
    and the largest score difference between the two (tolerance: 2e-2 x mean |score| in bf16,
    1e-4 x in fp32);
(e) peak device memory of (a), (b), (c) (``torch.cuda.max_memory_allocated``, reset before each,
    weights included); on CPU memory is not measured (a process's peak RSS cannot be reset);
(f) the device's own matmul rate in the run's dtype (8192^3 on CUDA, 1024^3 on CPU; median of
    timed runs after warm-up), the denominator of MFU.

Everything measured is the product's code: ``CandidateScorer``, ``PromptBatch``, ``SoftPrompt``,
``PromptBuilder`` with the packaged ``lsr`` template, ``add_adalora``, ``orthogonal_penalty``,
``allocate_ranks``; prompt settings and AdaLoRA options come from ``properties/model/DELRec.yaml``.
Titles are built as ``ItemText`` builds them (``normalize_title`` + `` (year)``) from the atomic
files themselves (RecBole's bundled copy, or ``--ml100k-dir``); each user's test prompt shows the
10 items before the last one, whose title is among 20 candidates (19 seeded random unseen items).

FLOP counting (model FLOPs, from the real, unpadded token counts of the batch)
------------------------------------------------------------------------------
Forward, with d = d_model, f = d_ff, a = num_heads * d_kv, L layers, V = 32128:

* encoder, per prompt of n tokens: 2 n L (4 d a + 3 d f)  [q k v o, gated FFN]  + 4 n^2 a L [QK^T, AV];
* cross-attention keys/values, once per prompt (the scorer never repeats a prompt): 2 n L (2 d a);
* decoder, per candidate of t tokens (title + </s>):
  2 t L (4 d a + 2 d a + 3 d f) + 2 t d V  [self q k v o, cross q o, FFN, lm_head]
  + L (4 t^2 a + 4 t n a)  [self and cross attention scores and mixing].

Matmuls with a weight ("dense", D) cost 2 x params x tokens; the attention terms (A) multiply two
activations.  Backward: every weight matmul needs the gradient of its input (= its forward
FLOPs) and, only if the weight trains, the gradient of the weight (again its forward FLOPs);
activation-activation matmuls need both operand gradients (2x forward).  So:

* inference scoring: D + A;
* stage 1 (all weights frozen, gradient only for the soft prompt): D + A forward + D + 2A
  backward = 2D + 3A, i.e. ~2x forward (not the 3x of full training);
* stage 2: the base weights are frozen too, only the AdaLoRA factors train, so the same
  2D + 3A plus 3x the adapters' own forward FLOPs: per adapted projection and token
  2 r (d_in + d_out) with r = init_r (AdaLoRA keeps rank-init_r factors and masks them).
  Counting stage 2 as 3x forward (6 x params per token) would overstate its useful work by ~1.5x.

MFU = model FLOPs / step time / measured matmul rate (f).  Padding, the recomputation of
``--gradient-checkpointing``, optimizer, loss and AdaLoRA bookkeeping count as zero useful FLOPs.
The scorer packs each prompt's candidate titles into one decoder row (block-diagonal causal
mask), so its self-attention also computes the (masked) products between titles of one row:
counted as zero useful FLOPs too (about 1% of a decoder layer's work at XL).

``--no-recbole``: RecBole is made unimportable for the run (as on a machine without it), titles
and interactions are read from the ``ml-100k.item`` / ``ml-100k.inter`` files in
``--ml100k-dir``, and only ``recbole_delrec.llm.*`` / ``recbole_delrec.prompts`` are imported.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import importlib.abc
import importlib.util
import math
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPIECE = REPO.parent / "shared" / "assets" / "t5" / "spiece.model"

#: google/flan-t5-{size}/config.json (num_decoder_layers = num_layers for all four).
FLAN_T5 = {
    "small": {"d_model": 512, "d_ff": 1024, "d_kv": 64, "num_heads": 6, "num_layers": 8},
    "base": {"d_model": 768, "d_ff": 2048, "d_kv": 64, "num_heads": 12, "num_layers": 12},
    "large": {"d_model": 1024, "d_ff": 2816, "d_kv": 64, "num_heads": 16, "num_layers": 24},
    "xl": {"d_model": 2048, "d_ff": 5120, "d_kv": 64, "num_heads": 32, "num_layers": 24},
}
FLAN_T5_COMMON = {"vocab_size": 32128, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
#: Largest allowed max |fast - naive| score difference, relative to the mean |score|.
TOLERANCE = {"bf16": 2e-2, "fp32": 1e-4}


# ---------------------------------------------------------------------------- options
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["small"], choices=list(FLAN_T5))
    parser.add_argument("--batch", type=int, default=8, help="prompts per step (20 candidates each)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--no-fused-gelu", dest="fused_gelu", action="store_false",
                        help="keep transformers' gelu_new (the product's fused_gelu: False); keys get .gelu_new")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the encoder and decoder stacks (dynamic shapes); warm-up includes compiling")
    parser.add_argument("--out", type=Path, help="write the JSON records here")
    parser.add_argument("--device-name", help="slug in metric keys (default: cpu-<N>core, or from the GPU's name)")
    parser.add_argument("--no-recbole", action="store_true", help="never import RecBole (needs --ml100k-dir)")
    parser.add_argument("--ml100k-dir", type=Path, help="folder with ml-100k.item and ml-100k.inter")
    parser.add_argument("--spiece", type=Path, default=DEFAULT_SPIECE, help="T5 SentencePiece model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if args.no_recbole and args.ml100k_dir is None:
        parser.error("--no-recbole needs --ml100k-dir (a copy of ml-100k.item and ml-100k.inter)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    return args


def device_slug(device: torch.device) -> str:
    """``cpu-2core``, or the GPU's model from its name (``NVIDIA H100 80GB HBM3`` -> ``h100``)."""
    if device.type == "cpu":
        return f"cpu-{os.cpu_count()}core"
    words = re.findall(r"[a-z0-9]+", torch.cuda.get_device_name(device).lower())
    words = [w for w in words if w not in ("nvidia", "geforce", "tesla")]
    model = [w for w in words if re.fullmatch(r"[a-z]+\d+[a-z]*", w)]
    return model[0] if model else "-".join(words[:3]) or "gpu"


# ---------------------------------------------------------------------------- product imports
class _NoRecBole(importlib.abc.MetaPathFinder):
    """Makes ``import recbole...`` fail, as on a machine without RecBole."""

    def find_spec(self, name, path=None, target=None):
        if name == "recbole" or name.startswith("recbole."):
            raise ModuleNotFoundError(f"No module named '{name}' (--no-recbole)", name=name)
        return None


def import_product(no_recbole: bool) -> SimpleNamespace:
    """The product's classes; with ``no_recbole``, without importing RecBole at all.

    Importing ``recbole_delrec`` has no side effects and its ``llm``/``prompts`` parts do not
    import RecBole, so the benchmark measures exactly the product's modules.
    """
    sys.path.insert(0, str(REPO))
    if no_recbole:
        sys.meta_path.insert(0, _NoRecBole())
    from recbole_delrec.data.candidates import candidates_per_prompt
    from recbole_delrec.data.titles import normalize_title
    from recbole_delrec.llm.adapters import add_adalora, allocate_ranks, orthogonal_penalty
    from recbole_delrec.llm.backbone import set_speed_options
    from recbole_delrec.llm.scoring import CandidateScorer, PromptBatch
    from recbole_delrec.llm.soft_prompt import SoftPrompt
    from recbole_delrec.prompts import PromptBuilder, domain_words, load_template
    from recbole_delrec.runs.artifacts import save_json

    if no_recbole and any(m == "recbole" or m.startswith("recbole.") for m in sys.modules):
        raise RuntimeError("--no-recbole: RecBole was imported after all")
    if torch.is_anomaly_enabled():  # RecBole's SINE module turns it on; compat turns it off
        raise RuntimeError("torch anomaly detection is on: timings would be meaningless")
    return SimpleNamespace(
        add_adalora=add_adalora, allocate_ranks=allocate_ranks, orthogonal_penalty=orthogonal_penalty,
        CandidateScorer=CandidateScorer, PromptBatch=PromptBatch, SoftPrompt=SoftPrompt,
        PromptBuilder=PromptBuilder, domain_words=domain_words, load_template=load_template,
        normalize_title=normalize_title, set_speed_options=set_speed_options, save_json=save_json,
        candidates_per_prompt=candidates_per_prompt,
    )


# ---------------------------------------------------------------------------- data and prompts
def ml100k_dir(args) -> Path:
    """``--ml100k-dir``, else the copy inside RecBole's wheel (found without importing RecBole)."""
    if args.ml100k_dir is not None:
        return args.ml100k_dir
    spec = importlib.util.find_spec("recbole")
    if spec is None:
        raise SystemExit("RecBole is not installed: pass --ml100k-dir (and --no-recbole)")
    return Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k"


def read_atomic(path: Path) -> tuple[list[str], list[list[str]]]:
    """Field names (``name:type`` headers stripped of the type) and rows of a RecBole atomic file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    return header, [line.split("\t") for line in lines[1:] if line]


def load_ml100k(folder: Path, normalize: Callable[[str], str]) -> tuple[list[str], list[list[int]]]:
    """Titles (index 0 = padding, as in ``ItemText``) and each user's items in time order."""
    header, rows = read_atomic(folder / "ml-100k.item")
    col = {name: header.index(name) for name in ("item_id", "movie_title", "release_year")}
    index, titles = {}, ["[PAD]"]
    for row in rows:
        title = " ".join(row[col["movie_title"]].split())
        title = normalize(title)
        year = row[col["release_year"]].strip()
        title = title or f"item {row[col['item_id']]}"
        titles.append(f"{title} ({year})" if len(year) == 4 and year.isdigit() else title)
        index[row[col["item_id"]]] = len(titles) - 1
    header, rows = read_atomic(folder / "ml-100k.inter")
    u, i, t = (header.index(n) for n in ("user_id", "item_id", "timestamp"))
    by_user: dict[str, list[tuple[float, int]]] = {}
    for row in rows:
        by_user.setdefault(row[u], []).append((float(row[t]), index[row[i]]))
    sequences = [[item for _, item in sorted(events, key=lambda e: e[0])] for _, events in sorted(by_user.items())]
    return titles, sequences


def load_tokenizer(spiece: Path):
    """The real T5 tokenizer (32,000 pieces + 100 sentinels) from a ``spiece.model``."""
    from transformers import T5Tokenizer

    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(spiece, Path(folder) / "spiece.model")
        tokenizer = T5Tokenizer.from_pretrained(folder)
    if len(tokenizer) != 32100 or tokenizer.pad_token_id != 0 or tokenizer.eos_token_id != 1:
        raise RuntimeError(f"'{spiece}' did not load as the T5 vocabulary ({len(tokenizer)} tokens)")
    return tokenizer


def product_settings(product) -> dict:
    """The product's prompt, candidate and AdaLoRA defaults for ML-100K (``properties/model/DELRec.yaml``,
    then ``properties/dataset/ml-100k.yaml``, as RecBole layers them); candidates per prompt as the
    product decides them (from ``eval_args.mode``)."""
    properties = REPO / "properties"
    values = yaml.safe_load((properties / "model" / "DELRec.yaml").read_text(encoding="utf-8"))
    values.update(yaml.safe_load((properties / "dataset" / "ml-100k.yaml").read_text(encoding="utf-8")))
    keys = ("n_soft_tokens", "history_length", "max_title_tokens", "max_prompt_title_tokens", "max_prompt_tokens",
            "teacher_model", "domain", "adalora", "stage1_learning_rate", "learning_rate", "epochs",
            "train_batch_size", "train_prefixes_per_user", "llm_attention", "fused_gelu")
    return {**{k: values[k] for k in keys}, "n_candidates": product.candidates_per_prompt(values)}


def build_prompts(product, tokenizer, titles, sequences, settings, seed) -> SimpleNamespace:
    """Every user's test prompt (history -> last item) with the target among n_candidates."""
    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    encoded = [encode(t) for t in titles]
    title_ids = [ids[: settings["max_title_tokens"]] for ids in encoded]  # scored titles
    static = {"teacher": settings["teacher_model"], **product.domain_words(settings["domain"])}
    builder = product.PromptBuilder(
        product.load_template("lsr", settings["domain"]), static, encode,
        [ids[: settings["max_prompt_title_tokens"]] for ids in encoded],
        settings["n_soft_tokens"], settings["max_prompt_tokens"], tokenizer.pad_token_id, tokenizer.eos_token_id,
    )
    rng = np.random.default_rng(seed)
    all_items = np.arange(1, len(titles))
    prompts, candidates, labels = [], [], []
    for items in sequences:
        negatives = rng.choice(np.setdiff1d(all_items, items), settings["n_candidates"] - 1, replace=False)
        row = rng.permutation(np.concatenate([[items[-1]], negatives])).tolist()
        prompts.append(builder.build(history=items[:-1][-settings["history_length"] :], candidates=row))
        candidates.append(row)
        labels.append(row.index(items[-1]))
    return SimpleNamespace(prompts=prompts, candidates=candidates, labels=labels, title_ids=title_ids,
                           pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id)


def token_stats(data) -> dict[str, float]:
    prompt = [len(p.input_ids) for p in data.prompts]
    title = [len(t) for t in data.title_ids[1:]]
    return {"prompt_mean": float(np.mean(prompt)), "prompt_max": max(prompt),
            "title_mean": float(np.mean(title)), "title_max": max(title)}


def timed_batch(product, data, settings, batch: int, seed: int, device) -> SimpleNamespace:
    """One fixed, seeded batch of test prompts on the device, with the product's scorer."""
    rows = np.random.default_rng(seed + 1).choice(len(data.prompts), batch, replace=False).tolist()
    prompts = [data.prompts[r] for r in rows]
    return SimpleNamespace(
        prompts=prompts,
        scorer=product.CandidateScorer(data.title_ids, data.pad_id, data.eos_id),
        batch=product.PromptBatch.collate(prompts, data.pad_id, settings["n_soft_tokens"]).to(device),
        candidates=torch.tensor([data.candidates[r] for r in rows], device=device),
        labels=torch.tensor([data.labels[r] for r in rows], device=device),
    )


# ---------------------------------------------------------------------------- model
def build_model(size: str, dtype: torch.dtype, device: torch.device, layers: int | None = None):
    """Flan-T5 of ``size`` with random weights, built directly on the device in ``dtype``.

    ``layers`` overrides the depth of encoder and decoder (``llm_memory.py`` extrapolates from
    shallow copies of a size); the width stays the size's own.
    """
    from transformers import AutoModelForSeq2SeqLM, T5Config

    arch = {**FLAN_T5[size], **({"num_layers": layers} if layers else {})}
    config = T5Config(**arch, num_decoder_layers=arch["num_layers"], **FLAN_T5_COMMON, decoder_start_token_id=0)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForSeq2SeqLM.from_config(config, dtype=dtype)
        untie_lm_head(model)
    return model


def untie_lm_head(model) -> None:
    """Give the model its own lm_head, as Flan-T5 has.

    transformers 5.2x forces ``tie_word_embeddings=True`` for T5 built from a config (a real
    checkpoint loads untied).  The new head has std d_model^-0.5 so that random logits stay O(1).
    """
    if model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr():
        return
    weight = torch.empty_like(model.shared.weight).normal_(std=model.config.d_model ** -0.5)
    model.lm_head.weight = nn.Parameter(weight)
    getattr(model, "all_tied_weights_keys", {}).pop("lm_head.weight", None)


def check_untied(model) -> None:
    if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
        raise RuntimeError("lm_head got tied to the embeddings again")


# ---------------------------------------------------------------------------- timing
def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device, repeats: int, warmup: int) -> tuple[float, float | None]:
    """Median milliseconds of ``fn`` after ``warmup`` calls, and peak GiB on CUDA (None on CPU)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return statistics.median(times), peak


def matmul_peak_tflops(device, dtype: torch.dtype) -> float:
    """The device's measured matmul rate in ``dtype`` (random operands, median of timed runs)."""
    n, repeats = (8192, 20) if device.type == "cuda" else (1024, 5)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    ms, _ = measure(lambda: a @ b, device, repeats, warmup=3)
    return 2 * n**3 / (ms / 1e3) / 1e12


# ---------------------------------------------------------------------------- FLOPs
def flop_counts(arch: dict, prompts, candidates, title_ids, lora_rank: int) -> dict[str, float]:
    """Forward FLOPs of scoring one batch: dense (D), attention (A), AdaLoRA adapters (R)."""
    d, f, layers, vocab = arch["d_model"], arch["d_ff"], arch["num_layers"], FLAN_T5_COMMON["vocab_size"]
    a = arch["num_heads"] * arch["d_kv"]
    lora = 2 * lora_rank * (d + a)  # one adapted q or v projection, per token
    dense = attention = adapters = 0.0
    for prompt, row in zip(prompts, candidates):
        n = len(prompt.input_ids)
        dense += 2 * n * layers * (4 * d * a + 3 * d * f) + 2 * n * layers * 2 * d * a
        attention += 4 * n * n * a * layers
        adapters += lora * n * layers * 3  # encoder q, v; cross-attention v (once per prompt)
        for item in row:
            t = len(title_ids[item]) + 1
            dense += 2 * t * layers * (6 * d * a + 3 * d * f) + 2 * t * d * vocab
            attention += layers * (4 * t * t * a + 4 * t * n * a)
            adapters += lora * t * layers * 3  # decoder self q, v; cross q
    return {"dense": dense, "attention": attention, "adapters": adapters}


def step_flops(counts: dict[str, float]) -> dict[str, float]:
    """Model FLOPs of scoring, a stage-1 step and a stage-2 step (see the module docstring)."""
    frozen = 2 * counts["dense"] + 3 * counts["attention"]
    return {"scoring": counts["dense"] + counts["attention"], "stage1": frozen,
            "stage2": frozen + 3 * counts["adapters"]}


# ---------------------------------------------------------------------------- the measurements
def naive_scores(llm, soft_prompt, bench, data, n_soft: int) -> torch.Tensor:
    """Every candidate by its own plain HF forward: prompt re-encoded, loss = mean NLL."""
    device = bench.candidates.device
    scores = torch.empty(bench.candidates.shape, device=device)
    for row, prompt in enumerate(bench.prompts):
        ids = torch.tensor([prompt.input_ids], device=device)
        soft = torch.zeros_like(ids, dtype=torch.bool)
        soft[0, prompt.soft_start : prompt.soft_start + n_soft] = True
        for col, item in enumerate(bench.candidates[row].tolist()):
            labels = torch.tensor([data.title_ids[item] + [data.eos_id]], device=device)
            embeds = soft_prompt.splice(llm.get_input_embeddings()(ids), soft)
            scores[row, col] = -llm(inputs_embeds=embeds, labels=labels).loss.float()
    return scores


def first_candidate(bench) -> SimpleNamespace:
    """The batch cut to its first prompt's first candidate (a one-forward warm-up)."""
    return SimpleNamespace(prompts=bench.prompts[:1], candidates=bench.candidates[:1, :1])


def stage1(model, soft_prompt, bench, settings, args, device) -> dict:
    """(a) Frozen LLM, the soft prompt trains."""
    model.requires_grad_(False).train()
    soft_prompt.requires_grad_(True)
    optimizer = torch.optim.Adam(soft_prompt.parameters(), lr=settings["stage1_learning_rate"])

    def step():
        scores = bench.scorer(model, soft_prompt, bench.batch, bench.candidates)
        F.cross_entropy(scores, bench.labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    ms, peak = measure(step, device, args.repeats, args.warmup)
    soft_prompt.requires_grad_(False)
    return {"step_ms": ms, "peak_gib": peak}


def adalora_schedule(settings) -> tuple[int, int]:
    """The product's AdaLoRA ``total_step`` on ML-100K and the first step of its budgeting phase."""
    users = 943
    total = settings["epochs"] * math.ceil(users * settings["train_prefixes_per_user"] / settings["train_batch_size"])
    tinit = min(int(settings["adalora"].get("tinit", 0)), max(total, 3) // 3)
    return total, tinit + 1


def stage2(product, model, soft_prompt, bench, settings, args, device):
    """(b) AdaLoRA on q, v; returns the wrapped model and the results."""
    total, first = adalora_schedule(settings)
    llm = product.add_adalora(model, settings["adalora"], total)
    check_untied(llm.get_base_model())
    llm.train()
    params = [p for p in llm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings["learning_rate"])
    global_step = [first]

    def step():
        scores = bench.scorer(llm.get_base_model(), soft_prompt, bench.batch, bench.candidates)
        loss = F.cross_entropy(scores, bench.labels) + product.orthogonal_penalty(llm)
        loss.backward()
        optimizer.step()
        product.allocate_ranks(llm, global_step[0])
        optimizer.zero_grad(set_to_none=True)
        global_step[0] += 1

    ms, peak = measure(step, device, args.repeats, args.warmup)
    trainable = sum(p.numel() for p in params)
    return llm, {"step_ms": ms, "peak_gib": peak, "trainable": trainable, "first_step": first, "total_step": total}


def scoring(llm, soft_prompt, bench, data, settings, args, device) -> dict:
    """(c) inference scoring and (d) the naive scorer, adapters on, no grad."""
    llm.eval()
    base = llm.get_base_model()
    n_prompts, n_soft = len(bench.prompts), settings["n_soft_tokens"]
    with torch.no_grad():
        fast = bench.scorer(base, soft_prompt, bench.batch, bench.candidates)
        ms, peak = measure(lambda: bench.scorer(base, soft_prompt, bench.batch, bench.candidates), device,
                           args.repeats, args.warmup)
        naive_scores(base, soft_prompt, first_candidate(bench), data, n_soft)  # warm-up: one forward
        synchronize(device)
        begin = time.perf_counter()
        naive = naive_scores(base, soft_prompt, bench, data, n_soft)  # B x C forwards: timed once
        synchronize(device)
        naive_ms = (time.perf_counter() - begin) * 1e3
    diff = float((fast.float() - naive).abs().max())
    scale = float(naive.abs().mean())
    return {"ms_per_user": ms / n_prompts, "naive_ms_per_user": naive_ms / n_prompts, "peak_gib": peak,
            "speedup": naive_ms / ms, "max_abs_diff": diff, "mean_abs_score": scale,
            "within_tolerance": diff <= TOLERANCE[args.dtype] * scale,
            "top1_agreement": float((fast.argmax(1) == naive.argmax(1)).float().mean())}


def run_size(size: str, product, data, settings, args, device, peak_tflops: float) -> dict:
    dtype = DTYPES[args.dtype]
    model = build_model(size, dtype, device)
    product.set_speed_options(model, settings["llm_attention"], args.fused_gelu, args.gradient_checkpointing)
    if args.compile:
        model.get_encoder().compile(dynamic=True)
        model.get_decoder().compile(dynamic=True)
    params = sum(p.numel() for p in model.parameters())
    soft_prompt = product.SoftPrompt.from_vocabulary(
        settings["n_soft_tokens"], model.get_input_embeddings().weight, args.seed
    ).to(device)
    bench = timed_batch(product, data, settings, args.batch, args.seed, device)
    counts = flop_counts(FLAN_T5[size], bench.prompts, bench.candidates.tolist(), data.title_ids,
                         settings["adalora"]["init_r"])
    flops = step_flops(counts)

    result = {"params": params, "flops": flops, "attn": model.config._attn_implementation}
    result["stage1"] = stage1(model, soft_prompt, bench, settings, args, device)
    llm, result["stage2"] = stage2(product, model, soft_prompt, bench, settings, args, device)
    result["scoring"] = scoring(llm, soft_prompt, bench, data, settings, args, device)
    result["stage1"]["mfu"] = mfu(flops["stage1"], result["stage1"]["step_ms"], peak_tflops)
    result["stage2"]["mfu"] = mfu(flops["stage2"], result["stage2"]["step_ms"], peak_tflops)
    scoring_ms = result["scoring"]["ms_per_user"] * args.batch
    result["scoring"]["mfu"] = mfu(flops["scoring"], scoring_ms, peak_tflops)
    result["scoring"]["test_seconds"] = result["scoring"]["ms_per_user"] * len(data.prompts) / 1e3
    del llm, model, soft_prompt, bench
    release(device)
    return result


def mfu(flops: float, ms: float, peak_tflops: float) -> float:
    return flops / (ms / 1e3) / (peak_tflops * 1e12)


def release(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- output
def records(results: dict, peak: float, stats: dict, args, n_users: int) -> list[dict]:
    date = datetime.date.today().isoformat()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    out = []

    def add(metric, value, unit=""):
        if value is not None:
            out.append({"metric": metric, "value": float(f"{float(value):.5g}"), "unit": unit,
                        "device": args.device_name, "date": date, "command": command})

    for name, value in stats.items():
        add(f"ml100k.t5.{name.replace('_', '_tokens_')}", value, "tokens")
    for size, r in results.items():
        key = f"{size}.{args.device_name}{variant_suffix(args)}."
        add(key + "matmul_peak_tflops", peak, f"TFLOP/s ({args.dtype})")
        for stage in ("stage1", "stage2"):
            add(key + f"{stage}.mfu", r[stage]["mfu"])
            add(key + f"{stage}.step_ms", r[stage]["step_ms"], "ms")
            add(key + f"{stage}.peak_gib", r[stage]["peak_gib"], "GiB")
        s = r["scoring"]
        add(key + "scoring.ms_per_user", s["ms_per_user"], "ms")
        add(key + "scoring.naive_ms_per_user", s["naive_ms_per_user"], "ms")
        add(key + "scoring.speedup_vs_naive", s["speedup"], "x")
        add(key + "scoring.max_abs_diff_vs_naive", s["max_abs_diff"], "mean log-likelihood")
        add(key + "scoring.mfu", s["mfu"])
        add(key + "scoring.peak_gib", s["peak_gib"], "GiB")
        add(key + "test_scoring_seconds", s["test_seconds"], f"s (extrapolated: {n_users} users x 20 candidates)")
    return out


def variant_suffix(args) -> str:
    """Options that change what is measured go into the metric keys (``xl.h100.gc.stage2.peak_gib``)."""
    options = (("gc", args.gradient_checkpointing), ("compile", args.compile), ("gelu_new", not args.fused_gelu))
    return "".join(f".{name}" for name, on in options if on)


def table(results: dict, peak: float, args) -> str:
    def gib(v):
        return "n/a" if v is None else f"{v:.2f}"

    rows = [
        ("params (M)", lambda r: f"{r['params'] / 1e6:.0f}"),
        ("stage1 step ms", lambda r: f"{r['stage1']['step_ms']:.1f}"),
        ("stage1 MFU", lambda r: f"{r['stage1']['mfu']:.3f}"),
        ("stage1 peak GiB", lambda r: gib(r["stage1"]["peak_gib"])),
        ("stage2 step ms", lambda r: f"{r['stage2']['step_ms']:.1f}"),
        ("stage2 MFU", lambda r: f"{r['stage2']['mfu']:.3f}"),
        ("stage2 peak GiB", lambda r: gib(r["stage2"]["peak_gib"])),
        ("scoring ms/user", lambda r: f"{r['scoring']['ms_per_user']:.2f}"),
        ("scoring MFU", lambda r: f"{r['scoring']['mfu']:.3f}"),
        ("scoring peak GiB", lambda r: gib(r["scoring"]["peak_gib"])),
        ("naive ms/user", lambda r: f"{r['scoring']['naive_ms_per_user']:.1f}"),
        ("speed-up vs naive", lambda r: f"{r['scoring']['speedup']:.1f}x"),
        ("max|fast-naive|", lambda r: f"{r['scoring']['max_abs_diff']:.2e}"
                                      + (" ok" if r["scoring"]["within_tolerance"] else " FAIL")),
        ("top-1 agreement", lambda r: f"{r['scoring']['top1_agreement']:.2f}"),
        ("test scoring s*", lambda r: f"{r['scoring']['test_seconds']:.1f}"),
    ]
    sizes = list(results)
    width = max(12, *(len(s) + 2 for s in sizes))
    lines = [f"{'':<20}" + "".join(f"{s:>{width}}" for s in sizes)]
    lines += [f"{label:<20}" + "".join(f"{fmt(results[s]):>{width}}" for s in sizes) for label, fmt in rows]
    lines.append(f"matmul peak {peak:.2f} TFLOP/s ({args.dtype}); memory: "
                 + ("torch.cuda.max_memory_allocated, weights included" if args.device == "cuda"
                    else "not measured on CPU"))
    lines.append("* extrapolated from ms/user to all ML-100K test users x 20 candidates")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    product = import_product(args.no_recbole)
    device = torch.device(args.device)
    args.device_name = args.device_name or device_slug(device)
    args.warmup = 2 if device.type == "cuda" or args.compile else 1
    settings = product_settings(product)
    args.fused_gelu = args.fused_gelu and settings["fused_gelu"]  # the product's setting, unless switched off
    titles, sequences = load_ml100k(ml100k_dir(args), product.normalize_title)
    data = build_prompts(product, load_tokenizer(args.spiece), titles, sequences, settings, args.seed)
    stats = token_stats(data)

    import peft
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
          f"device {args.device_name} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"{args.dtype}, batch {args.batch} x {settings['n_candidates']} candidates, repeats {args.repeats}, "
          f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, "
          f"fused GELU {'on' if args.fused_gelu else 'off'}, "
          f"torch.compile {'on' if args.compile else 'off'}", flush=True)
    print(f"ML-100K: {len(sequences)} users, {len(titles) - 1} items; prompt tokens mean {stats['prompt_mean']:.1f} "
          f"max {stats['prompt_max']} (incl. {settings['n_soft_tokens']} soft); title tokens mean "
          f"{stats['title_mean']:.1f} max {stats['title_max']}", flush=True)
    peak = matmul_peak_tflops(device, DTYPES[args.dtype])
    print(f"matmul peak: {peak:.2f} TFLOP/s", flush=True)

    results = {}
    for size in args.sizes:
        begin = time.perf_counter()
        try:
            results[size] = run_size(size, product, data, settings, args, device, peak)
        except torch.OutOfMemoryError as err:
            print(f"{size}: out of memory ({err}); skipped", flush=True)
            release(device)
            continue
        r = results[size]
        print(f"{size}: done in {time.perf_counter() - begin:.0f} s (attention: {r['attn']}, AdaLoRA steps "
              f"{r['stage2']['first_step']}.. of {r['stage2']['total_step']}, {r['stage2']['trainable'] / 1e6:.2f} M "
              f"trainable; model GFLOP per batch: scoring {r['flops']['scoring'] / 1e9:.1f}, stage1 "
              f"{r['flops']['stage1'] / 1e9:.1f}, stage2 {r['flops']['stage2'] / 1e9:.1f})", flush=True)

    out = records(results, peak, stats, args, len(sequences))
    if args.out:
        product.save_json(out, args.out)  # atomic: a failed run leaves the old file
        print(f"{len(out)} records -> {args.out}")
    print(table(results, peak, args) if results else "no size finished")
    failed = [s for s, r in results.items() if not r["scoring"]["within_tolerance"]]
    return 1 if failed or len(results) < len(args.sizes) else 0


if __name__ == "__main__":
    sys.exit(main())
