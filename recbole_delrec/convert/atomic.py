"""Shared pieces of the raw-data converters: reading, cleaning, filtering, writing.

The public raw files (Amazon 2014, Steam) are one record per line, gzipped or not, and
partly Python dict *literals* rather than JSON.  Every converter reads them through
:func:`read_records`, turns them into :class:`Interaction` rows and hands them to
:func:`build_dataset`, so that de-duplication, k-core filtering, title cleaning and
the atomic write behave identically for every data set.

Output follows RecBole's atomic-file format (tab separated, typed header):

* ``<name>.inter``: ``user_id:token  item_id:token  [rating:float]  timestamp:float``
* ``<name>.item``:  ``item_id:token  title:token_seq``

An item whose title is missing, or empty after :func:`clean_text`, gets **no** row in
``<name>.item``: RecBole then leaves its ``title`` field empty, and the plugin's item-text
layer applies its documented fallback title.  Writing an empty title instead would look
like a real (blank) name to RecBole.  Note that RecBole's default for custom data sets,
``filter_inter_by_user_or_item: True``, drops the interactions of items absent from the
``.item`` file; set it to ``False`` to keep them.

RecBole reads the files with pandas' default missing-value strings, so an id or title that
is exactly ``NA``, ``null``, ``None``, ``nan``, ... loads as missing (an id row is then
dropped by RecBole, a title becomes empty); the converters leave such values unchanged.
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import json
import os
import tempfile
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

GZIP_MAGIC = b"\x1f\x8b"
INTER_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
ITEM_HEADER = ("item_id:token", "title:token_seq")


class ConversionError(ValueError):
    """Bad raw input, located by file and (when known) line so the user can inspect it."""

    def __init__(self, path: Path | str, line_no: int | None, message: str) -> None:
        self.path = Path(path)
        self.line_no = line_no
        where = f"{self.path}:{line_no}" if line_no is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class Interaction(NamedTuple):
    """One (user, item, time) event; ``rating`` is None for implicit data such as Steam."""

    user: str
    item: str
    timestamp: float
    rating: float | None = None


# --------------------------------------------------------------------------- cleaning


def clean_text(value: Any) -> str:
    """Normalise a raw title into one tab-free line that RecBole can split into tokens.

    HTML entities are unescaped first (the Amazon and Steam dumps contain ``&amp;``), then
    NFKC folds compatibility forms (full-width letters, ``™`` -> ``TM``), control characters
    become spaces, and whitespace runs collapse to one space.  A tab or newline left in a
    title would break the tab-separated atomic file.
    """
    if value is None:
        return ""
    text = unicodedata.normalize("NFKC", html.unescape(str(value)))
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return " ".join(text.split())


# --------------------------------------------------------------------------- reading


def _open_binary(path: Path) -> BinaryIO:
    """Open gzipped or plain input, decided by the gzip magic bytes (names lie)."""
    try:
        with open(path, "rb") as probe:
            gzipped = probe.read(2) == GZIP_MAGIC
        return gzip.open(path, "rb") if gzipped else open(path, "rb")
    except OSError as exc:
        raise ConversionError(path, None, f"cannot open: {exc.strerror or exc}") from exc


def read_lines(path: Path | str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_no, text)`` for each non-blank line, counting lines from 1.

    Lines are decoded one by one so that a bad byte or a truncated gzip stream is
    reported at the exact line where it occurs.
    """
    path = Path(path)
    with _open_binary(path) as stream:
        line_no = 0
        while True:
            try:
                raw = stream.readline()
            except (OSError, EOFError, zlib.error) as exc:
                raise ConversionError(path, line_no + 1, f"unreadable data: {exc}") from exc
            if not raw:
                return
            line_no += 1
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise ConversionError(path, line_no, f"not UTF-8: {exc.reason}") from exc
            if text:
                yield line_no, text


