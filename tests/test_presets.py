"""Tests for the data-set presets in ``properties/dataset/``: each preset's values reach
RecBole's ``Config`` through the plugin's YAML layering, RecBole loads the data with them
(real files: RecBole's bundled ML-100K, the shared Steam copy, Amazon 2014 files written in
the published raw formats and converted), and every item ends up with a usable title.

Nothing is mocked: each test runs RecBole's own ``Config``, ``create_dataset`` and
``data_preparation``.  The Steam test reads ``../shared/datasets/steam`` beside the checkout
and is skipped where that folder is missing.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import json
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
import yaml

import recbole_delrec
import tests.conftest  # noqa: F401  (registers DELRec and the plugin's YAML with RecBole)
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole_delrec.config import isolated_config
from recbole_delrec.convert import convert_amazon2014
from recbole_delrec.registry import PROPERTIES
from recbole_delrec.data.titles import ItemText, normalize_title


def _minimal_write_raw(path: Path, lines: list[str], gz: bool = True) -> Path:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _minimal_amazon_review(user: str, asin: str, ts: int, overall: float = 5.0) -> str:
    return json.dumps({"reviewerID": user, "asin": asin, "overall": overall,
                       "unixReviewTime": ts, "reviewText": "Fine."})


def _minimal_amazon_meta(asin: str, **fields: object) -> str:
    return repr({"asin": asin, "categories": [["Beauty"]], **fields})


def _raw_writers():
    """The raw-file writers of the converter tests (the exact published formats), whether
    tests/ is imported as a package or as a folder; minimal ones if they are not there."""
    for module_name in ("tests.test_convert", "test_convert"):
        try:
            module = importlib.import_module(module_name)
            return module.write_raw, module.amazon_review, module.amazon_meta
        except (ImportError, AttributeError):
            continue
    return _minimal_write_raw, _minimal_amazon_review, _minimal_amazon_meta


write_raw, amazon_review, amazon_meta = _raw_writers()


SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
PRESETS = ("ml-100k", "steam", "amazon-beauty", "amazon-home-and-kitchen")
CONVERTED = ("steam", "amazon-beauty", "amazon-home-and-kitchen")
DOMAINS = {"ml-100k": "movies", "steam": "games",
           "amazon-beauty": "products", "amazon-home-and-kitchen": "products"}
CONVERTED_LOAD_COL = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title"]}


def preset(name: str) -> dict:
    return yaml.safe_load((PROPERTIES / "dataset" / f"{name}.yaml").read_text(encoding="utf-8"))


def delrec_config(name: str, tmp_path: Path, **extra) -> Config:
    """RecBole's Config for DELRec on ``name``, quiet and CPU-only. Built with pytest's own
    command line hidden: RecBole's Config reads every ``--key=value`` in ``sys.argv``."""
    return isolated_config("DELRec", name, {
        "use_gpu": False, "checkpoint_dir": str(tmp_path / "saved"), "state": "WARNING",
        "show_progress": False, **extra,
    })


def load_titles(config: Config):
    """create_dataset + data_preparation, then the titles DELRec would see (it reads them
    from the training split's dataset). Returns the whole data set, the titles and the
    number of interactions loaded (data_preparation turns the data set's own interactions
    into sequence prefixes in place)."""
    dataset = create_dataset(config)
    n_interactions = dataset.inter_num
    train_data, _, _ = data_preparation(config, dataset)
    train = train_data._dataset
    text = ItemText.from_dataset(train, config["title_field"], config["title_year_field"])
    assert train.item_num == dataset.item_num
    return dataset, text, n_interactions


def assert_every_item_titled(dataset, text: ItemText) -> None:
    assert len(text) == dataset.item_num
    for item_id in range(1, dataset.item_num):
        assert isinstance(text[item_id], str) and text[item_id].strip(), item_id
        assert text[item_id] == text[item_id].strip() and "  " not in text[item_id]


# ----------------------------------------------------------------------- the YAML files


