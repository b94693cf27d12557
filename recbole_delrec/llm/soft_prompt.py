"""The soft prompt: ``n_soft_tokens`` trainable vectors of the LLM's width.

Stage 1 trains them (LLM frozen) to carry the teacher's recommendation pattern; stage 2
keeps them frozen inside the recommendation prompt.  They replace the encoder's input
embeddings at the prompt's placeholder positions (see :mod:`recbole_delrec.prompts`), so
the tokenizer and the vocabulary are left untouched: any Flan-T5 size works as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recbole_delrec.runs.artifacts import load_tensors, save_tensors


class SoftPrompt(nn.Module):
    """``n_tokens`` x ``width`` vectors, spliced into input embeddings in order."""

    def __init__(self, n_tokens: int, width: int, init: torch.Tensor | None = None) -> None:
        super().__init__()
        self.n_tokens = n_tokens
        weight = torch.empty(n_tokens, width)
        if init is not None:
            weight.copy_(init[:n_tokens])
        else:
            nn.init.normal_(weight, std=0.5)
        self.weight = nn.Parameter(weight)

    @classmethod
    def from_vocabulary(cls, n_tokens: int, embeddings: torch.Tensor, seed: int) -> "SoftPrompt":
        """Start from randomly chosen token embeddings: the usual, stable soft-prompt init."""
        gen = torch.Generator().manual_seed(seed)
        rows = torch.randint(3, embeddings.shape[0], (n_tokens,), generator=gen)
        return cls(n_tokens, embeddings.shape[1], embeddings[rows].detach().float().cpu())

    def splice(self, embeds: torch.Tensor, soft_mask: torch.Tensor) -> torch.Tensor:
        """``embeds`` with the rows of ``soft_mask`` replaced by the prompt vectors, in order.

        Every prompt that has a placeholder has exactly ``n_tokens`` of them, contiguous; a
        prompt without one is left as it is.
        """
        if self.n_tokens == 0:
            return embeds
        counts = soft_mask.sum(dim=1)
        if not torch.all((counts == 0) | (counts == self.n_tokens)):
            raise ValueError(
                f"A prompt has {counts.tolist()} soft positions; each needs 0 or {self.n_tokens}."
            )
        rows = int((counts > 0).sum())
        values = self.weight.to(embeds.dtype).unsqueeze(0).expand(rows, -1, -1)
        return embeds.masked_scatter(soft_mask.unsqueeze(-1), values.reshape(-1, embeds.shape[-1]))

    def save(self, path: str | Path, meta: Mapping[str, Any]) -> Path:
        """Write the vectors with what they belong to (LLM, width, data set), atomically."""
        return save_tensors({"weight": self.weight.detach().cpu(), "meta": dict(meta)}, path)

    def load(self, path: str | Path, meta: Mapping[str, Any]) -> dict[str, Any]:
        """Load vectors saved by :meth:`save`; refuse ones made for another LLM or shape."""
        saved = load_tensors(path)
        if tuple(saved["weight"].shape) != tuple(self.weight.shape):
            raise ValueError(
                f"Soft prompt '{path}' has shape {tuple(saved['weight'].shape)}, this model needs "
                f"{tuple(self.weight.shape)} (n_soft_tokens x LLM width)."
            )
        clashes = {k: (saved["meta"].get(k), v) for k, v in meta.items() if saved["meta"].get(k) != v}
        if clashes:
            raise ValueError(f"Soft prompt '{path}' was trained for another setting: {clashes} (saved, wanted).")
        with torch.no_grad():
            self.weight.copy_(saved["weight"])
        return saved["meta"]
