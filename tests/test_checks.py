"""Bad settings fail fast: one test per case, through the real entry point (``run_delrec``).

Each case must stop with a message that names the setting, what was found and the fix, before
anything trains: no teacher file may appear in ``checkpoint_dir``.  The data are small
generated atomic files (``tests/generated.py``) and RecBole's bundled ML-100K.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest
import torch

from recbole_delrec import run_delrec
from recbole_delrec.config import hidden_command_line, isolated_config
from recbole_delrec.prompts import load_template
from recbole_delrec.runs.startup import build
from recbole_delrec.tslrec.quick_start import run_tslrec
from tests.conftest import tiny_dict, tsl_dict
from tests.generated import LOAD_COL, histories, titles, write_atomic

N_ITEMS = 60


@pytest.fixture
def toy(tmp_path) -> dict:
    """A good generated data set ``toy`` (40 users x 8 items of 60) and DELRec values for it."""
    write_atomic(tmp_path, "toy", histories(40, 8, N_ITEMS), titles(N_ITEMS, (2, 6)))
    return tiny_dict(tmp_path / "saved", data_path=str(tmp_path), load_col=LOAD_COL, title_field="title",
                     domain="products", user_inter_num_interval="[1,inf)")


def fails_fast(values: dict, *expected: str, dataset: str = "toy") -> str:
    """Run DELRec; it must fail with every ``expected`` piece in the message, and no teacher file."""
    with hidden_command_line(), pytest.raises((ValueError, OSError)) as info:
        run_delrec(dataset=dataset, config_dict=values)
    message = str(info.value)
    for piece in expected:
        assert piece in message, message
    assert not list(Path(values["checkpoint_dir"]).glob("teacher-*"))
    return message


def test_good_generated_dataset_passes_every_check(toy):
    config = isolated_config("DELRec", "toy", toy)
    started = build(config)  # checks, loading, model (and its longest-prompt check), trainer
    assert started.model.item_text[1] and not list(Path(toy["checkpoint_dir"]).glob("teacher-*"))


def test_title_field_missing_from_item_header_lists_the_header(toy, tmp_path):
    write_atomic(tmp_path, "toy", histories(40, 8, N_ITEMS), titles(N_ITEMS, (2, 6)),
                 item_header=("item_id:token", "name:token_seq"))
    fails_fast(toy, "`title_field: title` is not a column of", "toy.item", "'name:token_seq'",
               "Set `title_field` to one of ['name']")


def test_title_field_not_in_load_col(toy):
    toy["load_col"] = {"inter": LOAD_COL["inter"], "item": ["item_id"]}
    fails_fast(toy, "`title_field: title` is in", "will not load it", "item: [item_id, title]")


def test_no_item_file_names_the_file(toy, tmp_path):
    (tmp_path / "toy" / "toy.item").unlink()
    fails_fast(toy, "no 'toy.item' in", "data_path")


def test_ml100k_title_field_checked_against_the_bundled_copy(tmp_path):
    values = tiny_dict(tmp_path / "saved", data_path=str(tmp_path), title_field="title")
    fails_fast(values, "`title_field: title` is not a column of", "recbole/dataset_example/ml-100k/ml-100k.item",
               "'movie_title:token_seq'", dataset="ml-100k")


def test_a_byte_outside_the_encoding_names_the_file_and_line(toy, tmp_path):
    item = tmp_path / "toy" / "toy.item"
    item.write_bytes(item.read_bytes().replace(b"\ni7\t", b"\ni7\tCaf\xe9 ", 1))  # latin-1, not UTF-8
    fails_fast(toy, "toy.item, line 8: byte 0xe9 is not utf-8", "set `encoding`")
    toy["encoding"] = "latin-1"  # the fix the message gives
    started = build(isolated_config("DELRec", "toy", toy))
    assert started.model.item_text[started.train_data._dataset.token2id("item_id", "i7")].startswith("Café ")


def test_a_byte_order_mark_names_the_file_and_the_encoding_that_reads_it(toy, tmp_path):
    inter = tmp_path / "toy" / "toy.inter"
    inter.write_bytes(b"\xef\xbb\xbf" + inter.read_bytes())
    fails_fast(toy, "toy.inter starts with a byte-order mark", "'\\ufeffuser_id:token'", "`encoding: utf-8-sig`")
    toy["encoding"] = "utf-8-sig"
    assert build(isolated_config("DELRec", "toy", toy)).model.item_text[1]


@pytest.mark.parametrize("suffix, old, new", [
    ("inter", "user_id:token\titem_id:token\ttimestamp:float", "user_id\titem_id\ttimestamp"),  # no types
    ("item", "title:token_seq", "title:token_sequence"),
])
def test_a_header_column_without_a_known_type_is_named(toy, tmp_path, suffix, old, new):
    """RecBole says "not enough values to unpack" or "Type ... is not supported", naming no file."""
    path = tmp_path / "toy" / f"toy.{suffix}"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    fails_fast(toy, f"toy.{suffix}: the header's column '{new.split(chr(9))[0]}' is not 'name:type'",
               "token, float, token_seq, float_seq")


def test_a_compressed_atomic_file_is_named_as_such(toy, tmp_path):
    inter = tmp_path / "toy" / "toy.inter"
    inter.write_bytes(gzip.compress(inter.read_bytes()))
    fails_fast(toy, "toy.inter is compressed (gzip)", "decompress it")


def test_text_in_a_float_column_names_the_file(toy, tmp_path):
    inter = tmp_path / "toy" / "toy.inter"
    lines = inter.read_text().splitlines()
    inter.write_text("\n".join(lines[:4] + [lines[4].rsplit("\t", 1)[0] + "\t2020-01-03"] + lines[5:]) + "\n")
    fails_fast(toy, "RecBole could not read", "toy.inter: Unable to convert column timestamp:float",
               "a timestamp as Unix seconds")


@pytest.mark.parametrize("suffix", ["inter", "item"])
def test_a_file_with_a_header_and_no_rows_is_named(toy, tmp_path, suffix):
    path = tmp_path / "toy" / f"toy.{suffix}"
    path.write_text(path.read_text().splitlines()[0] + "\n\n")
    fails_fast(toy, f"toy.{suffix} has a header", "and no rows")


def test_timestamp_not_loaded(toy):
    toy["load_col"] = {"inter": ["user_id", "item_id"], "item": ["item_id", "title"]}
    fails_fast(toy, "TIME_FIELD 'timestamp'", "will not load it", "eval_args.order: TO",
               "load_col: {inter: [user_id, item_id, timestamp]")


def test_interactions_without_timestamp_column(toy, tmp_path):
    write_atomic(tmp_path, "toy", histories(40, 8, N_ITEMS), titles(N_ITEMS, (2, 6)),
                 inter_header=("user_id:token", "item_id:token"))
    fails_fast(toy, "TIME_FIELD 'timestamp' is not a column of", "['user_id:token', 'item_id:token']",
               "set `TIME_FIELD`")


def test_no_interaction_file_names_data_path(toy, tmp_path):
    toy["data_path"] = str(tmp_path / "elsewhere")
    fails_fast(toy, "no interaction file", "`data_path` must be the folder")


def test_files_put_straight_into_data_path_are_found_and_named(toy, tmp_path):
    for path in (tmp_path / "toy").iterdir():  # toy.inter and toy.item without their toy/ folder
        path.rename(tmp_path / path.name)
    fails_fast(toy, f"{tmp_path / 'toy.inter'} is there: move the data set's files into {tmp_path / 'toy'}.")


def _templates(folder: Path, **replaced: str) -> str:
    """A prompt_template_dir with the packaged templates, some replaced."""
    folder.mkdir()
    for task in ("lsr", "rps", "ta"):
        (folder / f"{task}.txt").write_text(replaced.get(task, load_template(task, "products")), encoding="utf-8")
    return str(folder)


def test_rps_template_without_candidates_placeholder(toy, tmp_path):
    toy["prompt_template_dir"] = _templates(tmp_path / "prompts", rps="{soft_prompt} The user bought {history}.")
    fails_fast(toy, "rps.txt lacks {candidates}", "needs {candidates}, {history}, {soft_prompt}")


def test_lsr_template_without_candidates_scores_each_candidate_alone(toy, tmp_path, caplog):
    """An LSR prompt may leave the list out: then a candidate's score is its own, whatever the
    other candidates and their order (a listed prompt reads them all)."""
    toy.update(llm_dtype="float32", prompt_template_dir=_templates(
        tmp_path / "prompts", lsr="{soft_prompt} The user bought {history}. Next they buy:"))
    with caplog.at_level(logging.INFO):
        model = build(isolated_config("DELRec", "toy", toy)).model.eval()
    assert "the lsr template lists no candidates" in caplog.text
    histories = [[1, 2, 3], [4, 5]]
    candidates = torch.tensor([[7, 8, 9, 10], [11, 12, 13, 14]])
    with torch.no_grad():
        scores = model.score_candidates(histories, candidates)
        reversed_scores = model.score_candidates(histories, candidates.flip(1))
        alone = model.score_candidates(histories, candidates[:, :1])
    torch.testing.assert_close(reversed_scores.flip(1), scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone[:, 0], scores[:, 0], rtol=1e-5, atol=1e-5)


def test_template_with_unknown_placeholder(toy, tmp_path):
    toy["prompt_template_dir"] = _templates(tmp_path / "prompts", rps="{soft_prompt} {history} {candidates} {mood}")
    fails_fast(toy, "rps.txt has unknown {mood}", "may use the wording")


def test_missing_template_file(toy, tmp_path):
    folder = Path(_templates(tmp_path / "prompts"))
    (folder / "ta.txt").unlink()
    toy["prompt_template_dir"] = str(folder)
    fails_fast(toy, "No prompt template 'ta.txt'", "prompt_template_dir")


def test_unknown_domain(toy):
    toy["domain"] = "cars"
    fails_fast(toy, "Unknown domain 'cars'", "set `domain` to one of")


def test_unknown_teacher(toy):
    toy["teacher_model"] = "NoSuchRec"
    fails_fast(toy, "teacher_model 'NoSuchRec'")


def test_unknown_stage1_task(toy):
    toy["delrec_tasks"] = ["ta", "xyz"]
    fails_fast(toy, "delrec_tasks", "['xyz']", "['rps', 'ta']")


def test_zero_title_budget(toy):
    toy["max_prompt_title_tokens"] = 0
    fails_fast(toy, "`max_prompt_title_tokens` must be a whole number of at least 1")


@pytest.mark.parametrize("setting, value, expected", [
    # once taken silently: 0 read as "no limit", Hit@30 of 1 for every user, an unknown loss as ce,
    # an unknown optimizer as Adam, bucket edges refused only in a seeded run's summary
    ("train_max_prefixes", 0, "`train_max_prefixes` must be a whole number of at least 1 or ~ (no limit)"),
    ("eval_max_users", 0, "`eval_max_users` must be a whole number of at least 1 or ~"),
    ("topk", [1, 5, 30], "topk [1, 5, 30] has [30]: each user's target is ranked among 20 candidates"),
    ("rps_loss", "mse", "`rps_loss` is 'mse': use one of ce, kl"),
    ("learner", "adan", "`learner` is 'adan', an optimizer RecBole does not know"),
    ("epochs", -1, "`epochs` must be a whole number of at least 0"),
    ("popularity_edges", [5], "`popularity_edges` must be two cut points"),
    # once raised by torch, numpy or RecBole after the teacher (or stage 1, or an epoch) trained
    ("learning_rate", -1, "`learning_rate` must be a number above 0, and it is -1"),
    ("stage1_learning_rate", "fast", "`stage1_learning_rate` must be a number above 0, and it is 'fast'"),
    ("stage1_holdout_users", 1.5, "`stage1_holdout_users` must be a number at least 0 and below 1"),
    ("teacher_topk", 25, "`teacher_topk` must be a whole number from 1 to 20, and it is 25"),
    ("n_soft_tokens", -5, "`n_soft_tokens` must be a whole number of at least 0"),
    ("stage1_bucket_window", 0, "`stage1_bucket_window` must be a whole number of at least 1"),
    ("valid_metric", "Recall@5", "valid_metric 'Recall@5' is not among the metrics the run reports (hit@1, "),
    ("metrics", ["LogLoss"], "metrics ['LogLoss'] has ['LogLoss'], which DELRec cannot compute"),
])
def test_a_bad_setting_is_named_before_the_data_is_read(toy, setting, value, expected):
    toy[setting] = value
    fails_fast(toy, expected)


def test_settings_at_their_edges_pass_the_checks(toy):
    edges = {"stage1_epochs": 0, "eval_max_users": None, "train_max_prefixes": None, "learner": "AdamW",
             "metrics": ["Recall", "GAUC", "NDCG", "ItemCoverage"], "topk": [19], "valid_metric": "gauc", "teacher_topk": 20,
             "stage1_holdout_users": 0, "weight_decay": 0, "popularity_edges": [11, 12], "stage": "all"}
    config = isolated_config("DELRec", "toy", {**toy, **edges})
    build(config)
    assert config["n_candidates"] == 20


def test_llm_path_missing_folder(toy, tmp_path):
    toy["llm_path"] = str(tmp_path / "no-such-t5")
    fails_fast(toy, "llm_path", "does not exist", "save_pretrained")


def test_llm_path_folder_without_config(toy, tmp_path):
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "spiece.model").write_bytes(b"")
    toy["llm_path"] = str(tmp_path / "t5")
    fails_fast(toy, "has no config.json", "['spiece.model']")


def test_llm_path_malformed_hub_id(toy):
    toy["llm_path"] = "google//flan-t5"
    fails_fast(toy, "neither an existing folder or .gguf file, nor a known short name", "smollm2-135m-instruct")


def test_llm_path_not_cached_while_offline(toy, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    toy["llm_path"] = "someone/flan-t5-nowhere"
    fails_fast(toy, "not in the local Hugging Face cache", "downloads are switched off", "huggingface-cli download")


def test_ratio_split_is_refused_with_the_leave_one_out_setting(toy):
    split = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "uni19"}
    fails_fast({**toy, "eval_args": split}, "eval_args.split", "{'RS': [0.8, 0.1, 0.1]}", "LS: valid_and_test")


def test_more_candidates_than_items(toy):
    toy["eval_args"] = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni99"}
    fails_fast(toy, "asks for 100 candidates per prompt", f"has {N_ITEMS} items after loading",
               f"N + 1 at most {N_ITEMS}")


def test_longest_prompt_does_not_fit(toy):
    toy["max_prompt_tokens"] = 64
    message = fails_fast(toy, "The longest lsr prompt needs up to", "more than max_prompt_tokens=64",
                         "raise `max_prompt_tokens` to at least", "max_prompt_title_tokens")
    assert int(message.split("needs up to ")[1].split()[0]) > 64


def test_tslrec_checks_timestamp_before_training(tmp_path):
    write_atomic(tmp_path, "toy", histories(40, 8, N_ITEMS), None)
    values = tiny_dict(tmp_path / "saved", data_path=str(tmp_path), user_inter_num_interval="[1,inf)",
                       load_col={"inter": ["user_id", "item_id"]})
    with hidden_command_line(), pytest.raises(ValueError, match="TIME_FIELD 'timestamp'"):
        run_tslrec(dataset="toy", config_dict=values)
    assert not list((tmp_path / "saved").glob("teacher-*"))


@pytest.mark.parametrize("setting, value, expected", [
    ("tslrec_variant", "gated", "`tslrec_variant` is 'gated': use one of base, ci, tslrec"),  # run_tslrec ignored it
    ("sft_learning_rate", 0, "`sft_learning_rate` must be a number above 0"),  # trained nothing, silently
    ("learner", "sgdd", "`learner` is 'sgdd'"),  # trained with Adam, silently
    ("valid_metric", "Recall@5", "valid_metric 'Recall@5' is not among the metrics the run reports"),
])
def test_tslrec_names_a_bad_setting_before_training(tmp_path, setting, value, expected):
    write_atomic(tmp_path, "toy", histories(40, 8, N_ITEMS), None)
    values = tsl_dict(tmp_path / "saved", data_path=str(tmp_path), user_inter_num_interval="[1,inf)",
                      load_col={"inter": ["user_id", "item_id", "timestamp"]}, **{setting: value})
    with hidden_command_line(), pytest.raises(ValueError) as info:
        run_tslrec(dataset="toy", config_dict=values)
    assert expected in str(info.value)
    assert not list((tmp_path / "saved").glob("teacher-*"))


def test_a_misspelt_setting_is_named_with_the_one_it_resembles(toy, caplog):
    """RecBole keeps any key; one that reads like a real setting is a likely typo that leaves
    the real one at its default. Correct settings and unrelated extra keys say nothing."""
    config = isolated_config("DELRec", "toy", {**toy, "lerning_rate": 0.1, "Stage1_epochs": 2, "my_note": "x"})
    with caplog.at_level(logging.WARNING):
        build(config)
    assert ("Setting `lerning_rate` is not one that RecBole or DELRec reads, and `learning_rate` is: if you meant "
            "it, `learning_rate` is still 0.005.") in caplog.text
    assert "Setting `Stage1_epochs` is not one that RecBole or DELRec reads, and `stage1_epochs` is" in caplog.text
    assert caplog.text.count("Setting `") == 2
