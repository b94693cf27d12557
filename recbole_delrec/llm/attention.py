"""Attention over a packed candidate row: the prompt with the causal kernel, then the titles.

A decoder-only scorer packs each prompt and every candidate title after it into one row
(:class:`~recbole_delrec.llm.causal.PackedRow`).  One masked attention over that row computes
the titles-against-titles block only for the mask to hide it, and a dense mask keeps the
prompt's own (causal) attention off the kernels' causal fast path.  Split at the prompt's
width, the prompt's queries run with ``is_causal`` and no mask (its right padding comes after
every real query, so causality hides it), and only the title queries read the mask, against
the whole row's keys.  Same function, less work: SmolLM2 on a 2-core CPU scores 8-9% faster and
trains 2-6% faster per step, both kernels measured side by side (``benchmarks/ab_speed.py``,
``BENCHMARKS.md``).

After a shared prefix computed apart (:meth:`~recbole_delrec.llm.causal.CausalScorer.prefix_cache`)
the keys start that many tokens before the queries: the prompt's queries then see the prefix and
themselves causally, through a mask (the causal flag aligns a non-square block at its top left).

Registered with transformers' ``AttentionInterface`` as :data:`PROMPT_SPLIT`; a call without
``prompt_width`` (TSLRec's pooling, generation) is plain ``sdpa``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

#: The kernel name decoder-only models run under when ``llm_attention`` is ``sdpa``.
PROMPT_SPLIT = "sdpa_prompt_split"


def prompt_split_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, prompt_width: int | None = None, **kwargs,
) -> tuple[torch.Tensor, None]:
    """SDPA, with the queries of the prompt's first ``prompt_width`` tokens causal over the prompt's
    keys and the rest masked by ``attention_mask`` (``(B, 1, L - prompt_width, L)``, True = attend)
    over all keys; the keys may start with a prefix that has no queries here."""
    if prompt_width is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    prefix = key.shape[2] - query.shape[2]
    width = prompt_width - prefix  # the prompt's queries
    causal = torch.ones(1, 1, width, prompt_width, dtype=torch.bool, device=query.device).tril(prefix)
    causal = causal if prefix else None
    prompt, _ = sdpa_attention_forward(module, query[:, :, :width], key[:, :, :prompt_width],
                                       value[:, :, :prompt_width], causal, is_causal=causal is None, **kwargs)
    titles, _ = sdpa_attention_forward(module, query[:, :, width:], key, value, attention_mask, **kwargs)
    return torch.cat([prompt, titles], dim=1), None


AttentionInterface.register(PROMPT_SPLIT, prompt_split_attention)
AttentionMaskInterface.register(PROMPT_SPLIT, sdpa_mask)
