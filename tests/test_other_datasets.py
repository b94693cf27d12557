"""Data sets unlike ML-100K run end to end: no settings at all, fields with other names,
histories too short for a TA prompt, RecBole's pre-split files (``benchmark_filename``).

Generated atomic files (``tests/generated.py``) in ``tmp_path``, the tiny T5 and teacher of
``tests/conftest.py``.  RecBole names its history column after the item field (``iid_list``),
and stage 1 builds TA examples only from long enough sequences.
"""

from __future__ import annotations

import logging

import pytest

from recbole_delrec import run_delrec
from recbole_delrec.config import hidden_command_line, isolated_config
from recbole_delrec.runs.startup import build
from recbole_delrec.tslrec.quick_start import run_tslrec
from tests.conftest import tiny_dict, tsl_dict
from tests.generated import LOAD_COL, histories, rename_fields, titles, write_atomic, write_presplit

RENAMED = {"user_id": "uid", "item_id": "iid", "timestamp": "ts", "title": "name"}
FIELDS = {"USER_ID_FIELD": "uid", "ITEM_ID_FIELD": "iid", "TIME_FIELD": "ts", "title_field": "name",
          "load_col": {"inter": ["uid", "iid", "ts"], "item": ["iid", "name"]}}


def test_a_catalogue_without_a_preset_needs_no_settings_and_is_worded_as_items(tmp_path):
    """RecBole's default field names and a ``title`` column: DELRec's defaults load the time
    and the titles, and word the prompts for any catalogue (books, music, ...), not movies."""
    write_atomic(tmp_path, "books", histories(12, 6, 30), titles(30, (2, 4)))
    values = tiny_dict(tmp_path / "saved", data_path=str(tmp_path), user_inter_num_interval="[1,inf)")
    assert "load_col" not in values and "domain" not in values
    model = build(isolated_config("DELRec", "books", values)).model
    assert model.item_text.n_fallback == 0
    text = model.prompts["lsr"].render(model.item_text, history=[1, 2], candidates=[3, 4])
    assert "The user has interacted with these items, oldest first:" in text
    assert "Which candidate will the user interact with next?" in text and "movie" not in text


def test_tslrec_needs_no_settings_on_default_field_names(tmp_path):
    write_atomic(tmp_path, "plain", histories(24, 12, 60), None)
    values = tsl_dict(tmp_path / "saved", data_path=str(tmp_path), user_inter_num_interval="[1,inf)")
    assert "load_col" not in values
    with hidden_command_line():
        result = run_tslrec("plain", "SASRec", config_dict=values, variants=["base"])
    assert "hit@10" in result["base"]


@pytest.fixture
def renamed(tmp_path):
    """A catalogue whose fields are uid, iid, ts and name; histories long enough for TA."""
    write_atomic(tmp_path, "renamed", histories(24, 12, 60), titles(60, (2, 5)))
    rename_fields(tmp_path, "renamed", RENAMED)
    return tmp_path


def test_delrec_runs_on_fields_with_other_names(renamed, caplog):
    values = tiny_dict(renamed / "saved", data_path=str(renamed), domain="products", user_inter_num_interval="[1,inf)",
                       **FIELDS)
    with hidden_command_line(), caplog.at_level(logging.WARNING):
        result = run_delrec(dataset="renamed", config_dict=values)
    assert {"hit@1", "ndcg@5"} <= set(result["test_result"])
    assert "no ta example" not in caplog.text  # both tasks trained


def test_tslrec_runs_on_fields_with_other_names(renamed):
    values = tsl_dict(renamed / "saved", data_path=str(renamed), user_inter_num_interval="[1,inf)", **FIELDS)
    with hidden_command_line():
        result = run_tslrec("renamed", "SASRec", config_dict=values)
    assert {"base", "ci", "tslrec"} <= set(result) and "hit@10" in result["tslrec"]


def test_histories_too_short_for_ta_train_stage1_on_rps_and_say_so(tmp_path, caplog):
    """Eight interactions per user leave training sequences of at most 6 items; a TA prompt
    needs ta_demo_length + ta_query_length + 2 = 8."""
    write_atomic(tmp_path, "short", histories(24, 8, 60), titles(60, (2, 5)))
    values = tiny_dict(tmp_path / "saved", data_path=str(tmp_path), load_col=LOAD_COL, domain="products",
                       user_inter_num_interval="[1,inf)", delrec_tasks=["ta", "rps"])
    with hidden_command_line(), caplog.at_level(logging.WARNING):
        result = run_delrec(dataset="short", config_dict=values)
    assert {"hit@1", "ndcg@5"} <= set(result["test_result"]) and result["stage1_result"]
    assert "no ta example: a ta prompt needs a training sequence of 8 items" in caplog.text
    assert "the longest of these 22 users has 6; stage 1 trains on rps" in caplog.text


# ---------------------------------------------------------------- pre-split files
PRESPLIT = {"benchmark_filename": ["train", "valid", "test"], "alias_of_item_id": ["item_id_list"]}


@pytest.fixture
def presplit(tmp_path):
    """RecBole's pre-split sequential files of 24 users with 12 items each, no time column."""
    users = histories(24, 12, 60)
    write_presplit(tmp_path, "presplit", users, titles(60, (2, 5)))
    return tmp_path, users


def rows_under_test(started) -> dict[str, tuple[list[str], str]]:
    """Each test user's (history, target) as item tokens, as the built test split holds them."""
    data = started.test_data._dataset
    feat, seq = data.inter_feat, data.item_id_list_field
    tokens = lambda field, ids: list(data.id2token(field, ids))  # noqa: E731
    return {tokens("user_id", [u])[0]: (tokens("item_id", h[:n]), tokens("item_id", [t])[0])
            for u, h, n, t in zip(feat["user_id"], feat[seq], feat["item_length"], feat["item_id"])}


