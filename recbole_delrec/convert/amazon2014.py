"""Amazon 2014 (McAuley et al., "Image-based recommendations on styles and substitutes")
to RecBole atomic files.

Inputs, exactly as published per category:

* ``reviews_<Category>_5.json.gz``: the 5-core review file, one strict JSON object per line
  (``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``, ...).
* ``meta_<Category>.json.gz``: one Python dict *literal* per line (single quotes, so not
  JSON); ``title`` may be missing.  Parsed with ``ast.literal_eval``, never ``eval``.

user = ``reviewerID``, item = ``asin``, rating = ``overall``, timestamp = ``unixReviewTime``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .atomic import Interaction, build_dataset, parse_json, read_records, read_titles
from .atomic import require_float, require_id


def _reviews(path: Path) -> Iterator[Interaction]:
    """Interactions of the review file, in file order."""
    for line_no, record in read_records(path, parse_json):
        yield Interaction(
            user=require_id(record, "reviewerID", path, line_no),
            item=require_id(record, "asin", path, line_no),
            timestamp=require_float(record, "unixReviewTime", path, line_no),
            rating=require_float(record, "overall", path, line_no),
        )


def convert_amazon2014(
    reviews_path: Path | str,
    meta_path: Path | str,
    out_dir: Path | str,
    name: str,
    k_core: int = 5,
) -> dict[str, Any]:
    """Write ``<out_dir>/<name>/<name>.inter`` and ``.item`` from one Amazon 2014 category.

    ``k_core`` re-applies the k-core filter after duplicate (user, item, time) rows are
    dropped, since the published 5-core can stop being 5-core then; 0 or 1 disables it.
    Items without a usable ``title`` in the metadata get no ``.item`` row (see
    :func:`recbole_delrec.convert.atomic.write_atomic_files`).  Returns the counts written.
    """
    reviews_path, meta_path = Path(reviews_path), Path(meta_path)
    return build_dataset(
        reviews_path,
        _reviews(reviews_path),
        lambda items: read_titles(meta_path, "asin", ("title",), items),
        out_dir,
        name,
        k_core,
    )
