"""The LLM behind one interface, whatever its family.

The rest of the plugin asks a :class:`Backbone` for what it needs and never which family it
holds: token ids of prompt pieces and titles (as they read inside running text), the wrapper
around a template's text (a chat template, or none), a candidate scorer, the body and pooling
that TSLRec reads, PEFT's task type.  Each family is one file beside this one
(:mod:`~recbole_delrec.llm.t5`: encoder-decoder; :mod:`~recbole_delrec.llm.causal`:
decoder-only) and registers itself in :data:`FAMILIES`; which one holds a checkpoint is read
from its config (``is_encoder_decoder``, the causal-LM mapping), never from its name.

``llm_path`` is resolved by :mod:`~recbole_delrec.llm.sources`; a GGUF file is dequantized
once and cached as a ``save_pretrained`` folder under ``checkpoint_dir``, keyed by the file's
content (the one cache scheme of :mod:`recbole_delrec.runs.cache`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from logging import getLogger
from pathlib import Path
from typing import Any, ClassVar

import torch
import transformers
from peft import TaskType
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.activations import ACT2FN, NewGELUActivation

from recbole_delrec.llm.sources import LLMSource, check_hub_id, gguf_config, resolve
from recbole_delrec.runs.artifacts import atomic_dir, fingerprint
from recbole_delrec.runs.cache import artifact_path, load_or_make

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: Attention kernels the candidate scorers build masks for.
ATTENTION_KERNELS = ("sdpa", "eager")
#: The families, most specific first; a family file appends its class when imported.
FAMILIES: list[type["Backbone"]] = []


class Backbone:
    """An LLM, its tokenizer and where it came from, behind the interface the plugin uses."""

    family: ClassVar[str]
    task_type: ClassVar[TaskType]
    auto_class: ClassVar[Any]

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: LLMSource) -> None:
        self.model, self.tokenizer, self.source = model, tokenizer, source

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        FAMILIES.append(cls)

    @classmethod
    def handles(cls, config: PretrainedConfig) -> bool:
        """Whether this family runs a checkpoint with this config."""
        raise NotImplementedError

    # ------------------------------------------------------------------ tokens
    @property
    def name(self) -> str:
        """A short readable name (file names, logs, soft-prompt metadata)."""
        return self.source.name

    @property
    def width(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    @property
    def pad_id(self) -> int:
        """The id that fills padding and soft-prompt placeholders (never attended to as text)."""
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    @property
    def end_id(self) -> int:
        """The token that ends a scored title (the answer is the title, nothing more)."""
        return self.tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        """Token ids of a text, without special tokens."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_all(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of many texts in one tokenizer call (a 50k-item catalogue in seconds)."""
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def encode_piece(self, text: str) -> list[int]:
        """A template's literal piece as it reads inside the prompt (between slots)."""
        return self.encode(text)

    def prompt_titles(self, titles: Sequence[str]) -> list[list[int]]:
        """Titles as they read inside a prompt's running text (history, candidates)."""
        return self.encode_all(titles)

    def answer_titles(self, titles: Sequence[str]) -> list[list[int]]:
        """Titles as the answer the scorer reads (without the end token)."""
        return self.encode_all(titles)

    @property
    def prompt_end(self) -> list[int]:
        """Token ids that close every prompt."""
        return []

    def wrap(self, template: str) -> str:
        """A template's text as this model reads instructions (a chat template, or as it is)."""
        return template

    # ------------------------------------------------------------------ computation
    def scorer(self, title_ids: Sequence[Sequence[int]]):
        """The family's :class:`~recbole_delrec.llm.scoring.CandidateScorer` for these titles."""
        raise NotImplementedError

    def body(self, model: nn.Module | None = None) -> nn.Module:
        """The module that maps ``inputs_embeds``/``attention_mask`` to hidden states (TSLRec)."""
        raise NotImplementedError

    @staticmethod
    def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, width)`` summary of ``(B, L, width)`` states over the real (mask) positions."""
        raise NotImplementedError


def load_backbone(settings: Mapping[str, Any], corpus: Iterable[str]) -> Backbone:
    """The LLM of ``llm_path`` (``llm_gguf_file``, ``llm_dtype``, on ``device``), or the scratch T5.

    ``settings``: a RecBole config (or a dict with those keys, ``scratch_llm`` and
    ``checkpoint_dir``); ``corpus``: the texts a scratch tokenizer is trained on.
    """
    source = resolve(settings["llm_path"], settings["llm_gguf_file"])
    if source.kind == "scratch":
        from recbole_delrec.llm.t5 import Seq2SeqBackbone

        return Seq2SeqBackbone.scratch(settings["scratch_llm"], corpus)
    location = source.location
    if source.kind == "gguf":
        location = str(dequantized_folder(source, settings["checkpoint_dir"]))
    return _pretrained(source, location, llm_dtype(settings["llm_dtype"], settings["device"]))


def check_llm_path(llm_path: str | None, gguf_file: str | None = None) -> LLMSource:
    """Fail before any data is read if ``llm_path`` cannot be loaded later.

    A local folder or GGUF file must hold a model of a family the plugin runs (its config is
    read, not its weights); a GGUF file's architecture one transformers can dequantize. A hub
    id must be well formed and, with downloads switched off (``HF_HUB_OFFLINE``/
    ``TRANSFORMERS_OFFLINE``), already in the local cache; an uncached id is named in a
    warning, since whether the network answers is known only when the model is built.
    """
    source = resolve(llm_path, gguf_file)
    if source.kind == "gguf":
        family_of(gguf_config(source.location))
    elif source.kind == "folder":
        family_of(AutoConfig.from_pretrained(source.location))
    elif source.kind == "hub":
        check_hub_id(source.location)
    return source


def family_of(config: PretrainedConfig) -> type[Backbone]:
    """The family that runs a checkpoint with this config."""
    import recbole_delrec.llm.causal  # noqa: F401  (the families register themselves)
    import recbole_delrec.llm.t5  # noqa: F401

    for family in FAMILIES:
        if family.handles(config):
            return family
    raise ValueError(
        f"The LLM's config is a '{config.model_type}' model, which is neither an encoder-decoder (T5 family) "
        f"nor a causal language model that transformers' AutoModelForCausalLM knows: give a Flan-T5 or a "
        f"decoder-only LLM (Llama, Qwen2, Gemma, SmolLM, ...) as llm_path."
    )


def _pretrained(source: LLMSource, location: str, dtype: torch.dtype) -> Backbone:
    try:
        family = family_of(AutoConfig.from_pretrained(location))
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = family.auto_class.from_pretrained(location, dtype=dtype)
    except OSError as err:
        raise OSError(
            f"Could not load llm_path '{source.location}' ({err}). Without network access, download "
            f"the model elsewhere (e.g. `huggingface-cli download {source.location}`) and set llm_path "
            f"to that local directory."
        ) from err
    getLogger().info(f"LLM: loaded '{source.name}' ({family.family}, {model.num_parameters() / 1e6:.1f} M "
                     f"parameters, {dtype})")
    return family(model, tokenizer, source)


def dequantized_folder(source: LLMSource, checkpoint_dir: str | Path) -> Path:
    """The GGUF file dequantized once into a ``save_pretrained`` folder, keyed by its content."""
    # transformers' dequantizer is part of what the folder holds: its major version is in the key
    key = fingerprint({**source.identity("float32"), "transformers": transformers.__version__.split(".")[0]})
    folder = artifact_path(checkpoint_dir, "llm", (source.name,), key).with_suffix("")
    return load_or_make(folder, lambda path: path, lambda path: _dequantize(source.location, path))


def _dequantize(file: str, folder: Path) -> Path:
    """Dequantize a GGUF file with transformers and save it as a plain float32 checkpoint."""
    start, path = time.time(), Path(file)
    family = family_of(gguf_config(file))
    model = family.auto_class.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    # The weights are dequantized already; the GGUF quantizer only forbids saving them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    atomic_dir(folder, write)
    getLogger().info(f"LLM: dequantized '{file}' into '{folder}' in {time.time() - start:.1f} s (reused from now on)")
    return folder


def llm_dtype(name: str, device: torch.device | str | None = None) -> torch.dtype:
    """The dtype of ``llm_dtype``; ``auto`` is bfloat16 where ``device`` computes it fast
    (a CUDA GPU with bf16, a CPU with AMX or AVX-512 BF16), float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if fast_bfloat16(torch.device(device or "cpu")) else torch.float32
    if name not in DTYPES:
        raise ValueError(f"llm_dtype '{name}' is not one of {sorted(DTYPES) + ['auto']}.")
    return DTYPES[name]


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` has bfloat16 matmul units (on this project's CPUs bf16 runs ~5x float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


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
    Returns how many feed-forward blocks were changed (0 for a model without ``gelu_new``).
    """
    swapped = 0
    for module in model.modules():
        if isinstance(getattr(module, "act", None), NewGELUActivation):
            module.act = ACT2FN["gelu_pytorch_tanh"]
            swapped += 1
    return swapped