def test_delrec_tests_each_user_on_the_pre_split_test_row_with_its_history(presplit):
    """The defaults load the history column, no timestamp is asked for, and the test split is
    the test file's rows, histories in the items' own ids (``alias_of_item_id``)."""
    root, users = presplit
    values = tiny_dict(root / "saved", data_path=str(root), **PRESPLIT)
    assert "load_col" not in values
    started = build(isolated_config("DELRec", "presplit", values))
    assert rows_under_test(started) == {user: (items[:-1], items[-1]) for user, items in users.items()}


def test_delrec_runs_end_to_end_on_pre_split_files(presplit):
    root, _ = presplit
    values = tiny_dict(root / "saved", data_path=str(root), domain="products", **PRESPLIT)
    with hidden_command_line():
        result = run_delrec(dataset="presplit", config_dict=values)
    assert {"hit@1", "ndcg@5"} <= set(result["test_result"]) and result["stage1_result"]


def test_tslrec_runs_on_pre_split_files(presplit):
    root, _ = presplit
    values = tsl_dict(root / "saved", data_path=str(root), **PRESPLIT)
    with hidden_command_line():
        result = run_tslrec("presplit", "SASRec", config_dict=values)
    assert {"base", "ci", "tslrec"} <= set(result) and "hit@10" in result["tslrec"]


@pytest.mark.parametrize(
    "change, message",
    [
        ("plain rows", "'item_id_list' is not a column of .*presplit.train.inter"),
        ("two parts", "trains, validates and tests on three pre-split files"),
        ("no test file", "There is no presplit.test.inter in"),
        ("history not loaded", "'item_id_list' is in"),
        ("history numbered apart", "Set `alias_of_item_id: \\[item_id_list\\]`"),
        ("two test rows", "presplit.test.inter has 1 user with more than one row \\('u1' has 2\\)"),
    ],
)
def test_bad_pre_split_files_are_named_before_training(presplit, change, message):
    root, _ = presplit
    folder, values = root / "presplit", dict(PRESPLIT)
    if change == "plain rows":  # a time-split file without histories: RecBole's AttributeError before
        for part in PRESPLIT["benchmark_filename"]:
            path = folder / f"presplit.{part}.inter"
            rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
            path.write_text("user_id:token\titem_id:token\n" + "".join(f"{r[0]}\t{r[2]}\n" for r in rows))
    elif change == "two parts":
        values["benchmark_filename"] = ["train", "test"]
    elif change == "no test file":  # RecBole skips a missing part and tests on the validation file
        (folder / "presplit.test.inter").unlink()
    elif change == "history not loaded":
        values["load_col"] = LOAD_COL
    elif change == "two test rows":  # RecBole would score the second with the first row's history
        with open(folder / "presplit.test.inter", "a") as file:
            file.write("u1\ti1 i2\ti3\n")
    else:  # RecBole's ids for the histories would be their own: silently wrong histories
        values["alias_of_item_id"] = None
    config = isolated_config("DELRec", "presplit", tiny_dict(root / "saved", data_path=str(root), **values))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build(config)


def test_pre_split_parts_that_do_not_follow_each_other_are_logged(presplit, caplog):
    """Each user's test history ends with their validation item, and the validation history
    with their last training item; a test file from another preprocessing breaks that chain
    and the log says for how many users, with one of them."""
    root, users = presplit
    values = tiny_dict(root / "saved", data_path=str(root), **PRESPLIT)
    with caplog.at_level(logging.WARNING):
        build(isolated_config("DELRec", "presplit", values))
    assert "Pre-split parts" not in caplog.text  # write_presplit's parts follow each other
    path = root / "presplit" / "presplit.test.inter"
    head, *rows = [line.split("\t") for line in path.read_text().splitlines()]
    for row in rows[::3]:  # u1, u4, ...: a history two items short, as another preprocessing may give
        row[1] = " ".join(users[row[0]][:-3])
    path.write_text("".join("\t".join(row) + "\n" for row in [head, *rows]))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build(isolated_config("DELRec", "presplit", values))
    assert (f"Pre-split parts: 8 of 24 users' test history does not end with their last valid item "
            f"(user 'u1': presplit.test.inter ends the history with '{users['u1'][-4]}', presplit.valid.inter "
            f"has '{users['u1'][-2]}')") in caplog.text
    assert caplog.text.count("Pre-split parts") == 1  # the validation file still follows the training file


def test_pre_split_histories_longer_than_the_sequence_length_keep_their_latest_items(presplit, caplog):
    """RecBole keeps a pre-split history whole, and the teacher's position embeddings then
    stopped training (``IndexError``); each history keeps its latest MAX_ITEM_LIST_LENGTH items."""
    root, users = presplit
    values = tiny_dict(root / "saved", data_path=str(root), MAX_ITEM_LIST_LENGTH=5, **PRESPLIT)
    with caplog.at_level(logging.WARNING):
        started = build(isolated_config("DELRec", "presplit", values))
    assert started.test_data._dataset.inter_feat["item_id_list"].shape[1] == 5
    assert rows_under_test(started) == {user: (items[-6:-1], items[-1]) for user, items in users.items()}
    assert "Pre-split histories: 144 of 264 rows had more than MAX_ITEM_LIST_LENGTH=5 items (up to 11)" in caplog.text
    started.trainer.fit(started.train_data, started.valid_data)  # the teacher trains (it stopped with IndexError)
    assert list((root / "saved").glob("teacher-*"))