@pytest.mark.parametrize("name", PRESETS)
def test_preset_file_is_consistent(name: str) -> None:
    values = preset(name)
    assert values["domain"] == DOMAINS[name]
    assert values["title_field"] in values["load_col"]["item"]
    assert values["load_col"]["item"][0] == "item_id"
    assert values["load_col"]["inter"] == ["user_id", "item_id", "timestamp"]
    if values.get("title_year_field"):
        assert values["title_year_field"] in values["load_col"]["item"]
    if name in CONVERTED:  # the converters' output: title:token_seq, untitled items kept
        assert values["load_col"] == CONVERTED_LOAD_COL
        assert values["title_field"] == "title" and values["title_year_field"] is None
        assert values["user_inter_num_interval"] == values["item_inter_num_interval"] == "[5,inf)"
        assert values["filter_inter_by_user_or_item"] is False
    domains = yaml.safe_load(
        (Path(recbole_delrec.__file__).parent / "prompts" / "domains.yaml").read_text("utf-8"))
    assert values["domain"] in domains


def test_command_line_and_config_dict_beat_the_preset(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["run_delrec.py", "--model=DELRec", "--dataset=steam",
                                      "--user_inter_num_interval=[10,inf)",
                                      f"--data_path={tmp_path}"])
    config = Config(model="DELRec", dataset="steam", config_dict={
        "domain": "products", "use_gpu": False, "state": "WARNING"})
    assert config["user_inter_num_interval"] == "[10,inf)"
    assert config["item_inter_num_interval"] == "[5,inf)"  # the rest of the preset stays
    assert config["domain"] == "products" and config["title_field"] == "title"
    # RecBole appends the data set name to data_path itself.
    assert Path(config["data_path"]) == tmp_path / "steam"


# ----------------------------------------------------------------------- ML-100K


def test_ml100k_preset_loads_titles_with_years(tmp_path) -> None:
    config = delrec_config("ml-100k", tmp_path)
    assert config["title_field"] == "movie_title"
    assert config["title_year_field"] == "release_year"
    assert config["domain"] == "movies"
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"],
                                  "item": ["item_id", "movie_title", "release_year"]}
    # RecBole always reads its bundled copy for ml-100k, whatever data_path says.
    assert Path(config["data_path"]).parts[-2:] == ("dataset_example", "ml-100k")

    dataset, text, n_interactions = load_titles(config)
    assert dataset.item_num == 1682 + 1 and dataset.user_num == 943 + 1
    assert n_interactions == 100_000
    assert_every_item_titled(dataset, text)
    assert text.n_fallback == 0
    titles = set(text.titles[1:])
    assert "The Usual Suspects (1995)" in titles and "Usual Suspects, The" not in titles
    assert "Toy Story (1995)" in titles
    # Every title carries its year but item 267, whose title and year are both "unkonwn".
    assert [t for t in text.titles[1:] if not re.search(r" \(\d{4}\)$", t)] == ["unkonwn"]
    assert not [t for t in titles if re.search(r", (The|A|An)( \(\d{4}\))?$", t)]


# ----------------------------------------------------------------------- Steam


def read_atomic(path: Path) -> list[list[str]]:
    """Rows of an atomic file (header dropped), read the way pandas (and so RecBole) reads
    them: tab separated, with csv quoting undone (a quoted field, inner quotes doubled)."""
    with path.open(encoding="utf-8", newline="") as handle:
        return [row for row in list(csv.reader(handle, delimiter="\t"))[1:] if row]


def k_core(pairs: list[tuple[str, str]], k: int) -> list[tuple[str, str]]:
    """The (user, item) rows left by iterative k-core filtering (repeated pairs count)."""
    while True:
        users = Counter(u for u, _ in pairs)
        items = Counter(i for _, i in pairs)
        kept = [(u, i) for u, i in pairs if users[u] >= k and items[i] >= k]
        if len(kept) == len(pairs):
            return kept
        pairs = kept


