"""What loading dropped is said in the log, one line per loss, with the option that keeps it.

Real RecBole loading (the plugin's ``PluginDataset``, picked by RecBole's own
``create_dataset``) of generated atomic files; the lines are read with pytest's ``caplog``.
"""

from __future__ import annotations

import logging

import pytest
import recbole.data.dataset as recbole_dataset

from recbole_delrec.config import isolated_config
from recbole_delrec.data.dataset import PluginDataset
from recbole_delrec.runs.startup import build, prepare_data
from tests.conftest import tiny_dict
from tests.generated import LOAD_COL, histories, titles, write_atomic

N_ITEMS = 40


def _half_titled(tmp_path, **overrides):
    """30 users x 10 of 40 items; the .item file has rows for i1..i20 only, and every user
    has 5 items with a row and 5 without: exactly half of the interactions."""
    rng_users = histories(30, 5, N_ITEMS // 2, seed=1)
    users = {u: [item for pair in zip(items, [f"i{int(i[1:]) + 20}" for i in items]) for item in pair]
             for u, items in rng_users.items()}
    write_atomic(tmp_path, "half", users, titles(N_ITEMS // 2, (2, 5)))
    values = tiny_dict(tmp_path / "saved", data_path=str(tmp_path), load_col=LOAD_COL, domain="products",
                       user_inter_num_interval="[1,inf)", **overrides)
    return isolated_config("DELRec", "half", values)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_recbole_picks_the_loss_reporting_dataset():
    assert recbole_dataset.DELRecDataset is PluginDataset
    assert recbole_dataset.TSLRecDataset is PluginDataset


def test_missing_item_rows_drop_half_and_say_how_to_keep_them(tmp_path, caplog):
    config = _half_titled(tmp_path)  # RecBole's default filter_inter_by_user_or_item: True
    with caplog.at_level(logging.WARNING):
        prepare_data(config)
    lines = [m for m in _warnings(caplog) if "RecBole dropped" in m]
    assert len(lines) == 1, _warnings(caplog)
    assert "dropped 150 of 300 interactions (50.0%; 0 users and 20 items left with none)" in lines[0]
    assert "without a row in half.item" in lines[0]
    assert "To keep them: `filter_inter_by_user_or_item: False`" in lines[0]


def test_kept_items_without_rows_are_counted_as_fallback_titles(tmp_path, caplog):
    config = _half_titled(tmp_path, filter_inter_by_user_or_item=False)
    with caplog.at_level(logging.WARNING):
        build(config)
    warnings = _warnings(caplog)
    assert not [m for m in warnings if "RecBole dropped" in m]
    assert "Titles: 20 of 40 items have no title in 'half.item' and are shown as 'item <token>'" in "\n".join(warnings)


def test_k_core_and_short_users_are_said(tmp_path, caplog):
    users = histories(20, 6, N_ITEMS, seed=2)
    users.update({f"s{n}": [f"i{n}", f"i{n + 1}"] for n in range(1, 4)})  # 2 interactions: below [3,inf)
    users.update({f"t{n}": [f"i{n}", f"i{n + 1}", f"i{n + 2}"] for n in range(1, 6)})  # 3: no validation prefix
    write_atomic(tmp_path, "kcore", users, titles(N_ITEMS, (2, 5)))
    values = tiny_dict(tmp_path / "saved", data_path=str(tmp_path), load_col=LOAD_COL, domain="products",
                       user_inter_num_interval="[3,inf)")
    with caplog.at_level(logging.WARNING):
        prepare_data(isolated_config("DELRec", "kcore", values))
    text = "\n".join(_warnings(caplog))
    assert "dropped 6 of 141 interactions" in text and "3 users" in text
    assert "user_inter_num_interval [3,inf)" in text and "widen those intervals" in text
    assert "5 users have fewer than 4 interactions (5 with 3)" in text and "LS: valid_and_test" in text



def test_interactions_without_a_time_are_counted(tmp_path, caplog):
    """RecBole fills a missing float with the column's mean: such an interaction moves to the
    middle of its user's sequence, which the log must say."""
    write_atomic(tmp_path, "untimed", histories(10, 6, N_ITEMS), titles(N_ITEMS, (2, 5)))
    inter = tmp_path / "untimed" / "untimed.inter"
    lines = inter.read_text().splitlines()
    for row in (3, 9):
        lines[row] = lines[row].rsplit("\t", 1)[0] + "\t"
    inter.write_text("\n".join(lines) + "\n")
    values = tiny_dict(tmp_path / "saved", data_path=str(tmp_path), load_col=LOAD_COL, user_inter_num_interval="[1,inf)")
    with caplog.at_level(logging.WARNING):
        prepare_data(isolated_config("DELRec", "untimed", values))
    assert "Loading 'untimed': 2 of 60 interactions have no timestamp; RecBole gave them the column's mean" \
        in "\n".join(_warnings(caplog))


def _emptied(tmp_path, items: dict[str, str], **overrides) -> str:
    """The error of loading 20 users x 6 items whose filtering leaves nothing."""
    write_atomic(tmp_path, "emptied", histories(20, 6, N_ITEMS, seed=3), items)
    values = tiny_dict(tmp_path / "saved", data_path=str(tmp_path), load_col=LOAD_COL, domain="products",
                       **{"user_inter_num_interval": "[1,inf)", **overrides})
    with pytest.raises(ValueError) as error:
        prepare_data(isolated_config("DELRec", "emptied", values))
    return str(error.value)


def test_a_filter_that_empties_the_data_set_is_named(tmp_path):
    """RecBole says only "Some feat is empty": the message names the file, the step and its option."""
    message = _emptied(tmp_path, titles(N_ITEMS, (2, 5)), user_inter_num_interval="[50,inf)")
    assert "Loading 'emptied': nothing is left of emptied.inter after RecBole's filtering" in message
    assert "dropped 120 of 120 interactions" in message and "user_inter_num_interval [50,inf)" in message
    assert "widen those intervals" in message


def test_item_ids_that_match_no_interaction_are_named(tmp_path):
    items = {f"x{item[1:]}": title for item, title in titles(N_ITEMS, (2, 5)).items()}  # i1 -> x1
    message = _emptied(tmp_path, items)
    assert "nothing is left of emptied.inter" in message
    assert "without a row in emptied.item (filter_inter_by_user_or_item: True)" in message
    assert "ids do not match" in message
