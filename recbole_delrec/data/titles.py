"""Item titles: from RecBole's ``.item`` fields to clean, prompt-ready text.

The LLM only ever sees items through their titles, so every item id needs one non-empty
title.  RecBole stores a ``token_seq`` title as a row of token ids (words split on
``seq_separator``); we rebuild the words, move a trailing article to the front
("Usual Suspects, The" -> "The Usual Suspects") and append the year where the data set has
one.  An item without a usable title gets the documented fallback ``"item <token>"`` (its
original id from the atomic file): never a crash, never an empty string in a prompt.

Titles then become token ids cut to a budget (:class:`TitleTokens`): one budget for titles
shown in prompts (``max_prompt_title_tokens``), one for the title the decoder scores
(``max_title_tokens``), so that long product titles cannot crowd candidates out of a prompt.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the GPU benchmark imports this module where RecBole is not installed
    from recbole.data.dataset import Dataset

#: Articles that MovieLens (and other catalogues) move behind a comma for sorting.
_TRAILING_ARTICLE = re.compile(
    r"^(?P<body>.+?),\s*(?P<article>The|A|An|Les|Le|La|L'|Il|Das|Der|Die|El|Los|Las|Une|Un)"
    r"(?P<rest>\s*\(.*\))?$"
)
_SPACES = re.compile(r"\s+")
FALLBACK_TITLE = "item {token}"


def normalize_title(raw: str) -> str:
    """Clean one raw title: collapse white space, move a trailing article to the front."""
    title = _SPACES.sub(" ", raw).strip()
    match = _TRAILING_ARTICLE.match(title)
    if match:
        article = match["article"]
        joiner = "" if article.endswith("'") else " "
        title = f"{article}{joiner}{match['body']}{match['rest'] or ''}"
    return title


@dataclass(frozen=True)
class ItemText:
    """The title of every RecBole item id (index 0 is RecBole's padding item)."""

    titles: tuple[str, ...]
    n_fallback: int

    def __len__(self) -> int:
        return len(self.titles)

    def __getitem__(self, item_id: int) -> str:
        return self.titles[item_id]

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, title_field: str, year_field: str | None = None
    ) -> "ItemText":
        """Read titles (and years) from a RecBole dataset's item features.

        Raises a ``ValueError`` that names the option to set when the data set has no
        ``.item`` features or lacks ``title_field``.
        """
        check_title_field(dataset, title_field)
        words = _field_strings(dataset, title_field)
        years = _field_strings(dataset, year_field) if _has_field(dataset, year_field) else None
        tokens = dataset.field2id_token[dataset.iid_field]
        titles, n_fallback = ["[PAD]"], 0
        for item_id in range(1, dataset.item_num):
            title = normalize_title(words[item_id])
            if not title:
                title, n_fallback = FALLBACK_TITLE.format(token=tokens[item_id]), n_fallback + 1
            elif years is not None and _is_year(years[item_id]):
                title = f"{title} ({years[item_id]})"
            titles.append(title)
        return cls(tuple(titles), n_fallback)


@dataclass(frozen=True)
class TitleTokens:
    """Every item's title as token ids cut to ``budget`` (index 0: the padding item)."""

    ids: list[list[int]]
    budget: int
    n_cut: int  # titles (padding item excluded) that lost tokens to the budget
    longest: int  # tokens of the longest title before the cut

    @cached_property
    def alike(self) -> list[list[int]]:
        """Groups of items (ids; the padding item left out) whose titles are the same token ids:
        the LLM cannot tell them apart (a catalogue's duplicate titles, or long titles that
        differ only after the budget's cut).  Computed once: the title log line and the
        candidate sampler both read it."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for item, ids in enumerate(self.ids[1:], start=1):
            groups[tuple(ids)].append(item)
        return [items for items in groups.values() if len(items) > 1]

    @classmethod
    def cut(cls, encoded: Sequence[Sequence[int]], budget: int) -> "TitleTokens":
        lengths = [len(ids) for ids in encoded[1:]]
        return cls(
            [list(ids[:budget]) for ids in encoded], budget,
            sum(n > budget for n in lengths), max(lengths, default=0),
        )


def _has_field(dataset: Dataset, field: str | None) -> bool:
    return bool(field) and dataset.item_feat is not None and field in dataset.item_feat


def check_title_field(dataset: Dataset, title_field: str) -> None:
    """The loaded data set has item features with ``title_field`` (a ``ValueError`` naming the fix)."""
    name = dataset.dataset_name
    if dataset.item_feat is None:
        raise ValueError(
            f"Data set '{name}' has no item features: DELRec needs a '{name}.item' atomic file "
            f"with a title column, loaded through `load_col: {{item: [item_id, {title_field}]}}`."
        )
    if title_field not in dataset.item_feat:
        loaded = [f for f in dataset.item_feat.columns if f != dataset.iid_field]
        raise ValueError(
            f"Title field '{title_field}' is not among the loaded item fields {loaded} of "
            f"data set '{name}': set `title_field` to the .item column that holds titles "
            f"and add it to `load_col: item`."
        )


def _field_strings(dataset: Dataset, field: str) -> list[str]:
    """One string per item id for a token or token_seq item field ('' where missing)."""
    from recbole.utils import FeatureType

    values = dataset.item_feat[field].numpy()
    id2token = dataset.field2id_token[field]
    if dataset.field2type[field] == FeatureType.TOKEN_SEQ:
        return [" ".join(id2token[t] for t in row if t != 0) for row in values]
    if dataset.field2type[field] == FeatureType.TOKEN:
        return ["" if t == 0 else str(id2token[t]) for t in values]
    return ["" if np.isnan(v) else str(int(v)) for v in values.astype(float)]


def _is_year(value: str) -> bool:
    return len(value) == 4 and value.isdigit()