def _as_record(value: Any, path: Path, line_no: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConversionError(path, line_no, f"expected a dict, got {type(value).__name__}")
    return value


def parse_literal(line: str, path: Path, line_no: int) -> dict[str, Any]:
    """Parse one Python dict literal (the published meta/Steam form) without ``eval``."""
    try:
        value = ast.literal_eval(line)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ConversionError(path, line_no, f"malformed Python literal: {exc}") from exc
    return _as_record(value, path, line_no)


def parse_json(line: str, path: Path, line_no: int) -> dict[str, Any]:
    """Parse one strict JSON object (the Amazon review form)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ConversionError(path, line_no, f"malformed JSON: {exc}") from exc
    return _as_record(value, path, line_no)


Parser = Callable[[str, Path, int], dict[str, Any]]


def read_records(path: Path | str, parse: Parser) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_no, record)`` for each line of ``path`` parsed with ``parse``."""
    path = Path(path)
    for line_no, text in read_lines(path):
        yield line_no, parse(text, path, line_no)


def require(record: Mapping[str, Any], key: str, path: Path, line_no: int) -> Any:
    """Return ``record[key]``, or fail naming the file, line and missing key."""
    if key not in record or record[key] is None:
        raise ConversionError(path, line_no, f"missing key {key!r}")
    return record[key]


def require_id(record: Mapping[str, Any], key: str, path: Path, line_no: int) -> str:
    """Return ``record[key]`` as an id token safe for a tab-separated file.

    Whitespace runs (tabs, newlines) become one space; an empty id is an input error, not
    a user or item.
    """
    token = " ".join(str(require(record, key, path, line_no)).split())
    if not token:
        raise ConversionError(path, line_no, f"empty {key!r}")
    return token


def require_float(record: Mapping[str, Any], key: str, path: Path, line_no: int) -> float:
    """Return ``record[key]`` as a float, or fail naming the file, line and key."""
    value = require(record, key, path, line_no)
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ConversionError(path, line_no, f"{key!r} is not a number: {value!r}") from exc


def read_titles(
    path: Path | str, id_key: str, title_keys: tuple[str, ...], wanted: set[str]
) -> dict[str, Any]:
    """Map each wanted item id to its raw title from a dict-literal-per-line metadata file.

    The first key in ``title_keys`` whose value cleans to non-empty text wins (Steam has
    ``app_name`` with ``title`` as fallback); the first line with a usable title wins for
    an id listed twice.  Lines without ``id_key`` are skipped: the Steam games file has
    such entries and they cannot be matched to interactions.  Every line is still parsed,
    so a malformed metadata file is reported rather than half-used.
    """
    path = Path(path)
    titles: dict[str, Any] = {}
    for line_no, record in read_records(path, parse_literal):
        if record.get(id_key) is None:
            continue
        item = require_id(record, id_key, path, line_no)
        if item not in wanted or item in titles:
            continue
        title = next((record[k] for k in title_keys if clean_text(record.get(k))), None)
        if title is not None:
            titles[item] = title
    return titles


# --------------------------------------------------------------------------- filtering


def deduplicate(rows: Iterable[Interaction]) -> list[Interaction]:
    """Keep the first of rows sharing (user, item, timestamp): a re-posted review is one event."""
    seen: set[tuple[str, str, float]] = set()
    kept = []
    for row in rows:
        key = (row.user, row.item, row.timestamp)
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def k_core(rows: list[Interaction], k: int) -> list[Interaction]:
    """Keep rows whose user and item both have >= k interactions, repeated until stable.

    Dropping a rare item can push a user below k and vice versa, hence the loop.
    ``k <= 1`` keeps everything.
    """
    while k > 1:
        users = Counter(row.user for row in rows)
        items = Counter(row.item for row in rows)
        kept = [row for row in rows if users[row.user] >= k and items[row.item] >= k]
        if len(kept) == len(rows):
            break
        rows = kept
    return rows


# --------------------------------------------------------------------------- writing


def _format_number(value: float) -> str:
    """Write whole numbers without ``.0`` (unix seconds, star ratings) and keep the rest exact."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _write_temp(target: Path, header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> Path:
    """Write a complete file next to ``target`` and return its temporary path.

    ``csv`` quoting (a field with ``"`` is quoted, inner quotes doubled) is what pandas,
    and so RecBole, reads back; a bare leading quote would otherwise swallow the tab.
    """
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", newline="", dir=target.parent,
        prefix=f".{target.name}.", suffix=".tmp", delete=False,
    )
    try:
        with handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(handle.name)
        raise
    return Path(handle.name)


def _inter_table(rows: list[Interaction]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Header and rows for ``.inter``; the rating column exists only if every row has one."""
    rated = [row.rating is not None for row in rows]
    if any(rated) and not all(rated):
        raise ValueError("either every interaction has a rating or none has")
    with_rating = bool(rows) and all(rated)
    header = INTER_HEADER if with_rating else tuple(h for h in INTER_HEADER if h != "rating:float")
    table = [
        (row.user, row.item)
        + ((_format_number(row.rating),) if with_rating else ())
        + (_format_number(row.timestamp),)
        for row in rows
    ]
    return header, table


def write_atomic_files(
    out_dir: Path | str,
    name: str,
    inter_rows: Iterable[Interaction],
    item_rows: Mapping[str, Any],
) -> dict[str, int]:
    """Write ``<out_dir>/<name>/<name>.inter`` and ``.item``; return counts.

    Interactions are sorted by (user, timestamp, input order) so reruns give identical
    files.  ``item_rows`` maps item id -> raw title; titles are cleaned here, items not
    in the interactions are ignored, and an item whose title is missing or empty after
    cleaning gets no ``.item`` row (with ``filter_inter_by_user_or_item: False`` RecBole
    keeps its interactions and leaves the title empty; the plugin uses its fallback
    title).  Both files are first written completely to temporary files in the
    target folder and then moved in place with ``os.replace``, so an interrupted run never
    leaves a truncated file where a good one was.
    """
    rows = sorted(inter_rows, key=lambda row: (row.user, row.timestamp))
    items = {row.item for row in rows}
    cleaned = ((item, clean_text(raw)) for item, raw in item_rows.items() if item in items)
    titles = {item: title for item, title in cleaned if title}
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    inter_header, inter_table = _inter_table(rows)
    targets = (folder / f"{name}.inter", folder / f"{name}.item")
    temps: list[Path] = []
    try:
        temps.append(_write_temp(targets[0], inter_header, inter_table))
        temps.append(_write_temp(targets[1], ITEM_HEADER, sorted(titles.items())))
        for temp, target in zip(temps, targets):
            os.replace(temp, target)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return {
        "users": len({row.user for row in rows}),
        "items": len(items),
        "interactions": len(rows),
        "items_without_title": len(items) - len(titles),
    }


def build_dataset(
    source: Path | str,
    interactions: Iterable[Interaction],
    titles_for: Callable[[set[str]], Mapping[str, Any]],
    out_dir: Path | str,
    name: str,
    k: int,
) -> dict[str, int]:
    """The pipeline every converter shares: de-duplicate, k-core, look up titles, write.

    All input is read and validated before anything is written, so bad input leaves the
    output folder untouched.  ``titles_for`` receives the surviving item ids, letting it
    keep only the titles that are needed from large metadata files.  An empty result is
    an error (named after ``source``, the interaction file): RecBole cannot load it.
    """
    rows = k_core(deduplicate(interactions), k)
    if not rows:
        raise ConversionError(source, None, f"no interactions left after {k}-core filtering")
    titles = titles_for({row.item for row in rows})
    return write_atomic_files(out_dir, name, rows, titles)
