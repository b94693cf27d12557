"""TSLRec's two LLM steps: information reconstruction (SFT) and information augmentation.

The LLM is the backbone's *body*: a T5 encoder, or a decoder-only LLM's transformer stack
(SmolLM2 by default, any Flan-T5 or causal LM with ``llm_path``, the scratch T5 in tests).  Its input
is the instruction of ``prompts/templates/tslrec.txt`` with the ``{items}`` slot replaced by
item *vectors*, not words: each item's embedding from the trained ID-based model (the
teacher), mapped to the LLM's width by a trainable linear projection, takes the place of a
token embedding.  No item text is used anywhere.

* **Reconstruction** (:func:`train_sft`): for every training user, the encoder reads
  ``instruction + user's items + "Response:"``; the pooled hidden state goes through a
  group projection and a softmax, trained with squared error against the user's
  preference distribution over the pre-grouping clusters.  LoRA adapters (``q``/``v``)
  tune the LLM; the projection and the group head train fully.  One encoder pass per
  training user per epoch.
* **Augmentation** (:func:`augment`): each item alone, as a one-item sequence, through the
  tuned encoder (no gradients): the pooled state is the item's *knowledge-enhanced
  embedding*, the softmax its inferred category distribution.  One pass per item, batched.

:attr:`PreferenceLLM.calls` counts the sequences that went through the encoder, per phase.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from logging import getLogger
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.nn import functional as F

from recbole_delrec.llm.backbone import Backbone
from recbole_delrec.prompts import load_template

ITEMS_SLOT = "{items}"
GROUPS_SLOT = "{n_groups}"
LORA_KEYS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias")


def instruction(template: str, n_groups: int) -> tuple[str, str]:
    """The text before and after the ``{items}`` slot, with ``{n_groups}`` filled in."""
    slots = set(re.findall(r"\{(\w+)\}", template))
    if template.count(ITEMS_SLOT) != 1 or slots - {"items", "n_groups"}:
        raise ValueError(
            f"The TSLRec template must contain `{{items}}` exactly once and no slot other than "
            f"`{{n_groups}}`; it has {sorted(slots)}: {template!r}"
        )
    before, after = template.replace(GROUPS_SLOT, str(n_groups)).split(ITEMS_SLOT)
    return before.strip(), after.strip()


def tslrec_template(config: Mapping[str, Any]) -> str:
    """The packaged ``tslrec.txt`` (or the one in ``prompt_template_dir``)."""
    return load_template("tslrec", config["domain"] or "", config["prompt_template_dir"])


def tokenizer_corpus(template: str, n_groups: int) -> list[str]:
    """What the offline scratch tokenizer is trained on: the instruction only (no titles)."""
    return [" ".join(instruction(template, n_groups))]


class PreferenceLLM(nn.Module):
    """LLM body + item projection + group head: ``sequences -> (pooled, distribution)``.

    **Pooling** is the family's (:meth:`~recbole_delrec.llm.backbone.Backbone.pool`): a T5
    encoder's mean over the real positions (bidirectional: every position has read the item
    vectors; the strongest T5 sentence embedding, Sentence-T5), a causal LM's last real
    position (the only one that has read the whole input).  Either way the padding is masked,
    so a one-item augmentation input and a long SFT input pool the same way.
    """

    def __init__(
        self,
        backbone: Backbone,
        item_table: torch.Tensor,
        n_groups: int,
        template: str,
        lora: Mapping[str, Any],
    ) -> None:
        super().__init__()
        unknown = set(lora) - set(LORA_KEYS)
        if unknown:
            raise ValueError(f"Unknown `lora` options {sorted(unknown)}; known: {list(LORA_KEYS)}.")
        body = backbone.body()
        body.requires_grad_(False)
        self.encoder = get_peft_model(body, LoraConfig(**dict(lora)))
        self.pool = backbone.pool
        self.source = backbone.name
        self.width = backbone.width
        table = item_table.float()
        real = table[1:]
        # Unit spread for the projection's input, whatever the teacher's embedding scale.
        self.register_buffer("item_table", table / real.std().clamp(min=1e-6), persistent=False)
        self.item_proj = nn.Linear(table.shape[1], self.width)
        self.group_head = nn.Linear(self.width, n_groups)
        before, after = instruction(template, n_groups)
        self.prefix_ids = backbone.encode(before)
        self.suffix_ids = backbone.encode(after) + backbone.prompt_end
        self.pad_id = backbone.pad_id
        self.calls = {"sft": 0, "augment": 0}

    @property
    def device(self) -> torch.device:
        return self.item_proj.weight.device

    def _inputs(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs_embeds, attention_mask)``: instruction tokens with item vectors spliced in."""
        n_pre, n_post = len(self.prefix_ids), len(self.suffix_ids)
        lengths = [n_pre + len(seq) + n_post for seq in sequences]
        width = max(lengths)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        items = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            end = n_pre + len(seq)
            ids[row, :n_pre] = torch.as_tensor(self.prefix_ids)
            items[row, n_pre:end] = torch.as_tensor(list(seq), dtype=torch.long)
            ids[row, end : end + n_post] = torch.as_tensor(self.suffix_ids)
        ids, items = ids.to(self.device), items.to(self.device)
        mask = torch.arange(width, device=self.device)[None, :] < torch.as_tensor(lengths, device=self.device)[:, None]
        tokens = self.encoder.get_base_model().get_input_embeddings()(ids)
        vectors = self.item_proj(self.item_table[items]).to(tokens.dtype)
        embeds = torch.where((items > 0).unsqueeze(-1), vectors, tokens)
        return embeds, mask

    def forward(self, sequences: Sequence[Sequence[int]], phase: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled hidden states ``(B, width)`` and group distributions ``(B, n_groups)``."""
        if not sequences or any(len(seq) == 0 for seq in sequences):
            raise ValueError("Every sequence fed to the LLM needs at least one item.")
        embeds, mask = self._inputs(sequences)
        hidden = self.encoder(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        pooled = self.pool(hidden.float(), mask)
        self.calls[phase] += len(sequences)
        return pooled, F.softmax(self.group_head(pooled), dim=-1)


def preference_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error to the target distribution, summed over groups, averaged over users.

    That is ``n_groups`` times torch's element-mean MSE: the same minimiser, without shrinking
    every gradient by ``1 / n_groups``.
    """
    return ((predicted - target) ** 2).sum(-1).mean()


def train_sft(
    llm: PreferenceLLM,
    sequences: Sequence[Sequence[int]],
    targets: torch.Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> dict[str, Any]:
    """Information reconstruction: ``epochs`` passes, one encoder pass per user each.

    ``llm_seconds_per_epoch`` is the mean time of the LLM's forward and backward passes in
    one epoch (batch building and optimizer steps excluded).
    """
    logger = getLogger()
    params = [p for p in llm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    generator = torch.Generator().manual_seed(int(seed))
    targets = targets.to(llm.device)
    losses, llm_seconds = [], []
    llm.train()
    for epoch in range(epochs):
        order = torch.randperm(len(sequences), generator=generator).tolist()
        total, seconds = 0.0, 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            tick = time.perf_counter()
            _, predicted = llm([sequences[r] for r in rows], phase="sft")
            loss = preference_loss(predicted, targets[rows])
            loss.backward()
            seconds += time.perf_counter() - tick
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(rows)
        losses.append(total / max(len(order), 1))
        llm_seconds.append(seconds)
        logger.info(f"TSLRec SFT epoch {epoch}: preference loss {losses[-1]:.5f} (LLM {seconds:.1f} s)")
    llm.eval()
    return {
        "losses": losses,
        "llm_seconds": llm_seconds,
        "llm_seconds_per_epoch": sum(llm_seconds) / len(llm_seconds) if llm_seconds else 0.0,
    }


@torch.no_grad()
def augment(llm: PreferenceLLM, n_items: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Information augmentation: every item alone through the tuned LLM, once.

    Returns the knowledge-enhanced embeddings ``(n_items, width)`` and inferred category
    distributions ``(n_items, n_groups)``; row 0 (padding) is zero in both.
    """
    llm.eval()
    embeddings = torch.zeros(n_items, llm.width)
    distributions = torch.zeros(n_items, llm.group_head.out_features)
    for start in range(1, n_items, batch_size):
        ids = list(range(start, min(start + batch_size, n_items)))
        pooled, probs = llm([[i] for i in ids], phase="augment")
        embeddings[ids] = pooled.float().cpu()
        distributions[ids] = probs.float().cpu()
    return embeddings, distributions
