"""The decoder-only family (Llama, Qwen2, Gemma, SmolLM, ...): titles follow the prompt.

Each prompt is computed **once**: one row holds the prompt and, after it, every candidate
title of that prompt, packed one after another.  A block mask lets each title token see the
prompt and the earlier tokens of its own title only, and each title's positions continue from
the prompt's end (rotary positions ``L, L+1, ...``), so every title is scored exactly as if it
alone followed the prompt (tested against one plain forward per candidate).  The LM head runs
only where a title token (or the end token) is predicted: the prompt's last position for each
title's first token, then each title token for the next.  Titles start after the batch's widest
prompt, so that with ``llm_attention: sdpa`` the prompts run as one causal block and only the
titles read the mask (:mod:`~recbole_delrec.llm.attention`); no work is done on padding beyond
that (stage 1 buckets prompts by length).

The prompts of a forward share their first tokens (the chat template's header, the soft prompt
and the instruction up to the first slot: ~150 of SmolLM2's ~500 prompt tokens), so that prefix
runs **once** per forward, as one row whose keys and values every row then reads (a transformers
``DynamicCache``, repeated over the batch): the same function, and in training the same
gradients, 1.17x faster per scored user and 1.24x per stage-2 step on a 2-core CPU
(``benchmarks/waste_ab.py``, ``BENCHMARKS.md``).  Dropout (AdaLoRA's
``lora_dropout``) then draws one mask for the prefix per forward.  A model whose cache drops
keys (sliding-window layers) or a training step under gradient checkpointing (which replays
layers without their cache) runs each row whole.

An instruction-tuned model gets its chat template around the template's text (the title is
the assistant's answer, closed by its end-of-turn token); a base model without one reads the
plain text, followed by a new line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from logging import getLogger

import torch
from peft import TaskType
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer

from recbole_delrec.llm.attention import PROMPT_SPLIT
from recbole_delrec.llm.backbone import Backbone
from recbole_delrec.llm.scoring import CandidateScorer, PromptBatch, kernel_mask
from recbole_delrec.llm.soft_prompt import SoftPrompt

#: Encoded before a piece and dropped, so the piece is tokenised as it reads mid-text
#: (byte-level BPE marks a word's leading space inside the word's own token).
ANCHOR = "\n"
#: Stands for the template's text while the chat template is rendered.
CONTENT = "\x00template\x00"
#: Decoder-only architectures the packed scorer is exact for: rotary positions (a title's
#: positions continue from the prompt's end) and a plain LM head (Gemma 2's softcapping is
#: applied).  ALiBi or learned positions (BLOOM, MPT, GPT-2), encoder-style heads (BERT) and
#: scaled heads (Granite, Cohere) are refused rather than scored slightly wrong.
ARCHITECTURES = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
                 "gemma3_text", "phi3", "olmo", "olmo2", "stablelm", "starcoder2", "smollm3")


class CausalBackbone(Backbone):
    """Decoder-only causal LMs that transformers' ``AutoModelForCausalLM`` loads."""

    family = "decoder-only"
    _told = False  # the "no chat template" log line, once per backbone
    task_type = TaskType.CAUSAL_LM
    auto_class = AutoModelForCausalLM

    @classmethod
    def handles(cls, config: PretrainedConfig) -> bool:
        return config.model_type in ARCHITECTURES and not getattr(config, "is_encoder_decoder", False)

    @property
    def end_id(self) -> int:
        """The token that closes the assistant's turn in the chat template (SmolLM2's and Qwen's
        ``<|im_end|>``, Llama 3's ``<|eot_id|>``, which is not always ``eos``); else ``eos``."""
        if not self.tokenizer.chat_template:
            return self.tokenizer.eos_token_id
        turn = [{"role": "user", "content": "a"}, {"role": "assistant", "content": CONTENT}]
        after = self.tokenizer.apply_chat_template(turn, tokenize=False).split(CONTENT)[1]
        ids = self.encode(after)
        return ids[0] if ids else self.tokenizer.eos_token_id

    def encode_piece(self, text: str) -> list[int]:
        """A literal piece as it reads mid-prompt; trailing spaces go to the next title's token."""
        return self._in_text([text.rstrip(" ")])[0]

    def prompt_titles(self, titles: Sequence[str]) -> list[list[int]]:
        """Each title after a space, as a word in running text (``" Star Wars (1977)"``)."""
        return self._in_text([" " + title for title in titles], data=True)

    def _in_text(self, texts: Sequence[str], data: bool = False) -> list[list[int]]:
        """``texts`` tokenised as they read mid-text (``data``: see :meth:`encode_all`)."""
        skip = len(self.encode(ANCHOR))
        return [ids[skip:] for ids in self.encode_all([ANCHOR + text for text in texts], data)]

    def wrap(self, template: str) -> str:
        """The chat template around the text (the user's turn, then the assistant's start).

        The chat template is rendered around a placeholder and its own text escaped, so that
        braces in it (a system prompt's JSON) never read as template slots."""
        if not self.tokenizer.chat_template:
            if not self._told:
                getLogger().info(f"LLM: '{self.name}' has no chat template: its prompts are the templates' plain text")
                self._told = True
            return self._bos(template + "\n")
        messages = [{"role": "user", "content": CONTENT}]
        before, after = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True).split(CONTENT)
        return self._bos(_escaped(before) + template + _escaped(after))

    def _bos(self, text: str) -> str:
        """``text`` opened by the BOS token where the tokenizer opens every text with it (Llama 2
        and 3) and the chat template has not written it already."""
        bos = self.tokenizer.bos_token
        adds = bool(bos) and self.tokenizer("a")["input_ids"][:1] == [self.tokenizer.bos_token_id]
        return bos + text if adds and not text.startswith(bos) else text

    def scorer(self, title_ids: Sequence[Sequence[int]]) -> "CausalScorer":
        return CausalScorer(title_ids, self.pad_id, self.end_id)

    def body(self, model: nn.Module | None = None) -> nn.Module:
        return (model or self.model).base_model

    @staticmethod
    def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The last real position: the only one that has read the whole input (causal attention)."""
        last = mask.long().sum(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class CausalScorer(CandidateScorer):
    """Scores candidate items for prompts with a decoder-only LM (prompt once, titles packed)."""

    #: Whether a forward's shared prompt prefix runs once (:meth:`prefix_cache`); off only to measure it.
    share_prefix = True

    def __call__(self, llm, soft_prompt: SoftPrompt, batch: PromptBatch, candidates: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` mean log-likelihood of each candidate title after its prompt."""
        row = PackedRow.pack(batch, self.table(candidates.device), candidates, self.pad_id)
        embeds = soft_prompt.splice(llm.get_input_embeddings()(row.input_ids), row.soft_mask)
        kernel = llm.config._attn_implementation
        prefix, cache = self.prefix_cache(llm, batch, embeds, row.position_ids)
        split = {"prompt_width": row.prompt_width} if kernel == PROMPT_SPLIT else {}
        hidden = llm.base_model(
            inputs_embeds=embeds[:, prefix:],
            attention_mask=row.attention_mask(kernel, embeds.dtype, prefix),
            position_ids=row.position_ids[:, prefix:],
            cache=cache,
            use_cache=cache is not None,
            **split,
        ).last_hidden_state
        logits = llm.get_output_embeddings()(hidden.flatten(0, 1)[row.predictors_after(prefix)])
        cap = getattr(llm.config, "final_logit_softcapping", None)
        if cap:  # what the model's own forward does to its logits (Gemma 2)
            logits = torch.tanh(logits / cap) * cap
        return self.mean_log_likelihood(logits, row.labels, row.owner, candidates.shape, row.logit_row)

    def prefix_length(self, batch: PromptBatch) -> int:
        """The first tokens of ``batch`` computed once (0: each row whole): its prompts' shared
        prefix, where there are several prompts and sharing is on."""
        return batch.shared_prefix() if self.share_prefix and len(batch.input_ids) > 1 else 0

    def prefix_cache(self, llm, batch: PromptBatch, embeds: torch.Tensor,
                     positions: torch.Tensor) -> tuple[int, DynamicCache | None]:
        """``(prefix, cache)``: the keys and values of the prompts' shared first ``prefix`` tokens,
        computed on one row and repeated over the batch; ``(0, None)`` where sharing does not
        apply (one prompt, nothing shared, a sliding-window cache, a checkpointed training step)."""
        prefix = self.prefix_length(batch)
        replayed = llm.is_gradient_checkpointing and llm.training and torch.is_grad_enabled()
        if prefix == 0 or replayed:
            return 0, None
        cache = DynamicCache(config=llm.config)
        if any(type(layer) is not DynamicLayer for layer in cache.layers):  # a layer that drops keys
            return 0, None
        llm.base_model(inputs_embeds=embeds[:1, :prefix], position_ids=positions[:1, :prefix], cache=cache,
                       use_cache=True)
        cache.batch_repeat_interleave(len(embeds))
        return prefix, cache


