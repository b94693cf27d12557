"""Candidate scoring: how likely the LLM finds each candidate's *whole* title.

The score of a candidate is the length-normalised log-likelihood of its full title (plus the
end token) given the prompt: titles that share a first word ("The ...") do not tie, and only
the real candidates compete.  How a family computes it without repeating the prompt per
candidate is its own file's business (:mod:`~recbole_delrec.llm.t5`,
:mod:`~recbole_delrec.llm.causal`); what they share is here: the prompt batch, the title
label table, the mean log-likelihood over a candidate's tokens, and the attention-mask form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from recbole_delrec.llm.attention import PROMPT_SPLIT
from recbole_delrec.llm.soft_prompt import SoftPrompt
from recbole_delrec.prompts import PromptIds


@dataclass
class PromptBatch:
    """Right-padded prompt inputs for a batch of prompts."""

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

    def shared_prefix(self) -> int:
        """How many first tokens every prompt shares (ids and soft positions), stopping short of
        the shortest prompt's last token, whose state predicts a title: what a causal LM computes
        once for the batch."""
        same = ((self.input_ids == self.input_ids[:1]).all(0) & (self.soft_mask == self.soft_mask[:1]).all(0)
                & self.attention_mask.bool().all(0))
        return min(int(same.long().cumprod(0).sum()), int(self.attention_mask.sum(1).min()) - 1)

    def to(self, device: torch.device) -> "PromptBatch":
        return PromptBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.soft_mask)))


class CandidateScorer:
    """What every family's scorer shares: each item's title labels (title tokens and the end
    token, ``-100`` after them) and the mean log-likelihood of a candidate's labels."""

    def __init__(self, title_ids: Sequence[Sequence[int]], pad_id: int, end_id: int) -> None:
        width = max(len(t) for t in title_ids) + 1
        labels = torch.full((len(title_ids), width), -100, dtype=torch.long)
        for item, ids in enumerate(title_ids):
            labels[item, : len(ids) + 1] = torch.tensor(list(ids) + [end_id])
        self.labels = labels
        self.pad_id = pad_id

    def score_prompts(
        self, llm, soft_prompt: SoftPrompt, prompts: Sequence[PromptIds], candidates: torch.Tensor,
        per_forward: int,
    ) -> torch.Tensor:
        """``(B, C)`` scores of ``prompts``, run through the LLM ``per_forward`` at a time.

        A batch larger than ``per_forward`` (an evaluation batch of ``eval_batch_size`` rows) is
        sorted by prompt length and scored in forwards of that many prompts: less padding, and
        activations that stay in the CPU's caches (SmolLM2 on 2 cores scores 32 users 1.2-1.3x
        faster in 4 forwards of 8 than in one, ``BENCHMARKS.md``).  Same scores, to the rounding
        of another batch shape; gradients flow through every forward alike.
        """
        if len(prompts) <= per_forward:
            return self._forward(llm, soft_prompt, prompts, candidates)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].input_ids))
        parts = [self._forward(llm, soft_prompt, [prompts[i] for i in chunk], candidates[chunk])
                 for chunk in (order[start : start + per_forward] for start in range(0, len(order), per_forward))]
        return torch.cat(parts)[torch.as_tensor(order).argsort().to(candidates.device)]

    def _forward(self, llm, soft_prompt: SoftPrompt, prompts: Sequence[PromptIds], candidates: torch.Tensor) -> torch.Tensor:
        batch = PromptBatch.collate(prompts, self.pad_id, soft_prompt.n_tokens).to(candidates.device)
        return self(llm, soft_prompt, batch, candidates)

    def table(self, device: torch.device) -> torch.Tensor:
        """The label table on ``device`` (moved once, not copied every batch)."""
        if self.labels.device != device:
            self.labels = self.labels.to(device)
        return self.labels

    @staticmethod
    def mean_log_likelihood(
        logits: torch.Tensor, labels: torch.Tensor, owner: torch.Tensor, shape: torch.Size,
        logit_row: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``shape`` (B, C) mean log-probability of each candidate's labels.

        ``labels`` ``(N,)`` are predicted by ``logits[logit_row]`` (by default row for row: a
        position that predicts several labels gets one row, and one vocabulary log-softmax);
        ``owner`` ``(N,)`` says which candidate (``b * C + c``) each belongs to.  The
        log-softmax runs in float32 whatever the model's dtype.
        """
        logits = logits.float()
        if logit_row is None:
            logit_row = torch.arange(labels.shape[0], device=labels.device)
        token_ll = logits[logit_row, labels] - logits.logsumexp(-1)[logit_row]
        total = torch.zeros(shape.numel(), device=token_ll.device, dtype=token_ll.dtype).index_add(0, owner, token_ll)
        count = torch.zeros_like(total).index_add(0, owner, torch.ones_like(token_ll))
        return (total / count).view(shape)


def kernel_mask(allowed: torch.Tensor, kernel: str, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True = attend) in the form the attention kernel takes: boolean for
    ``sdpa`` (and its :data:`~recbole_delrec.llm.attention.PROMPT_SPLIT` form), additive
    (0 / dtype's minimum) for ``eager``."""
    if kernel in ("sdpa", PROMPT_SPLIT):
        return allowed
    if kernel == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
    raise ValueError(f"llm_attention '{kernel}' is not supported by the candidate scorer: use sdpa or eager.")
