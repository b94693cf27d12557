"""Item embedding modules that slot into any RecBole sequential model.

RecBole's sequential models look items up with ``self.item_embedding(seq)`` and score the
whole catalogue with ``self.item_embedding.weight`` (``full_sort_predict``, and the CE loss
of SASRec/GRU4Rec/Caser/...).  Both modules here keep that contract: called with ids they
return ``(..., hidden)`` vectors, and ``.weight`` is the ``(num_embeddings, hidden)`` table of
exactly those vectors, recomputed from the current parameters (so gradients flow through
the full-ranking loss too).  Each wraps the backbone's own, already initialised
``nn.Embedding`` (the *ID embedding*); the padding id still maps to a zero vector.

* :class:`GatedItemEmbedding` (TSLRec): ``e = g * e_id + (1 - g) * proj(e_llm)`` with
  ``g = sigmoid(W [e_id; e_llm])``, a per-dimension gate, ``e_llm`` the frozen
  knowledge-enhanced embedding from the LLM.
* :class:`GroupedItemEmbedding` (the paper's *CI* variant): ``e = e_id + e_group``, a
  learned embedding of the item's pre-grouping index.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _ItemEmbeddingLike(nn.Module):
    """What RecBole code reads from an ``nn.Embedding`` besides calling it."""

    id_embedding: nn.Embedding

    @property
    def num_embeddings(self) -> int:
        return self.id_embedding.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.id_embedding.embedding_dim

    @property
    def padding_idx(self) -> int | None:
        return self.id_embedding.padding_idx

    def _all_ids(self) -> torch.Tensor:
        return torch.arange(self.num_embeddings, device=self.id_embedding.weight.device)

    def _init_std(self) -> float:
        """Spread of the backbone's own initialised item vectors (padding row left out)."""
        rows = self.id_embedding.weight.detach()[1:]
        std = float(rows.std()) if rows.numel() > 1 else 0.02
        return std if math.isfinite(std) and std > 0 else 0.02


class GatedItemEmbedding(_ItemEmbeddingLike):
    """TSLRec's gated mix of a learned ID embedding and a frozen LLM embedding.

    ``knowledge`` is the ``(n_items, d_llm)`` table of knowledge-enhanced embeddings (row 0:
    padding).  It is standardised per dimension over the real items: pooled encoder states
    share a large component (every input carries the same instruction), and centring leaves
    what tells items apart.  Rows beyond it (BERT4Rec's mask token) are zero.  ``proj`` starts
    at the scale of the backbone's own item vectors, so neither side swamps the other at
    the first step; the gate starts near 0.5.
    """

    def __init__(self, id_embedding: nn.Embedding, knowledge: torch.Tensor) -> None:
        super().__init__()
        self.id_embedding = id_embedding
        n, hidden = id_embedding.num_embeddings, id_embedding.embedding_dim
        if knowledge.dim() != 2 or knowledge.shape[0] > n:
            raise ValueError(
                f"knowledge table of shape {tuple(knowledge.shape)} does not fit an item "
                f"embedding of {n} rows."
            )
        d_llm = knowledge.shape[1]
        real = knowledge[1:].float()
        standard = (real - real.mean(0)) / real.std(0).clamp(min=1e-6) if len(real) > 1 else real
        table = torch.zeros(n, d_llm, device=id_embedding.weight.device)
        table[1 : knowledge.shape[0]] = standard.to(table.device)
        self.register_buffer("knowledge", table)
        self.proj = nn.Linear(d_llm, hidden)
        self.gate = nn.Linear(hidden + d_llm, hidden)
        nn.init.normal_(self.proj.weight, std=self._init_std() / math.sqrt(d_llm))
        nn.init.zeros_(self.proj.bias)
        nn.init.zeros_(self.gate.bias)

    def mix(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(vectors, gates)`` for ``ids``; both ``(..., hidden)``."""
        e_id = self.id_embedding(ids)
        e_llm = self.knowledge[ids]
        gate = torch.sigmoid(self.gate(torch.cat([e_id, e_llm], dim=-1)))
        out = gate * e_id + (1 - gate) * self.proj(e_llm)
        if self.padding_idx is not None:
            out = out.masked_fill((ids == self.padding_idx).unsqueeze(-1), 0.0)
        return out, gate

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mix(ids)[0]

    @property
    def weight(self) -> torch.Tensor:
        """The mixed ``(num_embeddings, hidden)`` table (what ``full_sort_predict`` scores)."""
        return self.mix(self._all_ids())[0]


class GroupedItemEmbedding(_ItemEmbeddingLike):
    """The *CI* variant: ID embedding plus a learned embedding of the item's group.

    ``groups`` holds each item id's pre-grouping index (``-1`` for padding); group
    embeddings are indexed ``group + 1`` so that padding (and BERT4Rec's mask row) add zero.
    """

    def __init__(self, id_embedding: nn.Embedding, groups: torch.Tensor, n_groups: int) -> None:
        super().__init__()
        self.id_embedding = id_embedding
        n = id_embedding.num_embeddings
        if groups.shape[0] > n or int(groups.max()) >= n_groups:
            raise ValueError(f"groups ({tuple(groups.shape)}, max {int(groups.max())}) do not fit {n} items / {n_groups} groups.")
        index = torch.zeros(n, dtype=torch.long)
        index[: groups.shape[0]] = (groups.long() + 1).clamp(min=0)
        self.register_buffer("group_index", index.to(id_embedding.weight.device))
        self.group_embedding = nn.Embedding(n_groups + 1, id_embedding.embedding_dim, padding_idx=0)
        nn.init.normal_(self.group_embedding.weight, std=self._init_std())
        with torch.no_grad():
            self.group_embedding.weight[0].zero_()
        self.group_embedding.to(id_embedding.weight.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.id_embedding(ids) + self.group_embedding(self.group_index[ids])

    @property
    def weight(self) -> torch.Tensor:
        return self.id_embedding.weight + self.group_embedding(self.group_index)