@dataclass
class PackedRow:
    """Each prompt followed by its candidate titles, in one row per prompt.

    Titles start at ``prompt_width`` (the batch's longest prompt; a shorter prompt's padding
    sits between it and its titles), so that the prompts' queries form one causal block
    (:mod:`~recbole_delrec.llm.attention`).  ``segment`` is ``-1`` on prompt tokens, the
    candidate's column on its title tokens, and ``-2`` on padding; ``labels`` (title tokens and
    the end token of every candidate, flat), ``owner`` (``b * C + c`` of each label) and
    ``logit_row`` (which of ``predictors``, the flat positions the LM head reads, predicts it)
    select the LM head's work.  Every candidate's first token is predicted by the prompt's last
    position: it is read once.
    """

    input_ids: torch.Tensor
    soft_mask: torch.Tensor
    position_ids: torch.Tensor
    segment: torch.Tensor
    labels: torch.Tensor
    owner: torch.Tensor
    predictors: torch.Tensor
    logit_row: torch.Tensor
    prompt_width: int

    @classmethod
    def pack(cls, batch: PromptBatch, table: torch.Tensor, candidates: torch.Tensor, pad_id: int) -> "PackedRow":
        n_prompts, n_cand = candidates.shape
        device = candidates.device
        labels = table[candidates.reshape(-1)]
        valid = labels != -100
        title_len = (valid.sum(1) - 1).view(n_prompts, n_cand)  # input tokens: the labels but the end token
        prompt_len = batch.attention_mask.sum(1).to(device)
        prompt_width = batch.input_ids.shape[1]
        starts = prompt_width + title_len.cumsum(1) - title_len
        width = prompt_width + int(title_len.sum(1).max())
        span = torch.arange(width, device=device)
        segment = torch.where(span[None, :] < prompt_len[:, None], -1, -2)
        input_ids = torch.full((n_prompts, width), pad_id, dtype=torch.long, device=device)
        input_ids[:, :prompt_width] = batch.input_ids.to(device)
        position_ids = torch.where(segment == -1, span[None, :], 0)
        soft_mask = torch.zeros((n_prompts, width), dtype=torch.bool, device=device)
        soft_mask[:, :prompt_width] = batch.soft_mask.to(device)

        rows, cols = valid.nonzero(as_tuple=True)  # every label: (candidate b * C + c, token j)
        prompt, first = rows // n_cand, starts.view(-1)[rows]
        is_input = cols < title_len.view(-1)[rows]  # the end token is predicted, never read
        at = first[is_input] + cols[is_input]
        input_ids[prompt[is_input], at] = labels[rows[is_input], cols[is_input]]
        position_ids[prompt[is_input], at] = prompt_len[prompt[is_input]] + cols[is_input]
        segment[prompt[is_input], at] = rows[is_input] % n_cand
        predictor = prompt * width + torch.where(cols == 0, prompt_len[prompt] - 1, first + cols - 1)
        predictors, logit_row = predictor.unique(return_inverse=True)
        return cls(input_ids, soft_mask, position_ids, segment, labels[rows, cols], rows, predictors, logit_row,
                   prompt_width)

    def attention_mask(self, kernel: str, dtype: torch.dtype, prefix: int = 0) -> torch.Tensor:
        """``(B, 1, L - prefix, L)``: the prompt causally; each title the prompt and its own earlier
        tokens; padding only what came before it (so no row of the mask is empty).  The queries
        start after a ``prefix`` computed apart (:meth:`CausalScorer.prefix_cache`), the keys at
        the row's start.  For :data:`~recbole_delrec.llm.attention.PROMPT_SPLIT` only the title
        queries' rows (``(B, 1, L - prompt_width, L)``): the prompt's block is causal without a mask."""
        width = self.segment.shape[1]
        first = self.prompt_width if kernel == PROMPT_SPLIT else prefix
        query, key = self.segment[:, first:].unsqueeze(2), self.segment.unsqueeze(1)
        causal = torch.ones(width, width, dtype=torch.bool, device=self.segment.device).tril()[first:]
        allowed = causal & ((key == -1) | (key == query))
        return kernel_mask(allowed.unsqueeze(1), kernel, dtype)

    def predictors_after(self, prefix: int) -> torch.Tensor:
        """:attr:`predictors` as flat positions in the rows less their first ``prefix`` tokens
        (every predictor lies after them: a shared prefix stops short of each prompt's end)."""
        rows = self.predictors // self.segment.shape[1]
        return self.predictors - (rows + 1) * prefix


def _escaped(text: str) -> str:
    """``text`` with its braces doubled: literal text for the template's ``{slot}`` filling."""
    return text.replace("{", "{{").replace("}", "}}")
