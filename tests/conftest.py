"""Shared fixtures: a small real slice of ML-100K, real RecBole loaders, a tiny real T5.

The slice keeps ML-100K's heaviest users (>= 300 interactions), so RecBole's real loading,
leave-one-out split and samplers run in seconds; the scratch T5 is shrunk to one layer.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import recbole_delrec
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_delrec.config import isolated_config
from recbole_delrec.data.candidates import check_candidates
from recbole_delrec.delrec.model import DELRec

TINY_LLM = {
    "vocab_size": 600, "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 2,
    "num_layers": 1, "num_decoder_layers": 1, "dropout_rate": 0.0, "feed_forward_proj": "gated-gelu",
}
TINY_TEACHER = {"epochs": 1, "train_batch_size": 2048, "learning_rate": 0.002, "stopping_step": 1,
                "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2}
TINY = {
    "use_gpu": False, "state": "WARNING", "show_progress": False, "seed": 7,
    "user_inter_num_interval": "[300,inf)",
    "epochs": 1, "eval_step": 1, "train_batch_size": 8, "train_prefixes_per_user": 1, "eval_batch_size": 400,
    "teacher_config": TINY_TEACHER, "llm_path": "scratch", "scratch_llm": TINY_LLM,
    "n_soft_tokens": 4, "history_length": 4,
}
SHARED = Path(__file__).resolve().parents[2] / "shared"

#: TSLRec's tiny settings: backbones and teacher of one small layer, two SFT epochs.
TINY_BACKBONE = {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1, "embedding_size": 16}
TSL = {
    "train_batch_size": 2048, "eval_batch_size": 4096, "MAX_ITEM_LIST_LENGTH": 20,
    "n_groups": 4, "sft_epochs": 2, "sft_batch_size": 16, "sft_history_length": 10, "augment_batch_size": 512,
    "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": None},
    "backbone_config": TINY_BACKBONE, "teacher_config": {**TINY_TEACHER, **TINY_BACKBONE},
}

recbole_delrec.register()  # every test sees RecBole as the plugin's entry points leave it


def tiny_dict(checkpoint_dir: Path, **overrides) -> dict:
    """The tiny configuration with its artefacts under ``checkpoint_dir``."""
    values = copy.deepcopy(TINY)
    values["checkpoint_dir"] = str(checkpoint_dir)
    values.update(overrides)
    return values


def tsl_dict(checkpoint_dir: Path, **overrides) -> dict:
    """TSLRec's tiny configuration with its artefacts under ``checkpoint_dir``."""
    return tiny_dict(checkpoint_dir, **{**TSL, **overrides})


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    models gain nothing from more, and the machine is shared."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def saved_dir(tmp_path_factory) -> Path:
    """One checkpoint folder per session, so the tiny teacher is trained once and reused."""
    return tmp_path_factory.mktemp("saved")


@pytest.fixture(scope="session")
def tiny_data(saved_dir):
    """(config, train, valid, test) for the ML-100K slice, with RecBole's real loaders; the
    candidate count resolved as the start-up resolves it."""
    config = isolated_config("DELRec", "ml-100k", tiny_dict(saved_dir))
    check_candidates(config)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return (config, *data_preparation(config, dataset))


@pytest.fixture
def tiny_model(tiny_data) -> DELRec:
    """A fresh DELRec on the slice (scratch T5, AdaLoRA, frozen soft prompt)."""
    config, train, _, _ = tiny_data
    init_seed(config["seed"], config["reproducibility"])
    return DELRec(config, train._dataset)