def test_steam_preset_loads_the_shared_copy(tmp_path) -> None:
    folder = SHARED_DATASETS / "steam"
    if not (folder / "steam.inter").is_file() or not (folder / "steam.item").is_file():
        pytest.skip(f"shared Steam atomic files not found in {folder} (they live beside the "
                    f"checkout at ../shared/datasets/steam)")
    config = delrec_config("steam", tmp_path, data_path=str(SHARED_DATASETS))
    assert config["title_field"] == "title" and config["title_year_field"] is None
    assert config["domain"] == "games"
    assert config["load_col"] == CONVERTED_LOAD_COL
    assert config["user_inter_num_interval"] == config["item_inter_num_interval"] == "[5,inf)"
    assert config["filter_inter_by_user_or_item"] is False

    dataset, text, n_interactions = load_titles(config)
    assert_every_item_titled(dataset, text)

    raw_titles = {item: title for item, title in read_atomic(folder / "steam.item")}
    pairs = [(row[0], row[1]) for row in read_atomic(folder / "steam.inter")]
    kept = k_core(pairs, 5)
    assert n_interactions == len(kept)
    survivors = {item for _, item in kept}
    loaded = set(dataset.field2id_token["item_id"][1:])
    assert loaded == survivors
    assert dataset.item_num - 1 == len(survivors & raw_titles.keys()) == len(survivors)
    assert text.n_fallback == 0

    # Each title is the file's title (white space collapsed), its unicode kept as written
    # or in its NFKC form (what the converter writes); never mangled.
    for item_id in range(1, dataset.item_num):
        raw = raw_titles[dataset.field2id_token["item_id"][item_id]]
        assert text[item_id] in {normalize_title(raw),
                                 normalize_title(unicodedata.normalize("NFKC", raw))}
    titles = set(text.titles[1:])
    assert 'Spy Fox in "Dry Cereal"' in titles  # csv quoting undone, as RecBole reads it
    assert titles & {"Space Quest™ Collection", "Space QuestTM Collection"}
    assert any(not t.isascii() for t in titles) or any("TM" in t for t in titles)
    assert not [t for t in titles if "\ufffd" in t or "â„¢" in t]


# ----------------------------------------------------------------------- Amazon 2014

N_ITEMS = 40  # >= 20 so that RecBole's uni19 sampler finds 19 negatives for every user
UNTITLED = "B0000000UT"


def amazon_raw_files(folder: Path) -> tuple[Path, Path]:
    """Reviews and metadata in the McAuley 2014 formats: a 6-core block that survives 5-core,
    a user and an item with too few interactions, and one item without a title."""
    folder.mkdir(parents=True, exist_ok=True)
    asins = [f"B{n:09d}" for n in range(N_ITEMS - 1)] + [UNTITLED]
    day = 86_400
    reviews = [amazon_review(f"A{u:04d}", asins[(u + j) % N_ITEMS], 1_300_000_000 + day * (u + j))
               for u in range(N_ITEMS) for j in range(6)]
    reviews += [amazon_review("ASPARSE", asins[0], 1_400_000_000),       # user with 2 reviews
                amazon_review("ASPARSE", asins[1], 1_400_000_001),
                amazon_review("A0000", "BRARE00000", 1_400_000_002)]    # item with 1 review
    meta = [amazon_meta(asin, title=f"Rose &amp; Ｓｈｅａ Butter\tNo. {n}")
            for n, asin in enumerate(asins) if asin != UNTITLED]
    meta += [amazon_meta(UNTITLED), amazon_meta("BRARE00000", title="Rare")]
    return (write_raw(folder / "reviews_5.json.gz", reviews),
            write_raw(folder / "meta.json.gz", meta))


