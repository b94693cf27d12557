"""The LLM: Flan-T5 from the hub or a local folder, or an offline scratch T5.

``llm_path`` names a Hugging Face hub id (``google/flan-t5-xl``) or a local directory made by
``save_pretrained``; both go through ``from_pretrained``.  With ``llm_path: ~`` (the
default) nothing is downloaded: a small T5 is built from ``scratch_llm`` in the YAML with
random weights, and a SentencePiece-style Unigram tokenizer is trained on the data set's
titles and the prompt templates.  That keeps every path runnable offline; the log says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import getLogger
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import is_offline_mode, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing
from torch import nn
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.activations import ACT2FN, NewGELUActivation

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]
SCRATCH = "scratch-t5"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: Attention kernels the candidate scorer builds masks for (T5 has no flash-attention path).
ATTENTION_KERNELS = ("sdpa", "eager")
#: Environment switches that forbid downloads (huggingface_hub's and transformers' own).
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass
class Backbone:
    """A seq2seq LLM, its tokenizer, and a short description of where it came from."""

    model: T5ForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    source: str

    @property
    def width(self) -> int:
        return self.model.config.d_model

    def encode(self, text: str) -> list[int]:
        """Token ids of a text piece, without special tokens."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_all(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of many texts in one tokenizer call (a 50k-item catalogue in seconds)."""
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def load_backbone(
    llm_path: str | None,
    scratch: Mapping[str, Any],
    corpus: Iterable[str],
    dtype: str = "float32",
) -> Backbone:
    """Load ``llm_path`` (hub id or directory), or build the scratch T5 when it is empty."""
    if not llm_path:
        return _scratch_backbone(scratch, corpus)
    return _pretrained_backbone(str(llm_path), _dtype(dtype))


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"llm_dtype '{name}' is not one of {sorted(DTYPES)}.")
    return DTYPES[name]


def looks_local(llm_path: str) -> bool:
    """A path on this machine rather than a hub id: the one rule for loading and cache keys."""
    return llm_path.startswith((".", "/", "~")) or Path(llm_path).exists()


def check_llm_path(llm_path: str | None) -> None:
    """Fail before any data is read if ``llm_path`` cannot be loaded later.

    Empty: the offline scratch model.  A path: a ``save_pretrained`` folder with its
    ``config.json``.  Otherwise a well-formed hub id, present in the local Hugging Face cache
    or downloadable; with downloads switched off (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``)
    an id that is not cached is an error, and any uncached id is named in a warning, since
    whether the network answers is only known when the model is built.
    """
    if not llm_path:
        return
    llm_path = str(llm_path)
    if looks_local(llm_path):
        _check_local_llm(llm_path, Path(llm_path).expanduser())
        return
    try:
        validate_repo_id(llm_path)
    except HFValidationError as err:
        raise ValueError(
            f"llm_path '{llm_path}' is neither an existing folder nor a hub id ({err}): give a "
            f"folder written by `save_pretrained`, a hub id such as 'google/flan-t5-xl', or "
            f"leave llm_path empty for the offline scratch model."
        ) from None
    if isinstance(try_to_load_from_cache(llm_path, "config.json"), str):
        return
    advice = (
        f"download it where there is network access (`huggingface-cli download {llm_path}`, "
        f"or `save_pretrained` to a folder), then set llm_path to that folder, or leave llm_path "
        f"empty for the offline scratch model."
    )
    if _offline():
        raise OSError(
            f"llm_path '{llm_path}' is not in the local Hugging Face cache and downloads are "
            f"switched off ({', '.join(OFFLINE_SWITCHES)}): {advice}"
        )
    getLogger().warning(
        f"llm_path '{llm_path}' is not in the local Hugging Face cache: it will be downloaded "
        f"when the model is built, which fails without network access; then {advice}"
    )


