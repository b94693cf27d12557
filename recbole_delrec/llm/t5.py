"""The encoder-decoder family (T5, Flan-T5): the encoder reads the prompt, the decoder the titles.

Each prompt is encoded once.  The decoder then reads all of that prompt's candidate titles
*packed* into one sequence, each title attending only to itself (a block-diagonal causal
mask), against the prompt's own encoder states:

* the prompt is never repeated per candidate, so every decoder layer projects its keys and
  values once per prompt (plain Hugging Face use, one copy of the prompt per candidate, does it
  C times and keeps C copies: ~19 GB at Flan-T5-XL, batch 8, 20 candidates);
* a packed row is as long as its titles (mean 8.5 T5 tokens on ML-100K), where C padded rows
  would all be as long as the batch's longest title (up to 25): less than half the decoder work;
* the LM head and its log-softmax run on real title tokens only.

T5's decoder self-attention bias depends only on the distance between two positions, so a
title packed at any offset gets exactly the scores it gets alone (tested).

With ``llm_path: scratch`` a small T5 is built from ``scratch_llm`` with random weights and a
byte-pair tokenizer trained on the data set's titles and the templates: every path runs
offline and fast (the test suite's model); the log says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import getLogger
from typing import Any

import torch
from peft import TaskType
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing
from torch import nn
from transformers import AutoModelForSeq2SeqLM, PretrainedConfig, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from recbole_delrec.llm.backbone import Backbone
from recbole_delrec.llm.scoring import CandidateScorer, PromptBatch, kernel_mask
from recbole_delrec.llm.soft_prompt import SoftPrompt
from recbole_delrec.llm.sources import SCRATCH, LLMSource

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]


class Seq2SeqBackbone(Backbone):
    """T5-family models: prompts end with ``</s>``, titles are decoded after the start token."""

    family = "encoder-decoder"
    task_type = TaskType.SEQ_2_SEQ_LM
    auto_class = AutoModelForSeq2SeqLM

    @classmethod
    def handles(cls, config: PretrainedConfig) -> bool:
        """T5 and its multilingual variants: the scorer relies on T5's relative position bias
        (a packed title scores as it does alone) and its decoder-output scaling."""
        return config.model_type in ("t5", "mt5", "umt5")

    @property
    def pass_start(self) -> nn.Module:
        """The encoder: the input embeddings are shared with the decoder and run twice a pass."""
        return self.model.get_encoder()

    @classmethod
    def scratch(cls, arch: Mapping[str, Any], corpus: Iterable[str]) -> "Seq2SeqBackbone":
        """The offline scratch T5 (random weights, tokenizer trained on ``corpus``)."""
        arch = dict(arch)
        tokenizer = train_tokenizer(corpus, int(arch.pop("vocab_size")))
        config = T5Config(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
            # transformers >= 5 ties T5's head to its embeddings whatever this says; False keeps the
            # decoder output unscaled, as in Flan-T5 (T5 v1.1).
            tie_word_embeddings=False,
            **arch,
        )
        model = T5ForConditionalGeneration(config)
        getLogger().warning(
            "LLM: llm_path is 'scratch', so DELRec uses an offline scratch T5 "
            f"({model.num_parameters() / 1e6:.2f} M parameters, random weights, tokenizer of "
            f"{len(tokenizer)} pieces trained on this data set): a test model that knows nothing. For a "
            "real LLM set `llm_path: smollm2-135m-instruct` (offline) or a Flan-T5 (`google/flan-t5-xl`)."
        )
        return cls(model, tokenizer, LLMSource("scratch", "", SCRATCH))

    @property
    def prompt_end(self) -> list[int]:
        return [self.tokenizer.eos_token_id]

    def title_ids(self, titles: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """One tokenizer pass: T5 reads a title alike in the prompt and as the decoder's answer."""
        ids = self.encode_all(titles, data=True)
        return ids, ids

    def scorer(self, title_ids: Sequence[Sequence[int]]) -> "Seq2SeqScorer":
        return Seq2SeqScorer(title_ids, self.pad_id, self.end_id)

    def body(self, model: nn.Module | None = None) -> nn.Module:
        return (model or self.model).get_encoder()

    @staticmethod
    def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The mean over real positions: T5 has no summary token, and for T5 encoders the mean
        is the strongest sentence embedding (Sentence-T5, Ni et al. 2022)."""
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1)


class Seq2SeqScorer(CandidateScorer):
    """Scores candidate items for prompts with a T5-style encoder-decoder."""

    def encode(self, llm, soft_prompt: SoftPrompt, batch: PromptBatch) -> torch.Tensor:
        """Encoder states of the prompts, with the soft prompt at its placeholder."""
        embeds = soft_prompt.splice(llm.get_input_embeddings()(batch.input_ids), batch.soft_mask)
        return llm.get_encoder()(inputs_embeds=embeds, attention_mask=batch.attention_mask)[0]

    def score(self, llm, states: torch.Tensor, attention_mask: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` mean log-likelihood of each candidate title given its prompt's states."""
        packed = PackedTitles.pack(self.table(candidates.device), candidates, self.pad_id)
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
        return self.mean_log_likelihood(llm.lm_head(hidden), packed.labels[packed.is_label],
                                        packed.candidate[packed.is_label], candidates.shape)

    def __call__(self, llm, soft_prompt: SoftPrompt, batch: PromptBatch, candidates: torch.Tensor) -> torch.Tensor:
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
        """``(B, 1, L, L)`` causal attention within each title (padding sees itself only)."""
        width = self.candidate.shape[1]
        same = self.candidate.unsqueeze(2) == self.candidate.unsqueeze(1)
        causal = torch.ones(width, width, dtype=torch.bool, device=same.device).tril()
        return kernel_mask((same & causal).unsqueeze(1), kernel, dtype)


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A T5-style tokenizer (``<pad>``=0, ``</s>``=1, ``<unk>``=2) fit on ``corpus``.

    Byte-pair merges over SentencePiece-style word boundaries: on a catalogue of a few
    thousand titles, BPE reaches whole-word pieces (short prompts), where a Unigram model
    trained on so little text stops at a vocabulary of sub-word fragments.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
