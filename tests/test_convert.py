"""Tests for the raw-data converters: raw files are written here in the exact published
forms (strict JSON reviews, Python-literal metadata, gzipped or plain) and the RecBole
atomic output is checked, including that real RecBole loads it."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_delrec.convert import convert_amazon2014, convert_steam, main
from recbole_delrec.convert.atomic import ConversionError, clean_text

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------- raw file writers


def write_raw(path: Path, lines: list[str], gz: bool = True) -> Path:
    """Write one record per line, gzipped like the published files or plain."""
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def amazon_review(user: str, asin: str, ts: int, overall: float = 5.0) -> str:
    """One line of reviews_<Category>_5.json.gz (strict JSON, all published keys)."""
    return json.dumps({
        "reviewerID": user, "asin": asin, "reviewerName": f"Name of {user}",
        "helpful": [0, 0], "reviewText": "Great\tproduct.\nWould buy again.",
        "overall": overall, "summary": "Five Stars", "unixReviewTime": ts,
        "reviewTime": "09 13, 2013",
    })


def amazon_meta(asin: str, **fields: object) -> str:
    """One line of meta_<Category>.json.gz: a Python dict literal, single quotes."""
    record = {
        "asin": asin, "price": 12.99, "imUrl": f"http://ecx.images-amazon.com/{asin}.jpg",
        "related": {"also_bought": ["B000000001"]}, "salesRank": {"Beauty": 1234},
        "categories": [["Beauty", "Skin Care"]], "brand": "",
    }
    record.update(fields)
    return repr(record)


def py2_literal(record: dict) -> str:
    """A dict literal as Python 2 printed it (u'' strings, non-ASCII as escapes), as in
    the Steam dumps."""
    def lit(value: object) -> str:
        if isinstance(value, str):
            return "u" + ascii(value)
        if isinstance(value, list):
            return "[" + ", ".join(lit(v) for v in value) + "]"
        return repr(value)
    return "{" + ", ".join(f"{lit(k)}: {lit(v)}" for k, v in record.items()) + "}"


def steam_review(username: str, product_id: str, date: str, user_id: str | None = None) -> str:
    """One line of steam_reviews.json.gz."""
    record: dict = {
        "username": username, "hours": 0.1, "products": 41, "product_id": product_id,
        "page_order": 0, "date": date, "text": "Fun.\nReally.", "early_access": False,
        "page": 1,
    }
    if user_id is not None:
        record.update(user_id=user_id, compensation="Product received for free")
    return py2_literal(record)


def steam_game(**fields: object) -> str:
    """One line of steam_games.json.gz; callers leave out 'id' or 'app_name' as published."""
    record = {
        "publisher": "Kotoshiro", "genres": ["Action", "Indie"],
        "url": "http://store.steampowered.com/app/761140/", "release_date": "2018-01-04",
        "tags": ["Strategy"], "discount_price": 4.49, "specs": ["Single-player"],
        "price": 4.99, "early_access": False, "developer": "Kotoshiro",
    }
    record.update(fields)
    return py2_literal(record)


def read_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


# ----------------------------------------------------------------------- fixtures

AMAZON_REVIEWS = [
    amazon_review("U2", "B3", 300, 4.0),
    amazon_review("U1", "B2", 200, 3.0),
    amazon_review("U1", "B1", 100, 5.0),
    amazon_review("U2", "B1", 300, 1.0),  # same time as U2/B3: input order decides
    amazon_review("U2", "B2", 50, 2.0),
]
AMAZON_META = [
    amazon_meta("B1", title="Tom &amp; Jerry\tLip\nBalm"),
    amazon_meta("B2"),  # published meta lines may lack 'title'
    amazon_meta("B3", title="Pokémon™ Ｆｕｌｌ　Ｗｉｄｔｈ"),
    amazon_meta("B9", title="Never reviewed"),
]


@pytest.fixture
def amazon_files(tmp_path: Path) -> tuple[Path, Path]:
    return (write_raw(tmp_path / "reviews_Beauty_5.json.gz", AMAZON_REVIEWS),
            write_raw(tmp_path / "meta_Beauty.json.gz", AMAZON_META))


# ----------------------------------------------------------------------- clean_text


@pytest.mark.parametrize("raw, clean", [
    ("Pokémon™ Red", "PokémonTM Red"),
    ("Poke\u0301mon", "Pokémon"),
    ("ＦＩＮＡＬ　ＦＡＮＴＡＳＹ ＶＩＩ", "FINAL FANTASY VII"),
    ("Tom &amp; Jerry &lt;3 &#39;s", "Tom & Jerry <3 's"),
    ("  a\tb\r\nc\x00d\x07  e\u2028f ", "a b c d e f"),
    ("\t \n", ""),
    (None, ""),
])
def test_clean_text(raw: str | None, clean: str) -> None:
    assert clean_text(raw) == clean


# ----------------------------------------------------------------------- Amazon 2014


def test_amazon_writes_sorted_interactions_and_clean_titles(amazon_files, tmp_path) -> None:
    stats = convert_amazon2014(*amazon_files, tmp_path / "out", "beauty", k_core=0)
    folder = tmp_path / "out" / "beauty"
    assert sorted(p.name for p in folder.iterdir()) == ["beauty.inter", "beauty.item"]
    assert read_rows(folder / "beauty.inter") == [
        ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
        ["U1", "B1", "5", "100"],
        ["U1", "B2", "3", "200"],
        ["U2", "B2", "2", "50"],
        ["U2", "B3", "4", "300"],
        ["U2", "B1", "1", "300"],
    ]
    # B2 has no title -> no row; B9 has no interaction -> no row.
    assert read_rows(folder / "beauty.item") == [
        ["item_id:token", "title:token_seq"],
        ["B1", "Tom & Jerry Lip Balm"],
        ["B3", "PokémonTM Full Width"],
    ]
    assert stats == {"users": 2, "items": 3, "interactions": 5, "items_without_title": 1}


def test_gzip_is_detected_by_content_not_name(amazon_files, tmp_path) -> None:
    reviews = write_raw(tmp_path / "plain_named.json.gz", AMAZON_REVIEWS, gz=False)
    meta = write_raw(tmp_path / "gzipped_named.json", AMAZON_META, gz=True)
    convert_amazon2014(*amazon_files, tmp_path / "a", "x", k_core=0)
    convert_amazon2014(reviews, meta, tmp_path / "b", "x", k_core=0)
    for suffix in (".inter", ".item"):
        expected = (tmp_path / "a" / "x" / f"x{suffix}").read_bytes()
        assert (tmp_path / "b" / "x" / f"x{suffix}").read_bytes() == expected


def test_k_core_filters_iteratively(tmp_path) -> None:
    # k=2: U4 and item C have one interaction each -> dropped; U3 is then left with one
    # and goes in the second round, although it had two to begin with.
    reviews = write_raw(tmp_path / "r.json.gz", [
        amazon_review("U1", "A", 1), amazon_review("U1", "B", 2),
        amazon_review("U2", "A", 1), amazon_review("U2", "B", 2),
        amazon_review("U3", "B", 1), amazon_review("U3", "C", 2),
        amazon_review("U4", "A", 1),
    ])
    meta = write_raw(tmp_path / "m.json.gz", [amazon_meta(i, title=i) for i in "ABC"])
    stats = convert_amazon2014(reviews, meta, tmp_path / "out", "k", k_core=2)
    rows = read_rows(tmp_path / "out" / "k" / "k.inter")[1:]
    assert [(u, i) for u, i, _, _ in rows] == [("U1", "A"), ("U1", "B"), ("U2", "A"), ("U2", "B")]
    assert stats["users"] == 2 and stats["items"] == 2
    for k in (0, 1):
        assert convert_amazon2014(reviews, meta, tmp_path / "out", "k", k_core=k)["users"] == 4


def test_duplicate_rows_are_kept_once(tmp_path) -> None:
    reviews = write_raw(tmp_path / "r.json", [
        amazon_review("U1", "A", 10, 5.0), amazon_review("U1", "A", 10, 1.0),
        amazon_review("U1", "A", 20, 3.0),
    ], gz=False)
    meta = write_raw(tmp_path / "m.json", [amazon_meta("A", title="A")], gz=False)
    convert_amazon2014(reviews, meta, tmp_path / "out", "d", k_core=0)
    assert read_rows(tmp_path / "out" / "d" / "d.inter")[1:] == [
        ["U1", "A", "5", "10"], ["U1", "A", "3", "20"],
    ]


# ----------------------------------------------------------------------- Steam


def test_steam_users_dates_and_title_fallback(tmp_path) -> None:
    reviews = write_raw(tmp_path / "steam_reviews.json.gz", [
        steam_review("Chaos Syren", "725280", "2017-12-17"),
        steam_review("Ariman1", "328100", "2017-12-16", user_id="76561198007483075"),
        steam_review("Chaos Syren", "328100", "2017-12-01"),
        steam_review("Chaos Syren", "999", "2017-12-02"),
    ])
    games = write_raw(tmp_path / "steam_games.json.gz", [
        steam_game(app_name="Lost &amp; Found\tKitty", title="ignored", id="725280"),
        steam_game(title="Only ＴＩＴＬＥ™", id="328100"),  # no app_name
        steam_game(app_name="No id, cannot be matched"),    # no id
        steam_game(app_name="  ", title="", id="999"),      # blank titles
    ], gz=False)
    stats = convert_steam(reviews, games, tmp_path / "out", k_core=0)
    folder = tmp_path / "out" / "steam"
    assert read_rows(folder / "steam.inter") == [
        ["user_id:token", "item_id:token", "timestamp:float"],
        ["76561198007483075", "328100", "1513382400"],
        ["Chaos Syren", "328100", "1512086400"],
        ["Chaos Syren", "999", "1512172800"],
        ["Chaos Syren", "725280", "1513468800"],
    ]
    assert read_rows(folder / "steam.item") == [
        ["item_id:token", "title:token_seq"],
        ["328100", "Only TITLETM"],
        ["725280", "Lost & Found Kitty"],
    ]
    assert stats == {"users": 2, "items": 3, "interactions": 4, "items_without_title": 1}


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad_file, bad_line, message", [
    ("reviews", '{"reviewerID": "U9", "asin": "B1", "overall": 5.0,', "malformed JSON"),
    ("reviews", json.dumps({"reviewerID": "U9", "asin": "B1", "overall": 5.0}), "unixReviewTime"),
    ("reviews", json.dumps({"reviewerID": "U9", "asin": "B1", "overall": "five",
                            "unixReviewTime": 1}), "'overall' is not a number"),
    ("meta", "{'asin': 'B1', 'title': 'unterminated}", "malformed Python literal"),
    ("meta", "__import__('os').system('touch pwned')", "malformed Python literal"),
    ("meta", "['asin', 'B1']", "expected a dict"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_file, bad_line, message) -> None:
    lines = {"reviews": list(AMAZON_REVIEWS[:2]), "meta": list(AMAZON_META[:2])}
    lines[bad_file].insert(1, bad_line)  # the bad record is on line 2
    reviews = write_raw(tmp_path / "reviews_Beauty_5.json.gz", lines["reviews"])
    meta = write_raw(tmp_path / "meta_Beauty.json.gz", lines["meta"])
    bad_path = reviews if bad_file == "reviews" else meta
    with pytest.raises(ConversionError, match=message) as info:
        convert_amazon2014(reviews, meta, tmp_path / "out", "beauty", k_core=0)
    assert str(info.value).startswith(f"{bad_path}:2: ")
    assert not (tmp_path / "out").exists()
    assert not Path("pwned").exists()


def test_steam_bad_date_and_missing_file(tmp_path) -> None:
    reviews = write_raw(tmp_path / "steam_reviews.json", [
        steam_review("a", "1", "2017-12-17"), steam_review("b", "1", "Posted December 17."),
    ], gz=False)
    games = write_raw(tmp_path / "steam_games.json", [steam_game(id="1", app_name="x")], gz=False)
    with pytest.raises(ConversionError, match=rf"^{reviews}:2: 'date' is not YYYY-MM-DD"):
        convert_steam(reviews, games, tmp_path / "out", k_core=0)
    missing = tmp_path / "nope.json.gz"
    with pytest.raises(ConversionError, match=rf"^{missing}: cannot open"):
        convert_steam(missing, games, tmp_path / "out", k_core=0)


def test_truncated_gzip_names_the_line(tmp_path, amazon_files) -> None:
    reviews = tmp_path / "truncated.json.gz"
    reviews.write_bytes(amazon_files[0].read_bytes()[:-12])
    with pytest.raises(ConversionError, match=rf"^{reviews}:\d+: unreadable data"):
        convert_amazon2014(reviews, amazon_files[1], tmp_path / "out", "x", k_core=0)


def test_failed_conversion_keeps_previous_output(amazon_files, tmp_path) -> None:
    convert_amazon2014(*amazon_files, tmp_path / "out", "beauty", k_core=0)
    folder = tmp_path / "out" / "beauty"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    bad_meta = write_raw(tmp_path / "bad_meta.json.gz", AMAZON_META + ["{'asin': "])
    with pytest.raises(ConversionError, match=rf"^{bad_meta}:5: "):
        convert_amazon2014(amazon_files[0], bad_meta, tmp_path / "out", "beauty", k_core=0)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_k_core_leaving_nothing_is_an_error(amazon_files, tmp_path) -> None:
    with pytest.raises(ConversionError, match="no interactions left after 50-core"):
        convert_amazon2014(*amazon_files, tmp_path / "out", "beauty", k_core=50)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------- command line


def test_cli_prints_stats(amazon_files, tmp_path, capsys) -> None:
    argv = ["amazon2014", "--reviews", str(amazon_files[0]), "--meta", str(amazon_files[1]),
            "--out", str(tmp_path / "out"), "--name", "beauty", "--k-core", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for line in ("users: 2", "items: 3", "interactions: 5", "items without title: 1"):
        assert line in out.splitlines()
    assert (tmp_path / "out" / "beauty" / "beauty.inter").is_file()


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path) -> None:
    reviews = write_raw(tmp_path / "steam_reviews.json.gz",
                        [steam_review("a", "1", "2017-12-17"), "{u'username': u'b',"])
    games = write_raw(tmp_path / "steam_games.json.gz", [steam_game(id="1", app_name="x")])
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "recbole_delrec.convert", "steam", "--reviews", str(reviews),
         "--games", str(games), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2
    assert f"{reviews}:2: malformed Python literal" in result.stderr
    assert "Traceback" not in result.stderr and "RuntimeWarning" not in result.stderr
    assert not out.exists()


# ----------------------------------------------------------------------- RecBole loads it


def test_output_loads_in_recbole(tmp_path) -> None:
    from recbole.config import Config
    from recbole.data import create_dataset

    items = {f"I{i}": f"Game {i}" for i in range(6)}
    items["I0"] = '"Weird Al" Yankovic &amp; Pokémon™'
    items["I5"] = ""  # no title -> no .item row
    reviews = write_raw(tmp_path / "reviews.json.gz", [
        amazon_review(f"U{u}", item, 1000 * u + n)
        for u in range(4) for n, item in enumerate(items)
    ])
    meta = write_raw(tmp_path / "meta.json.gz",
                     [amazon_meta(asin, title=title) for asin, title in items.items()])
    out_dir = tmp_path / "atomic"
    convert_amazon2014(reviews, meta, out_dir, "tiny", k_core=2)

    def load(extra: dict):
        config = Config(model="SASRec", dataset="tiny", config_dict={
            "data_path": str(out_dir),
            "load_col": {"inter": ["user_id", "item_id", "timestamp"],
                         "item": ["item_id", "title"]},
            "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
            "train_neg_sample_args": None, "loss_type": "CE", "show_progress": False,
            "state": "WARNING", "checkpoint_dir": str(tmp_path / "saved"),
            "benchmark_filename": None, **extra,
        })
        return create_dataset(config)

    # Items without a .item row keep their interactions only when RecBole is told not to
    # drop interactions of items missing from the item file (its default for custom sets).
    dataset = load({"filter_inter_by_user_or_item": False})
    assert dataset.item_num == len(items) + 1  # + RecBole's padding id 0
    assert dataset.user_num == 4 + 1
    assert dataset.inter_num == 4 * len(items)

    def title_of(item: str) -> str:
        ids = dataset.item_feat["title"][dataset.token2id("item_id", item)]
        return " ".join(dataset.field2id_token["title"][int(i)] for i in ids if int(i) != 0)

    assert title_of("I0") == '"Weird Al" Yankovic & PokémonTM'
    assert title_of("I3") == "Game 3"
    assert title_of("I5") == ""

    default = load({})
    assert "I5" not in default.field2id_token["item_id"]
    assert default.inter_num == 4 * (len(items) - 1)