def _check_local_llm(llm_path: str, path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(
            f"llm_path '{llm_path}' does not exist: give a directory written by "
            f"`save_pretrained` (config.json, weights, tokenizer files) or a hub id such as "
            f"'google/flan-t5-xl', or leave llm_path empty for the offline scratch model."
        )
    if not (path / "config.json").is_file():
        found = sorted(p.name for p in path.iterdir())[:10]
        raise FileNotFoundError(
            f"llm_path '{llm_path}' has no config.json (it holds {found}): point llm_path at the "
            f"folder that `save_pretrained` wrote (config.json, weights, tokenizer files)."
        )


def _offline() -> bool:
    switched = (os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE") for name in OFFLINE_SWITCHES)
    return is_offline_mode() or any(switched)


def _pretrained_backbone(llm_path: str, dtype: torch.dtype) -> Backbone:
    local = looks_local(llm_path)
    path = Path(llm_path).expanduser()
    if local:
        _check_local_llm(llm_path, path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path) if local else llm_path)
        model = T5ForConditionalGeneration.from_pretrained(
            str(path) if local else llm_path, dtype=dtype
        )
    except OSError as err:
        raise OSError(
            f"Could not load llm_path '{llm_path}' ({err}). Without network access, download "
            f"the model elsewhere (e.g. `huggingface-cli download {llm_path}`) and set llm_path "
            f"to that local directory."
        ) from err
    getLogger().info(f"LLM: loaded '{llm_path}' ({model.num_parameters() / 1e6:.1f} M parameters)")
    return Backbone(model, tokenizer, llm_path)


def _scratch_backbone(scratch: Mapping[str, Any], corpus: Iterable[str]) -> Backbone:
    arch = dict(scratch)
    tokenizer = train_tokenizer(corpus, int(arch.pop("vocab_size")))
    config = T5Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        # transformers >= 5 ties T5's head to its embeddings whatever this says; False keeps the
        # decoder output unscaled, as in Flan-T5 (T5 v1.1).
        tie_word_embeddings=False,
        **arch,
    )
    model = T5ForConditionalGeneration(config)
    getLogger().warning(
        "LLM: llm_path is empty, so DELRec uses an offline scratch T5 "
        f"({model.num_parameters() / 1e6:.2f} M parameters, random weights, tokenizer of "
        f"{len(tokenizer)} pieces trained on this data set). For the paper's model set "
        "`llm_path: google/flan-t5-xl` (or a local Flan-T5 directory)."
    )
    return Backbone(model, tokenizer, SCRATCH)


def set_speed_options(model: nn.Module, attention: str, fused_gelu: bool, gradient_checkpointing: bool) -> None:
    """The LLM's kernels and memory options (``llm_attention``, ``fused_gelu``, ``gradient_checkpointing``).

    The benchmarks call this too, so that they measure the model exactly as DELRec runs it.
    """
    if attention not in ATTENTION_KERNELS:
        raise ValueError(f"llm_attention '{attention}' is not one of {list(ATTENTION_KERNELS)}.")
    model.set_attn_implementation(attention)
    if fused_gelu:
        use_fused_gelu(model)
    if gradient_checkpointing:  # non-reentrant: gradients reach the soft prompt with the LLM frozen
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def use_fused_gelu(model: nn.Module) -> int:
    """Swap T5's ``gelu_new`` for PyTorch's fused tanh GELU: the same function in one kernel.

    transformers evaluates ``gelu_new`` (Flan-T5's feed-forward activation) as a chain of
    elementwise operations, and autograd keeps most of their results for backward: at Flan-T5-XL,
    batch 8, ~140 MiB per layer, 3.3 GiB of stage 2's peak (``benchmarks/llm_memory.py``).
    ``F.gelu(approximate="tanh")`` computes the same formula in one kernel, in float32 inside, and
    keeps only its input; its error against a float64 reference is the same as ``gelu_new``'s.
    Returns how many feed-forward blocks were changed.
    """
    swapped = 0
    for module in model.modules():
        if isinstance(getattr(module, "act", None), NewGELUActivation):
            module.act = ACT2FN["gelu_pytorch_tanh"]
            swapped += 1
    return swapped


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A T5-style tokenizer (``<pad>``=0, ``</s>``=1, ``<unk>``=2) fit on ``corpus``.

    Byte-pair merges over SentencePiece-style word boundaries: on a catalogue of a few
    thousand titles, BPE reaches whole-word pieces (short prompts), where a Unigram model
    trained on so little text stops at a vocabulary of sub-word fragments.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    tok.post_processor = TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
