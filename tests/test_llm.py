"""Soft-prompt splicing, exact batched candidate scoring, and loading real T5 folders."""

import logging

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from recbole_delrec.llm.attention import PROMPT_SPLIT
from recbole_delrec.llm.backbone import use_fused_gelu
from recbole_delrec.llm.loading import load_backbone
from recbole_delrec.llm.precision import fast_bfloat16
from recbole_delrec.llm.scoring import PromptBatch
from recbole_delrec.llm.t5 import PackedTitles, Seq2SeqScorer, train_tokenizer
from recbole_delrec.llm.soft_prompt import SoftPrompt
from recbole_delrec.prompts import PromptIds

TITLES = [[5], [6, 7, 8], [9, 10], [11, 12, 13, 14], [15], [16, 17]]


def _tiny_t5(kernel: str = "sdpa", activation: str = "relu") -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = T5Config(vocab_size=64, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
                      num_decoder_layers=2, dropout_rate=0.0, decoder_start_token_id=0,
                      feed_forward_proj=activation)
    model = T5ForConditionalGeneration(config).eval()
    model.set_attn_implementation(kernel)
    return model


def test_soft_prompt_lands_exactly_at_the_placeholder():
    soft = SoftPrompt(3, 8)
    prompts = [PromptIds([9, 9, 0, 0, 0, 9, 1], 2), PromptIds([0, 0, 0, 9, 1], 0), PromptIds([9, 1], -1)]
    batch = PromptBatch.collate(prompts, pad_id=0, n_soft=3)
    embeds = torch.randn(3, 7, 8)
    out = soft.splice(embeds, batch.soft_mask)
    assert torch.equal(out[0, 2:5], soft.weight.detach())
    assert torch.equal(out[1, 0:3], soft.weight.detach())
    keep = ~batch.soft_mask
    assert torch.equal(out[keep], embeds[keep])


def test_soft_prompt_refuses_a_wrong_number_of_positions():
    soft = SoftPrompt(3, 4)
    mask = torch.tensor([[True, True, False]])
    with pytest.raises(ValueError, match="soft positions"):
        soft.splice(torch.zeros(1, 3, 4), mask)


@pytest.mark.parametrize("kernel", [PROMPT_SPLIT, "sdpa", "eager"])
def test_batched_scoring_equals_scoring_each_candidate_alone(kernel):
    model = _tiny_t5(kernel)
    scorer = Seq2SeqScorer(TITLES, pad_id=0, end_id=1)
    soft = SoftPrompt(2, 32)
    prompts = [PromptIds([3, 0, 0, 4, 20, 21, 1], 1), PromptIds([0, 0, 22, 1], 0)]
    batch = PromptBatch.collate(prompts, pad_id=0, n_soft=2)
    candidates = torch.tensor([[1, 2, 3, 5], [4, 2, 0, 1]])
    with torch.no_grad():
        batched = scorer(model, soft, batch, candidates)
        for row in range(2):
            single = PromptBatch.collate([prompts[row]], pad_id=0, n_soft=2)
            states = scorer.encode(model, soft, single)
            for col, item in enumerate(candidates[row].tolist()):
                alone = _naive_score(model, scorer, states, single.attention_mask, item)
                assert batched[row, col].item() == pytest.approx(alone, abs=1e-5)


def test_fused_gelu_scores_and_trains_like_gelu_new():
    """Flan-T5's gated-gelu FFNs get the one-kernel GELU; scores and gradients stay the same."""
    prompts = [PromptIds([3, 0, 0, 4, 20, 21, 1], 1), PromptIds([0, 0, 22, 1], 0)]
    batch = PromptBatch.collate(prompts, pad_id=0, n_soft=2)
    candidates = torch.tensor([[1, 2, 3], [4, 2, 5]])
    scorer = Seq2SeqScorer(TITLES, pad_id=0, end_id=1)
    results = []
    for fused in (False, True):
        model = _tiny_t5(activation="gated-gelu")
        if fused:
            use_fused_gelu(model)
        soft = SoftPrompt(2, 32, torch.ones(2, 32))
        scores = scorer(model, soft, batch, candidates)
        scores.sum().backward()
        results.append((scores.detach(), soft.weight.grad, model.encoder.block[0].layer[1].DenseReluDense.wi_0.weight.grad))
    (plain, *plain_grads), (fused, *fused_grads) = results
    assert torch.allclose(plain, fused, atol=1e-6)
    for a, b in zip(plain_grads, fused_grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_fused_gelu_leaves_other_activations_alone():
    assert use_fused_gelu(_tiny_t5(activation="relu")) == 0
    model = _tiny_t5(activation="gated-gelu")
    assert use_fused_gelu(model) == 4  # 2 encoder + 2 decoder feed-forward blocks
    acts = {type(m.act).__name__ for m in model.modules() if hasattr(m, "wo")}  # feed-forward blocks
    assert acts == {"GELUTanh"}


def _naive_score(model, scorer, states, mask, item) -> float:
    """The plain way: one full decoder forward through transformers for one candidate."""
    labels = scorer.labels[item][None]
    labels = labels[:, : int((labels != -100).sum())]
    decoder_in = torch.cat([torch.zeros(1, 1, dtype=torch.long), labels[:, :-1]], dim=1)
    out = model(encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=mask,
                decoder_input_ids=decoder_in)
    return _mean_log_likelihood(out.logits, labels).item()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_training_matches_plain_t5_on_repeated_prompts(checkpointing):
    """Loss and every gradient equal plain HF T5 run on C copies of each prompt."""
    prompts = [PromptIds([3, 0, 0, 4, 20, 21, 1], 1), PromptIds([0, 0, 22, 1], 0)]
    candidates = torch.tensor([[1, 2, 3], [4, 2, 0]])
    scorer = Seq2SeqScorer(TITLES, pad_id=0, end_id=1)
    batch = PromptBatch.collate(prompts, pad_id=0, n_soft=2)
    packed_model, plain_model = _tiny_t5().train(), _tiny_t5().train()
    if checkpointing:
        packed_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    packed_soft, plain_soft = SoftPrompt(2, 32), SoftPrompt(2, 32)
    plain_soft.load_state_dict(packed_soft.state_dict())

    packed = scorer(packed_model, packed_soft, batch, candidates).logsumexp(1).sum()
    packed.backward()
    plain = _repeated_prompt_scores(plain_model, plain_soft, scorer, batch, candidates).logsumexp(1).sum()
    plain.backward()

    assert packed.item() == pytest.approx(plain.item(), abs=1e-5)
    assert torch.allclose(packed_soft.weight.grad, plain_soft.weight.grad, atol=1e-5)
    plain_grads = dict(plain_model.named_parameters())
    for name, param in packed_model.named_parameters():
        assert torch.allclose(param.grad, plain_grads[name].grad, atol=1e-5), name


def _mean_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    valid = labels != -100
    picked = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return ((picked - logits.logsumexp(-1)) * valid).sum(1) / valid.sum(1)


def _repeated_prompt_scores(model, soft, scorer, batch, candidates) -> torch.Tensor:
    """The plain way: each prompt repeated once per candidate, through ``model(...)``."""
    n_cand = candidates.shape[1]
    embeds = soft.splice(model.get_input_embeddings()(batch.input_ids), batch.soft_mask)
    labels = scorer.labels[candidates.reshape(-1)]
    labels = labels[:, : int((labels != -100).sum(1).max())]
    decoder_in = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1].clamp(min=0)], dim=1)
    out = model(inputs_embeds=embeds.repeat_interleave(n_cand, 0),
                attention_mask=batch.attention_mask.repeat_interleave(n_cand, 0), decoder_input_ids=decoder_in)
    return _mean_log_likelihood(out.logits, labels).view(candidates.shape)


