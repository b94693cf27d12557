"""The LLM behind one interface, whatever its family.

The rest of the plugin asks a :class:`Backbone` for what it needs and never which family it
holds: token ids of prompt pieces and titles (as they read inside running text), the wrapper
around a template's text (a chat template, or none), a candidate scorer, the body and pooling
that TSLRec reads, PEFT's task type.  Each family is one file beside this one
(:mod:`~recbole_delrec.llm.t5`: encoder-decoder; :mod:`~recbole_delrec.llm.causal`:
decoder-only); :mod:`~recbole_delrec.llm.loading` picks the one that runs a checkpoint from its
config (``is_encoder_decoder``, the causal-LM mapping), never from its name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from peft import TaskType
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.activations import ACT2FN, NewGELUActivation

from recbole_delrec.llm.attention import PROMPT_SPLIT
from recbole_delrec.llm.sources import LLMSource
from recbole_delrec.prompts import PromptBuilder

#: Attention kernels the candidate scorers build masks for.
ATTENTION_KERNELS = ("sdpa", "eager")


class Backbone:
    """An LLM, its tokenizer and where it came from, behind the interface the plugin uses."""

    family: ClassVar[str]
    task_type: ClassVar[TaskType]
    auto_class: ClassVar[Any]

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: LLMSource) -> None:
        self.model, self.tokenizer, self.source = model, tokenizer, source

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
    def pass_start(self) -> nn.Module:
        """The module whose forward runs once as each LLM pass starts, where the CPU heap's bound
        is checked (:func:`~recbole_delrec.runs.allocator.bound_heap`): the input embeddings."""
        return self.model.get_input_embeddings()

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

    def encode_all(self, texts: Sequence[str], data: bool = False) -> list[list[int]]:
        """:meth:`encode` of many texts in one tokenizer call (a 50k-item catalogue in seconds).

        ``data``: the texts are a data set's (titles), not ours: a title that spells a special
        token (``</s>``, ``<|im_end|>``) reads as those characters, never as the token, which would
        end the prompt or the scored answer inside the title."""
        return self.tokenizer(list(texts), add_special_tokens=False, split_special_tokens=data)["input_ids"]

    def encode_piece(self, text: str) -> list[int]:
        """A template's literal piece as it reads inside the prompt (between slots)."""
        return self.encode(text)

    def prompt_titles(self, titles: Sequence[str]) -> list[list[int]]:
        """Titles as they read inside a prompt's running text (history, candidates)."""
        return self.encode_all(titles, data=True)

    def answer_titles(self, titles: Sequence[str]) -> list[list[int]]:
        """Titles as the answer the scorer reads (without the end token)."""
        return self.encode_all(titles, data=True)

    def title_ids(self, titles: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """``(prompt_titles, answer_titles)`` of a catalogue's titles, what a run tokenises once."""
        return self.prompt_titles(titles), self.answer_titles(titles)

    @property
    def prompt_end(self) -> list[int]:
        """Token ids that close every prompt."""
        return []

    def wrap(self, template: str) -> str:
        """A template's text as this model reads instructions (a chat template, or as it is)."""
        return template

    def prompt_builder(self, template: str, static: Mapping[str, str], title_ids: Sequence[Sequence[int]],
                       n_soft: int, max_tokens: int) -> PromptBuilder:
        """A :class:`~recbole_delrec.prompts.PromptBuilder` for ``template`` as this model reads it:
        wrapped (:meth:`wrap`), its pieces and ``title_ids`` (:meth:`prompt_titles`) tokenised in
        running text, closed by :attr:`prompt_end`."""
        return PromptBuilder(self.wrap(template), static, self.encode_piece, title_ids, n_soft, max_tokens,
                             self.pad_id, self.prompt_end)

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


def set_speed_options(model: nn.Module, attention: str, fused_gelu: bool, gradient_checkpointing: bool,
                      compile: bool = False) -> None:
    """The LLM's kernels and memory options (``llm_attention``, ``fused_gelu``, ``gradient_checkpointing``,
    ``llm_compile``).

    The benchmarks call this too, so that they measure the model exactly as DELRec runs it.
    ``sdpa`` runs as :data:`~recbole_delrec.llm.attention.PROMPT_SPLIT`: the same kernel, which
    a decoder-only scorer asks to run its prompts causally and mask only its titles.
    """
    if attention not in ATTENTION_KERNELS:
        raise ValueError(f"llm_attention '{attention}' is not one of {list(ATTENTION_KERNELS)}.")
    model.set_attn_implementation(PROMPT_SPLIT if attention == "sdpa" else attention)
    if fused_gelu:
        use_fused_gelu(model)
    if gradient_checkpointing:  # non-reentrant: gradients reach the soft prompt with the LLM frozen
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if compile:
        compile_stacks(model)


def compile_stacks(model: PreTrainedModel) -> None:
    """``torch.compile`` the transformer stacks in place (T5: encoder and decoder; a causal LM: its body).

    In place (``nn.Module.compile``), so state-dict keys and PEFT's later injection are unchanged:
    the stack is traced at its first call, adapters included.  ``dynamic=True`` because prompt and
    packed-row lengths change every batch; each mode (stage-1 and stage-2 training, scoring
    without gradients) still compiles once, minutes on a CPU (SmolLM2 on 2 cores: ~7.5 min in all
    for 6-9% per step), which is why ``llm_compile`` is an option, off (``BENCHMARKS.md``).
    """
    stacks = [model.get_decoder()] + ([model.get_encoder()] if model.config.is_encoder_decoder else [])
    for stack in stacks:
        stack.compile(dynamic=True)


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
