"""Candidate scoring: how likely the LLM finds each candidate's *whole* title.

The score of a candidate is the length-normalised log-likelihood of its full title (plus
``</s>``) under the decoder, given the prompt.  Each prompt is encoded once; the decoder then
scores all of that prompt's candidates in one batched pass over the shared encoder states.
Scoring whole titles (not a first sub-word over the whole catalogue) means titles that
share a first word ("The ...") do not tie, and only the real candidates compete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
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
        n_prompts, n_cand = candidates.shape
        if self.labels.device != candidates.device:  # moved once, not copied every batch
            self.labels = self.labels.to(candidates.device)
        labels = self.labels[candidates.reshape(-1)]
        labels = labels[:, : int((labels != -100).sum(1).max())]
        shifted = labels[:, :-1].masked_fill(labels[:, :-1] == -100, self.pad_id)
        decoder_in = torch.cat([torch.full_like(labels[:, :1], self.pad_id), shifted], dim=1)
        cache = cross_attention_cache(llm, states, n_cand)
        out = llm(
            encoder_outputs=BaseModelOutput(last_hidden_state=states.repeat_interleave(n_cand, dim=0)),
            attention_mask=attention_mask.repeat_interleave(n_cand, dim=0),
            decoder_input_ids=decoder_in,
            past_key_values=cache,
            use_cache=True,
        )
        return _mean_log_likelihood(out.logits, labels).view(n_prompts, n_cand)

    def __call__(self, llm, soft_prompt: SoftPrompt, batch: PromptBatch, candidates: torch.Tensor):
        return self.score(llm, self.encode(llm, soft_prompt, batch), batch.attention_mask, candidates)


def cross_attention_cache(llm, states: torch.Tensor, n_cand: int) -> EncoderDecoderCache:
    """Each decoder layer's cross-attention keys/values, projected once per prompt.

    Without this, T5 projects the (long) prompt's states to keys and values once per
    *candidate*: with 20 candidates that is most of the scorer's arithmetic.  The cache is
    what T5 itself would build; it is only filled from ``B`` prompts instead of ``B*C`` copies.
    """
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    for index, block in enumerate(llm.decoder.block):
        attention = block.layer[1].EncDecAttention
        shape = (*states.shape[:-1], -1, attention.key_value_proj_dim)
        keys = attention.k(states).view(shape).transpose(1, 2).repeat_interleave(n_cand, dim=0)
        values = attention.v(states).view(shape).transpose(1, 2).repeat_interleave(n_cand, dim=0)
        cache.cross_attention_cache.update(keys, values, index)
        cache.is_updated[index] = True
    return cache


def _mean_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean log p(label) over the non-padding positions of each row."""
    valid = labels != -100
    logits = logits.float()
    picked = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    token_ll = (picked - logits.logsumexp(-1)) * valid
    return token_ll.sum(1) / valid.sum(1)