def test_packing_puts_each_title_behind_its_start_token_and_nothing_else():
    packed = PackedTitles.pack(Seq2SeqScorer(TITLES, 0, 1).labels, torch.tensor([[1, 4], [0, 2]]), pad_id=0)
    assert packed.labels.tolist() == [[6, 7, 8, 1, 15, 1], [5, 1, 9, 10, 1, -100]]
    assert packed.decoder_input_ids.tolist() == [[0, 6, 7, 8, 0, 15], [0, 5, 0, 9, 10, 0]]
    assert packed.candidate.tolist() == [[0, 0, 0, 0, 1, 1], [2, 2, 3, 3, 3, -1]]
    mask = packed.attention_mask("sdpa", torch.float32)[1, 0]
    assert mask[3].tolist() == [False, False, True, True, False, False]  # 2nd title's 2nd token


def test_llm_path_loads_a_saved_t5_through_from_pretrained(tmp_path):
    tokenizer = train_tokenizer(["Toy Story (1995)", "GoldenEye (1995)", "Heat (1995)"], 80)
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=4, num_heads=2,
                      num_layers=1, num_decoder_layers=1, decoder_start_token_id=0)
    saved = T5ForConditionalGeneration(config)
    saved.save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    backbone = load_backbone(_settings(str(tmp_path / "t5")), [])
    assert backbone.source.location == str(tmp_path / "t5") and backbone.name == "t5"
    loaded = dict(backbone.model.named_parameters())
    for name, param in saved.named_parameters():
        assert torch.equal(loaded[name], param)
    assert backbone.encode("Heat (1995)") == tokenizer("Heat (1995)", add_special_tokens=False)["input_ids"]


def test_a_t5_title_that_spells_a_special_token_reads_as_its_characters(tmp_path):
    """'</s>' inside a title must not end T5's scored answer (or its prompt) there."""
    tokenizer = train_tokenizer(["Toy Story (1995)", "Heat (1995)", "a <b/> paddings"], 80)
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=4, num_heads=2,
                      num_layers=1, num_decoder_layers=1, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    backbone = load_backbone(_settings(str(tmp_path / "t5")), [])
    (shown,), (answer,) = backbone.title_ids(["Heat </s> <pad> (1995)"])
    assert shown == answer and not set(tokenizer.all_special_ids) & set(answer)
    assert tokenizer.decode(answer) == "Heat </s> <pad> (1995)"


def test_missing_llm_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="llm_path"):
        load_backbone(_settings(str(tmp_path / "no-such-model")), [])


def test_bfloat16_forced_where_it_would_be_emulated_is_warned_about(tmp_path, caplog):
    """A CPU without bf16 units multiplies bf16 matrices 50-480x slower than float32: a forced
    ``llm_dtype: bfloat16`` there is warned about; where the units exist, nothing is said."""
    from tests.tiny_llms import save_tiny_llama

    settings = {**_settings(save_tiny_llama(tmp_path / "llama")), "llm_dtype": "bfloat16"}
    with caplog.at_level(logging.WARNING):
        backbone = load_backbone(settings, [])
    assert backbone.model.dtype == torch.bfloat16
    warned = any("no bf16 matmul units" in r.getMessage() for r in caplog.records)
    assert warned == (not fast_bfloat16(torch.device("cpu")))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_backbone({**settings, "llm_dtype": "auto"}, [])
    assert not any("no bf16 matmul units" in r.getMessage() for r in caplog.records)


def _settings(llm_path: str) -> dict:
    return {"llm_path": llm_path, "llm_gguf_file": None, "llm_dtype": "float32", "device": "cpu",
            "scratch_llm": {}, "checkpoint_dir": None}
