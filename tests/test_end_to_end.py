"""Whole runs on the ML-100K slice: RecBole's entry point, ours, artefact reuse, bad input."""

from pathlib import Path

import pytest
import torch
from recbole.quick_start import run_recbole
from recbole.utils import init_seed
from transformers import T5Config, T5ForConditionalGeneration

from recbole_delrec import run_delrec
from recbole_delrec.config import hidden_command_line, isolated_config
from recbole_delrec.llm.t5 import train_tokenizer
from recbole_delrec.delrec.model import DELRec
from tests.conftest import tiny_dict

METRICS = {"hit@1", "hit@5", "ndcg@5", "mrr@5"}


def test_run_delrec_end_to_end_prints_teacher_beside_delrec(tmp_path):
    saved_dir = tmp_path / "saved"  # empty: the first run trains the teacher, the second reuses it
    with hidden_command_line():
        result = run_delrec(config_dict=tiny_dict(saved_dir))
    assert METRICS <= set(result["test_result"]) and METRICS <= set(result["teacher_test_result"])
    assert 0.0 <= result["test_result"]["hit@1"] <= 1.0
    assert list(saved_dir.glob("teacher-ml-100k-SASRec-*.pth"))
    assert (Path(result["run_dir"]) / "result.json").is_file()
    with hidden_command_line():
        again = run_delrec(config_dict=tiny_dict(saved_dir))
    assert again["timings"]["teacher_seconds"] < result["timings"]["teacher_seconds"] / 2
    assert again["teacher_test_result"] == result["teacher_test_result"]  # same candidates, same teacher


def test_speed_options_together_run_both_stages(tmp_path):
    """RecBole's autocast, gradient checkpointing (recomputed backward) and the eager kernel."""
    options = {"enable_amp": True, "gradient_checkpointing": True, "llm_attention": "eager"}
    with hidden_command_line():  # an empty checkpoint folder: stage 1 runs under these options
        result = run_delrec(config_dict=tiny_dict(tmp_path, **options))
    assert result["stage1_result"]["fidelity_distilled"] >= result["stage1_result"]["fidelity_random"]
    assert METRICS <= set(result["test_result"])
    assert all(torch.isfinite(torch.tensor(v)) for v in [*result["test_result"].values(), *result["loss_history"]])


def test_recbole_run_recbole_knows_delrec(saved_dir):
    with hidden_command_line():
        result = run_recbole(model="DELRec", dataset="ml-100k", config_dict=tiny_dict(saved_dir))
    assert METRICS <= set(result["test_result"])


def test_local_llm_path_loads_real_weights(tiny_data, tmp_path):
    config, train, _, _ = tiny_data
    tokenizer = train_tokenizer(["Toy Story (1995)", "Heat (1995)", "Sabrina (1995)"], 120)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=4, num_heads=2,
                                             num_layers=1, num_decoder_layers=1, decoder_start_token_id=0))
    t5.save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    local = isolated_config("DELRec", "ml-100k", tiny_dict(tmp_path / "saved", llm_path=str(tmp_path / "t5"),
                                                          llm_dtype="float32"))
    init_seed(local["seed"], True)
    model = DELRec(local, train._dataset)
    shared = model.llm.get_base_model().shared.weight
    assert torch.equal(shared, t5.shared.weight)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"teacher_model": "NoSuchRec"}, "teacher_model 'NoSuchRec'"),
        ({"n_candidates": 100000}, "n_candidates"),
        ({"llm_path": "/no/such/flan-t5"}, "llm_path"),
    ],
)
def test_bad_input_gets_a_clear_error(saved_dir, override, message):
    with hidden_command_line(), pytest.raises((ValueError, FileNotFoundError), match=message):
        run_delrec(config_dict=tiny_dict(saved_dir, **override))
