"""Item titles: normalisation, years, fallbacks and clear errors on bad data sets."""

from pathlib import Path

import pytest
from recbole.data import create_dataset

from recbole_delrec.config import isolated_config
from recbole_delrec.data.losses import log_title_losses
from recbole_delrec.data.titles import ItemText, TitleTokens, normalize_title
from tests.conftest import tiny_dict


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Usual Suspects, The", "The Usual Suspects"),
        ("Postino, Il", "Il Postino"),
        ("Shawshank Redemption, The (1994)", "The Shawshank Redemption (1994)"),
        ("  Toy   Story ", "Toy Story"),
        ("Men, Women and Children", "Men, Women and Children"),
        ("", ""),
    ],
)
def test_normalize_title(raw, clean):
    assert normalize_title(raw) == clean


def test_ml100k_titles_have_years_and_articles_in_front(tiny_data):
    config, train, _, _ = tiny_data
    text = ItemText.from_dataset(train._dataset, "movie_title", "release_year")
    assert len(text) == train._dataset.item_num
    assert "The Usual Suspects (1995)" in text.titles
    assert all(t.strip() for t in text.titles[1:])


def _write_dataset(root: Path, name: str, item_lines: list[str] | None) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(1, 6):
        rows += [f"u{user}\ti{item}\t{user * 100 + item}" for item in range(1, 8)]
    (folder / f"{name}.inter").write_text("\n".join(rows) + "\n")
    if item_lines is not None:
        (folder / f"{name}.item").write_text("\n".join(item_lines) + "\n")


def _load(tmp_path: Path, name: str, **overrides):
    values = tiny_dict(tmp_path / "saved", data_path=str(tmp_path), title_field="title",
                       user_inter_num_interval="[0,inf)", load_col={"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title"]},
                       filter_inter_by_user_or_item=False)
    values.update(overrides)
    config = isolated_config("DELRec", name, values)
    return create_dataset(config)


def test_item_without_title_gets_documented_fallback(tmp_path):
    items = ["item_id:token\ttitle:token_seq"] + [f"i{n}\tGame {n}" for n in range(1, 7)]
    _write_dataset(tmp_path, "toy", items)  # i7 has no .item row
    dataset = _load(tmp_path, "toy")
    dataset._change_feat_format()
    text = ItemText.from_dataset(dataset, "title")
    item7 = dataset.token2id(dataset.iid_field, "i7")
    assert text[item7] == "item i7"
    assert text.n_fallback == 1


def test_missing_title_field_names_the_option(tmp_path):
    items = ["item_id:token\tname:token_seq"] + [f"i{n}\tGame {n}" for n in range(1, 8)]
    _write_dataset(tmp_path, "toy", items)
    dataset = _load(tmp_path, "toy", load_col={"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "name"]})
    dataset._change_feat_format()
    with pytest.raises(ValueError, match="title_field"):
        ItemText.from_dataset(dataset, "title")


def test_dataset_without_item_file_names_the_file(tmp_path):
    _write_dataset(tmp_path, "toy", None)
    dataset = _load(tmp_path, "toy", load_col={"inter": ["user_id", "item_id", "timestamp"]})
    dataset._change_feat_format()
    with pytest.raises(ValueError, match=r"toy\.item"):
        ItemText.from_dataset(dataset, "title")


def test_items_whose_scored_titles_are_alike_are_counted_and_logged(caplog):
    """Duplicate titles, and titles that differ only after the cut, read as one to the LLM."""
    text = ItemText(("[PAD]", "Heat (1995)", "Heat (1995)", "Long one a", "Long one b", "Other"), n_fallback=0)
    encoded = [[0], [5, 6], [5, 6], [7, 8, 9, 1], [7, 8, 9, 2], [5]]
    scored = TitleTokens.cut(encoded, 3)
    assert scored.alike == [[1, 2], [3, 4]] and TitleTokens.cut(encoded, 4).alike == [[1, 2]]
    with caplog.at_level("WARNING"):
        log_title_losses("shop", text, TitleTokens.cut(encoded, 4), scored)
    assert ("Titles: 4 of 5 items share their scored title with another item (2 groups, e.g. 'Heat (1995)')"
            in caplog.text) and "in 'shop.item'" in caplog.text
    caplog.clear()
    distinct = TitleTokens.cut([[0], [5, 6], [5]], 3)
    log_title_losses("shop", ItemText(("[PAD]", "Heat (1995)", "Other"), n_fallback=0), distinct, distinct)
    assert "share their scored title" not in caplog.text
