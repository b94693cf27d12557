"""Steam (Kang & McAuley, "Self-attentive sequential recommendation", 2018) to RecBole
atomic files.

Inputs, exactly as published (both one Python dict literal per line, parsed with
``ast.literal_eval``):

* ``steam_reviews.json.gz``: ``username``, ``product_id``, ``date`` (``'2017-12-17'``),
  ``hours``, ``text``, ... and on some lines ``user_id``.
* ``steam_games.json.gz``: ``id``, ``app_name``, ``title``, ``genres``, ...; some lines lack
  ``id`` or ``app_name``.

user = ``user_id`` when present, else ``username``; item = ``product_id``; timestamp = the
review date at 00:00 UTC in unix seconds; title = ``app_name``, falling back to ``title``.
Steam reviews carry no rating, so the ``.inter`` file has no rating column.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .atomic import ConversionError, Interaction, build_dataset, parse_literal, read_records
from .atomic import read_titles, require, require_id


def _timestamp(date: Any, path: Path, line_no: int) -> float:
    """Unix seconds of ``YYYY-MM-DD`` at UTC midnight: the data has day resolution only."""
    try:
        day = datetime.strptime(str(date), "%Y-%m-%d")
    except ValueError as exc:
        raise ConversionError(path, line_no, f"'date' is not YYYY-MM-DD: {date!r}") from exc
    return day.replace(tzinfo=timezone.utc).timestamp()


def _reviews(path: Path) -> Iterator[Interaction]:
    """Interactions of the review file, in file order."""
    for line_no, record in read_records(path, parse_literal):
        user_key = "user_id" if record.get("user_id") is not None else "username"
        yield Interaction(
            user=require_id(record, user_key, path, line_no),
            item=require_id(record, "product_id", path, line_no),
            timestamp=_timestamp(require(record, "date", path, line_no), path, line_no),
        )


def convert_steam(
    reviews_path: Path | str,
    games_path: Path | str,
    out_dir: Path | str,
    name: str = "steam",
    k_core: int = 5,
) -> dict[str, Any]:
    """Write ``<out_dir>/<name>/<name>.inter`` and ``.item`` from the Steam review and game files.

    ``k_core`` (0 or 1 disables) is applied iteratively after duplicate (user, item, day)
    rows are dropped.  Games without ``app_name`` and ``title`` get no ``.item`` row (see
    :func:`recbole_delrec.convert.atomic.write_atomic_files`).  Returns the counts written.
    """
    reviews_path, games_path = Path(reviews_path), Path(games_path)
    return build_dataset(
        reviews_path,
        _reviews(reviews_path),
        lambda items: read_titles(games_path, "id", ("app_name", "title"), items),
        out_dir,
        name,
        k_core,
    )
