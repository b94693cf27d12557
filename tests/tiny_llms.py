"""Tiny real LLM files for tests that load LLMs the way users give them (no download, no mocks).

:func:`write_tiny_gguf` writes a random two-layer Llama with a byte-level BPE tokenizer as a
float32 GGUF file, laid out as llama.cpp's ``convert_hf_to_gguf.py`` lays out a Llama, and
returns the transformers model and tokenizer it was written from, so that a test can compare
what the plugin loads from the file against the originals.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from recbole_delrec.llm.attention import PROMPT_SPLIT
from recbole_delrec.prompts import PromptIds

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Star Wars (1977)", "The Empire Strikes Back (1980)", "Return of the Jedi (1983)", "Toy Story (1995)",
    "The user watched these movies in order; recommend the next one.", "Fargo (1996)", "Contact (1997)",
] * 20
# GGUF token types (llama.cpp's ``gguf.TokenType``)
NORMAL, CONTROL = 1, 3


def tiny_tokenizer(vocab_size: int = 300, chat: bool = True) -> PreTrainedTokenizerFast:
    """A gpt2-style byte-level BPE (what ``tokenizer.ggml.model = gpt2`` describes, and SmolLM2
    uses: a word's leading space lives in its token), trained here; ``chat``: with a chat template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   chat_template=CHAT_TEMPLATE if chat else None)


def llama_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (``LlamaModel.permute``), which transformers undoes on load."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def write_tiny_gguf(path: str | Path, seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Write a random tiny Llama and its tokenizer as a float32 GGUF file at ``path``.

    Returns ``(model, tokenizer)``, the transformers originals the file was written from.
    """
    import gguf

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rms_norm_eps=1e-6, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config).eval()
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(config.hidden_size // heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    assert [index for _, index in vocab] == list(range(len(vocab))), "the vocabulary must have no gaps"
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([CONTROL if token in SPECIAL_TOKENS else NORMAL for token, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    # transformers' own GGUF loader finds its names with this map (get_gguf_hf_weights_map)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        weights = tensor.detach().float().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            weights = llama_permute(weights, heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            weights = llama_permute(weights, kv_heads)
        stem, suffix = hf_name.rsplit(".", 1)
        writer.add_tensor(f"{names.get_name(stem)}.{suffix}", np.ascontiguousarray(weights))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model, tokenizer


#: Title token ids of six items, for scorers fed by hand.
TITLES = [[5], [6, 7, 8], [9, 10], [11, 12, 13, 14], [15], [16, 17]]


#: Prompts that open alike (a token, two soft positions, a token), as a template's header does.
SHARED = [PromptIds([3, 0, 0, 4, 20, 21, 30], 1), PromptIds([3, 0, 0, 4, 20, 22], 1),
          PromptIds([3, 0, 0, 4, 25, 26, 27, 28], 1)]


def tiny_llama(vocab: int = 64, kernel: str = PROMPT_SPLIT) -> LlamaForCausalLM:
    """A seeded random two-layer Llama in eval mode, attention through ``kernel``."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    model.set_attn_implementation(kernel)
    return model


def save_tiny_llama(folder, chat: bool = True) -> str:
    """A tiny random Llama and byte-level tokenizer in a ``save_pretrained`` folder."""
    tokenizer = tiny_tokenizer(chat=chat)
    model = tiny_llama(len(tokenizer))
    model.config.pad_token_id = model.config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
