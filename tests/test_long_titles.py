"""Any catalogue runs with the default prompt budgets: long product titles, a huge catalogue,
odd titles.

Generated atomic data sets (``tests/generated.py``) in ``tmp_path``: titles of 40-80 words
(more tokens still), a 52,000-item catalogue with few interactions, and titles that spell
special tokens, other scripts and duplicates.  The tiny LLM and
teacher of ``tests/conftest.py`` keep them fast; every prompt setting is the default one
(``n_soft_tokens: 100``, ``history_length: 10``, ``max_prompt_title_tokens``,
``max_prompt_tokens``), which must fit by construction.
"""

from __future__ import annotations

import logging

from recbole_delrec import run_delrec
from recbole_delrec.config import hidden_command_line, isolated_config
from recbole_delrec.runs.startup import build
from tests.conftest import TINY_LLM, tiny_dict
from tests.generated import LOAD_COL, histories, titles, write_atomic

#: The tiny configuration's prompt settings go back to DELRec's defaults.
PROMPT_DEFAULTS = ("n_soft_tokens", "history_length", "max_prompt_tokens")
#: The tiny T5 with the default scratch tokenizer's 4,000 pieces: with the tiny 600, the
#: template's words split into letters on a catalogue of pseudo-words.
DEFAULT_VOCABULARY = {**TINY_LLM, "vocab_size": 4000}


def _defaults_for_prompts(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in PROMPT_DEFAULTS}


def test_long_product_titles_run_end_to_end_with_default_budgets(tmp_path, caplog):
    write_atomic(tmp_path, "longtitles", histories(24, 13, 120), titles(120, (40, 80)))
    values = _defaults_for_prompts(tiny_dict(
        tmp_path / "saved", data_path=str(tmp_path), load_col=LOAD_COL, domain="products",
        user_inter_num_interval="[1,inf)", stage1_batch_size=8, scratch_llm=DEFAULT_VOCABULARY,
    ))
    with hidden_command_line(), caplog.at_level(logging.WARNING):
        result = run_delrec(dataset="longtitles", config_dict=values)
    assert {"hit@1", "ndcg@5"} <= set(result["test_result"]) and result["stage1_result"]
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "Titles: 120 of 120 titles are cut to max_prompt_title_tokens=28 tokens in prompts" in log
    assert "to fit max_prompt_tokens=1024" in log  # 10 history titles of 28 tokens do not all fit
    lsr = [line for line in log.splitlines() if " lsr prompts lost " in line]
    assert len(lsr) == 3, lsr  # stage 2's training epoch, its validation and the test: each said once


def test_very_large_catalogue_checks_and_builds(tmp_path):
    n_items = 52_000
    write_atomic(tmp_path, "huge", histories(200, 6, n_items), titles(n_items, (3, 12), vocabulary=3000))
    values = tiny_dict(tmp_path / "saved", data_path=str(tmp_path), load_col=LOAD_COL, domain="products",
                       user_inter_num_interval="[1,inf)", scratch_llm=DEFAULT_VOCABULARY)
    started = build(isolated_config("DELRec", "huge", _defaults_for_prompts(values)))
    assert len(started.model.item_text) == n_items + 1 and started.model.item_text.n_fallback == 0
    assert started.model.prompts["lsr"].longest(20) <= started.config["max_prompt_tokens"]


def test_odd_titles_run_end_to_end_on_a_byte_level_llm(tmp_path, caplog):
    """Titles that spell special tokens or template slots, other scripts, emoji, double quotes
    and duplicates: read as text, run through, and the duplicates said in the log."""
    from tests.tiny_llms import save_tiny_llama

    odd = titles(60, (2, 5)) | {
        "i1": "Heat <|im_end|> 1995", "i2": "</s> <pad> Night", "i3": "东京 物語", "i4": "🎬 Café Crème",
        "i5": "Twin Peaks", "i6": "Twin Peaks", "i7": "{history} {candidates} {soft_prompt}",
        "i8": '"Weird Al" Yankovic Live', "i9": '12" Vinyl',
    }
    write_atomic(tmp_path, "odd", histories(24, 13, 60), odd)
    values = tiny_dict(tmp_path / "saved", data_path=str(tmp_path), load_col=LOAD_COL, domain="products",
                       user_inter_num_interval="[1,inf)", llm_path=save_tiny_llama(tmp_path / "llama"),
                       llm_dtype="float32")
    with hidden_command_line(), caplog.at_level(logging.WARNING):
        result = run_delrec(dataset="odd", config_dict=values)
    assert {"hit@1", "ndcg@5"} <= set(result["test_result"]) and result["stage1_result"]
    assert "Titles: 2 of 60 items share their scored title with another item (1 group, e.g. 'Twin Peaks')" in caplog.text
