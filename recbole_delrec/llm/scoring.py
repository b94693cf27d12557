"""Candidate scoring: how likely the LLM finds each candidate's *whole* title.

The score of a candidate is the length-normalised log-likelihood of its full title (plus
``</s>``) under the decoder, given the prompt.  Each prompt is encoded once.  The decoder then
reads all of that prompt's candidate titles *packed* into one sequence, each title attending
only to itself (a block-diagonal causal mask), against the prompt's own encoder states:

* the prompt is never repeated per candidate, so every decoder layer projects its keys and
  values once per prompt (plain Hugging Face use, one copy of the prompt per candidate, does it
  C times and keeps C copies: ~19 GB at Flan-T5-XL, batch 8, 20 candidates);
* a packed row is as long as its titles (mean 8.5 T5 tokens on ML-100K), where C padded rows
  would all be as long as the batch's longest title (up to 25): less than half the decoder work;
* the LM head and its log-softmax run on real title tokens only.

T5's decoder self-attention bias depends only on the distance between two positions, so a
title packed at any offset gets exactly the scores it gets alone (tested).
Scoring whole titles (not a first sub-word over the whole catalogue) means titles that
share a first word ("The ...") do not tie, and only the real candidates compete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.modeling_outputs import BaseModelOutput

from recbole_delrec.llm.soft_prompt import SoftPrompt
from recbole_delrec.prompts import PromptIds


@dataclass
class PromptBatch:
    """Padded encoder inputs for a batch of prompts."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    soft_mask: torch.Tensor

    @classmethod
    def collate(cls, prompts: Sequence[PromptIds], pad_id: int, n_soft: int) -> "PromptBatch":
        width = max(len(p.input_ids) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        soft = torch.zeros((len(prompts), width), dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt.input_ids)] = torch.tensor(prompt.input_ids)
            mask[row, : len(prompt.input_ids)] = 1
            if prompt.soft_start >= 0:
                soft[row, prompt.soft_start : prompt.soft_start + n_soft] = True
        return cls(ids, mask, soft)

    def to(self, device: torch.device) -> "PromptBatch":
        return PromptBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.soft_mask)))


class CandidateScorer:
    """Scores candidate items for prompts with a T5-style encoder-decoder."""

    def __init__(self, title_ids: Sequence[Sequence[int]], pad_id: int, eos_id: int) -> None:
        width = max(len(t) for t in title_ids) + 1
        labels = torch.full((len(title_ids), width), -100, dtype=torch.long)
        for item, ids in enumerate(title_ids):
            labels[item, : len(ids) + 1] = torch.tensor(list(ids) + [eos_id])
        self.labels = labels
        self.pad_id = pad_id

    def encode(self, llm, soft_prompt: SoftPrompt, batch: PromptBatch) -> torch.Tensor:
        """Encoder states of the prompts, with the soft prompt at its placeholder."""
        embeds = llm.get_input_embeddings()(batch.input_ids)
        embeds = soft_prompt.splice(embeds, batch.soft_mask)
        return llm.get_encoder()(inputs_embeds=embeds, attention_mask=batch.attention_mask)[0]

    def score(
        self, llm, states: torch.Tensor, attention_mask: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """``(B, C)`` mean log-likelihood of each candidate title given its prompt's states."""
        if self.labels.device != candidates.device:  # moved once, not copied every batch
            self.labels = self.labels.to(candidates.device)
        packed = PackedTitles.pack(self.labels, candidates, self.pad_id)
        hidden = llm.get_decoder()(
            input_ids=packed.decoder_input_ids,
            attention_mask=packed.attention_mask(llm.config._attn_implementation, states.dtype),
            encoder_hidden_states=states,
            encoder_attention_mask=attention_mask,
            use_cache=False,
        ).last_hidden_state
        hidden = hidden[packed.is_label]
        if llm.config.scale_decoder_outputs:  # what T5ForConditionalGeneration does before its head
            hidden = hidden * llm.model_dim**-0.5
        logits = llm.lm_head(hidden).float()
        token_ll = logits.gather(-1, packed.labels[packed.is_label].unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        owner = packed.candidate[packed.is_label]
        total = torch.zeros(candidates.numel(), device=token_ll.device, dtype=token_ll.dtype).index_add(0, owner, token_ll)
        count = torch.zeros_like(total).index_add(0, owner, torch.ones_like(token_ll))
        return (total / count).view(candidates.shape)

    def __call__(self, llm, soft_prompt: SoftPrompt, batch: PromptBatch, candidates: torch.Tensor):
        return self.score(llm, self.encode(llm, soft_prompt, batch), batch.attention_mask, candidates)


@dataclass
class PackedTitles:
    """The candidate titles of each prompt, one after another in one decoder row.

    ``candidate`` numbers each position's title ``b * C + c`` (``-1``: padding at the row's
    end); ``labels`` are the title tokens and ``</s>`` (``-100`` on padding), and the decoder
    input of each title is its labels shifted right behind the start token (``pad``).
    """

    decoder_input_ids: torch.Tensor
    labels: torch.Tensor
    candidate: torch.Tensor

    @property
    def is_label(self) -> torch.Tensor:
        return self.candidate >= 0

    @classmethod
    def pack(cls, label_table: torch.Tensor, candidates: torch.Tensor, pad_id: int) -> "PackedTitles":
        n_prompts, n_cand = candidates.shape
        labels = label_table[candidates.reshape(-1)]
        valid = labels != -100
        lengths = valid.sum(1).view(n_prompts, n_cand)
        starts = (lengths.cumsum(1) - lengths).view(-1, 1)
        rows, cols = valid.nonzero(as_tuple=True)
        prompt, position = rows // n_cand, starts[rows, 0] + cols
        width = int(lengths.sum(1).max())
        shifted = torch.cat([torch.full_like(labels[:, :1], pad_id), labels[:, :-1].clamp(min=0)], dim=1)
        out = cls(
            torch.full((n_prompts, width), pad_id, dtype=torch.long, device=labels.device),
            torch.full((n_prompts, width), -100, dtype=torch.long, device=labels.device),
            torch.full((n_prompts, width), -1, dtype=torch.long, device=labels.device),
        )
        out.decoder_input_ids[prompt, position] = shifted[rows, cols]
        out.labels[prompt, position] = labels[rows, cols]
        out.candidate[prompt, position] = rows
        return out

    def attention_mask(self, kernel: str, dtype: torch.dtype) -> torch.Tensor:
        """``(B, 1, L, L)`` causal attention within each title (padding sees itself only).

        Boolean (True = attend) for ``sdpa``; additive (0 / dtype's minimum) for ``eager``.
        """
        width = self.candidate.shape[1]
        same = self.candidate.unsqueeze(2) == self.candidate.unsqueeze(1)
        causal = torch.ones(width, width, dtype=torch.bool, device=same.device).tril()
        allowed = (same & causal).unsqueeze(1)
        if kernel == "sdpa":
            return allowed
        if kernel == "eager":
            return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
                ~allowed, torch.finfo(dtype).min
            )
        raise ValueError(f"llm_attention '{kernel}' is not supported by the candidate scorer: use sdpa or eager.")