@pytest.mark.parametrize("name", ["amazon-beauty", "amazon-home-and-kitchen"])
def test_amazon_preset_loads_converted_files(name: str, tmp_path) -> None:
    reviews, meta = amazon_raw_files(tmp_path / "raw")
    out = tmp_path / "atomic"
    stats = convert_amazon2014(reviews, meta, out, name=name, k_core=5)
    assert stats == {"users": N_ITEMS, "items": N_ITEMS, "interactions": 6 * N_ITEMS,
                     "items_without_title": 1}
    assert (out / name / f"{name}.inter").is_file() and (out / name / f"{name}.item").is_file()

    config = delrec_config(name, tmp_path, data_path=str(out))
    assert config["domain"] == "products"
    assert config["title_field"] == "title" and config["title_year_field"] is None
    assert config["load_col"] == CONVERTED_LOAD_COL
    assert config["user_inter_num_interval"] == config["item_inter_num_interval"] == "[5,inf)"
    assert config["filter_inter_by_user_or_item"] is False

    dataset, text, n_interactions = load_titles(config)
    assert dataset.item_num == N_ITEMS + 1 and dataset.user_num == N_ITEMS + 1
    assert n_interactions == 6 * N_ITEMS  # the untitled item's interactions are kept
    assert_every_item_titled(dataset, text)
    by_token = dict(zip(dataset.field2id_token["item_id"], text.titles))
    assert by_token["B000000007"] == "Rose & Shea Butter No. 7"
    assert by_token[UNTITLED] == f"item {UNTITLED}" and text.n_fallback == 1


def test_amazon_preset_applies_5_core_itself(tmp_path) -> None:
    """Atomic files that are not 5-core (converted with k_core=0) are filtered by RecBole
    with the preset's intervals, to the same users and items as the converter's 5-core."""
    reviews, meta = amazon_raw_files(tmp_path / "raw")
    convert_amazon2014(reviews, meta, tmp_path / "unfiltered", name="amazon-beauty", k_core=0)
    config = delrec_config("amazon-beauty", tmp_path, data_path=str(tmp_path / "unfiltered"))
    dataset = create_dataset(config)
    users = set(dataset.field2id_token["user_id"][1:])
    items = set(dataset.field2id_token["item_id"][1:])
    assert "ASPARSE" not in users and len(users) == N_ITEMS
    assert "BRARE00000" not in items and len(items) == N_ITEMS and UNTITLED in items


# ----------------------------------------------------------------------- missing titles


def write_atomic(folder: Path, name: str, inter: bool = True, item_header: str | None = None):
    folder = folder / name
    folder.mkdir(parents=True)
    rows = [f"u{u}\ti{(u + j) % 8}\t{10 * u + j}" for u in range(6) for j in range(3)]
    (folder / f"{name}.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n")
    if item_header is not None:
        (folder / f"{name}.item").write_text(
            item_header + "\n" + "\n".join(f"i{i}\tgenre{i % 2}" for i in range(8)) + "\n")


def plain_dataset(name: str, tmp_path: Path, load_col: dict):
    config = delrec_config(name, tmp_path, data_path=str(tmp_path / "data"), load_col=load_col)
    return config, create_dataset(config)


@pytest.mark.parametrize("item_cols", [["item_id", "title"], ["item_id", "genre"]])
def test_item_file_without_title_column_names_title_field(tmp_path, item_cols) -> None:
    write_atomic(tmp_path / "data", "notitle", item_header="item_id:token\tgenre:token")
    config, dataset = plain_dataset("notitle", tmp_path, {
        "inter": ["user_id", "item_id", "timestamp"], "item": item_cols})
    assert dataset.item_feat is not None
    with pytest.raises(ValueError, match="title_field") as info:
        ItemText.from_dataset(dataset, config["title_field"], config["title_year_field"])
    assert "'title'" in str(info.value)


def test_data_set_without_item_file_names_the_item_file(tmp_path) -> None:
    write_atomic(tmp_path / "data", "noitem")
    config, dataset = plain_dataset("noitem", tmp_path, CONVERTED_LOAD_COL)
    assert dataset.item_feat is None
    with pytest.raises(ValueError, match=r"'noitem\.item'"):
        ItemText.from_dataset(dataset, config["title_field"], config["title_year_field"])
