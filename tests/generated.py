"""Small generated RecBole atomic data sets for the checks, losses and long-title tests.

Real files in RecBole's atomic format (tab-separated, ``name:type`` header), written into a
test's ``tmp_path``; the titles are seeded pseudo-words, as long as a test asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

INTER_HEADER = ("user_id:token", "item_id:token", "timestamp:float")
ITEM_HEADER = ("item_id:token", "title:token_seq")
SYLLABLES = ("ka", "lo", "mi", "ne", "su", "ta", "ri", "vo", "ze", "pa", "du", "gi", "ho", "be")
LOAD_COL = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title"]}


def words(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct pseudo-words of two to four syllables."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        out["".join(rng.choice(SYLLABLES, size=rng.integers(2, 5)))] = None
    return list(out)


def titles(n_items: int, lengths: tuple[int, int], seed: int = 0, vocabulary: int = 400) -> dict[str, str]:
    """``{item token: title}`` for items ``i1..i<n>``, each of ``lengths[0]..lengths[1]`` words."""
    rng = np.random.default_rng(seed)
    pool = np.asarray(words(vocabulary, seed))
    return {
        f"i{item}": " ".join(rng.choice(pool, size=rng.integers(lengths[0], lengths[1] + 1)))
        for item in range(1, n_items + 1)
    }


def histories(n_users: int, per_user: int, n_items: int, seed: int = 0) -> dict[str, list[str]]:
    """``{user token: items in time order}``: distinct items per user, uniform over the catalogue."""
    rng = np.random.default_rng(seed)
    return {
        f"u{user}": [f"i{item}" for item in rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False)]
        for user in range(1, n_users + 1)
    }


def write_atomic(
    root: Path,
    name: str,
    users: Mapping[str, Iterable[str]],
    items: Mapping[str, str] | None,
    inter_header: tuple[str, ...] = INTER_HEADER,
    item_header: tuple[str, ...] = ITEM_HEADER,
) -> Path:
    """``root/name/name.inter`` (and ``.item`` unless ``items`` is None); returns ``root``."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["\t".join(inter_header)]
    for user, sequence in users.items():
        for step, item in enumerate(sequence):
            row = {"user_id": user, "item_id": item, "timestamp": str(1000 + step)}
            rows.append("\t".join(row[column.split(":")[0]] for column in inter_header))
    (folder / f"{name}.inter").write_text("\n".join(rows) + "\n", encoding="utf-8")
    if items is not None:
        lines = ["\t".join(item_header)] + [f"{item}\t{title}" for item, title in items.items()]
        (folder / f"{name}.item").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_presplit(root: Path, name: str, users: Mapping[str, list[str]], items: Mapping[str, str]) -> Path:
    """RecBole's pre-split sequential files (``benchmark_filename: [train, valid, test]``): one
    row per (user, the items before, the next item); each user's last item is the test row, the
    one before it the validation row. No time column: the histories carry the order."""
    write_atomic(root, name, {}, items)
    (root / name / f"{name}.inter").unlink()
    parts: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for user, sequence in users.items():
        for step in range(1, len(sequence)):
            part = ("train", "valid", "test")[max(0, step - len(sequence) + 3)]
            parts[part].append(f"{user}\t{' '.join(sequence[:step])}\t{sequence[step]}")
    for part, rows in parts.items():
        lines = ["user_id:token\titem_id_list:token_seq\titem_id:token", *rows]
        (root / name / f"{name}.{part}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def rename_fields(root: Path, name: str, renames: Mapping[str, str]) -> None:
    """Rename columns in the headers of ``name``'s ``.inter`` and ``.item`` (``{"item_id": "iid"}``):
    a data set whose fields are not called as RecBole's defaults."""
    for suffix in ("inter", "item"):
        path = root / name / f"{name}.{suffix}"
        head, _, body = path.read_text(encoding="utf-8").partition("\n")
        columns = [column.split(":", 1) for column in head.split("\t")]
        head = "\t".join(f"{renames.get(field, field)}:{kind}" for field, kind in columns)
        path.write_text(f"{head}\n{body}", encoding="utf-8")
