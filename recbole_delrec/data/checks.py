"""Checks that fail fast: every check that the configuration and the data allow, run by the
start-up (:mod:`recbole_delrec.runs.startup`) before anything trains.

A model class adds its own checks through two class methods that RecBole never calls
(``check_config(config)`` before the data set is read, ``check_dataset(config, dataset)``
after it is loaded); each message names the setting, what was found and the fix.  The
checks they share live here, those of single settings in :mod:`recbole_delrec.options`; a
bad setting then costs the seconds of reading a header, not the minutes of training a teacher.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Mapping
from logging import getLogger
from pathlib import Path

import numpy as np
from recbole.config import Config
from recbole.utils import FeatureType, get_model

from recbole_delrec.data.fields import item_seq_field


def check_config(config: Config) -> None:
    """Checks that need only the configuration (no data read yet)."""
    hook = getattr(get_model(config["model"]), "check_config", None)
    if hook is not None:
        hook(config)


def check_dataset(config: Config, dataset) -> None:
    """Checks that need the loaded data set (before the split and any training)."""
    hook = getattr(get_model(config["model"]), "check_dataset", None)
    if hook is not None:
        hook(config, dataset)


# ---------------------------------------------------------------------- the atomic files
def atomic_file(config: Config, suffix: str) -> Path:
    """Where RecBole reads ``<dataset>.<suffix>`` (``data_path`` already holds the data set's
    folder; for ``ml-100k`` it is RecBole's bundled copy whatever the user set); a pre-split
    part is ``suffix="train.inter"``."""
    return Path(os.path.normpath(config["data_path"])) / f"{config['dataset']}.{suffix}"


def readable(path: Path, config: Config, chunk: int = 1 << 24) -> None:
    """The whole file decodes with RecBole's ``encoding`` and does not start with a byte-order
    mark: RecBole would fail on a stray byte with no file or line named, and read a marked
    header's first column as '\\ufeffitem_id'.  One pass over the bytes (~1 s a GB)."""
    encoding = config["encoding"] or "utf-8"  # unset: pandas' default, and RecBole's with it
    decoder, lines = codecs.getincrementaldecoder(encoding)(), 0
    with open(path, "rb") as file:
        for index, block in enumerate(iter(lambda: file.read(chunk), b"")):
            if index == 0:
                not_compressed(path, block)
            try:
                text = decoder.decode(block)
            except UnicodeDecodeError as error:
                line = lines + block.count(b"\n", 0, error.start) + 1
                bad = block[max(0, error.start - 20) : error.end + 20]
                raise ValueError(
                    f"{path}, line {line}: byte {block[error.start]:#04x} is not {encoding} (around {bad!r}). "
                    f"RecBole reads the atomic files as `encoding: {config['encoding']}` ({encoding}): "
                    f"set `encoding` to the file's own (e.g. latin-1, cp1252), or save the file as UTF-8."
                ) from None
            if index == 0 and text.startswith("\ufeff"):
                raise ValueError(
                    f"{path} starts with a byte-order mark (U+FEFF, which some editors write before UTF-8 text): "
                    f"RecBole would read its first column as '\\ufeff{text[1:].split(config['field_separator'])[0]}'. "
                    f"Set `encoding: utf-8-sig`, or save the file without the mark."
                )
            lines += block.count(b"\n")


#: The first bytes of compressed files that data sets are shipped in.
_COMPRESSED = {b"\x1f\x8b": ("gzip", "gunzip"), b"PK\x03\x04": ("zip", "unzip"), b"BZh": ("bzip2", "bunzip2"),
               b"\xfd7zXZ\x00": ("xz", "unxz"), b"\x28\xb5\x2f\xfd": ("zstd", "unzstd")}


def not_compressed(path: Path, start: bytes) -> None:
    """A compressed file under an atomic file's name would read as a bad byte in the encoding."""
    for magic, (kind, tool) in _COMPRESSED.items():
        if start.startswith(magic):
            raise ValueError(
                f"{path} is compressed ({kind}), and RecBole reads atomic files as plain text: decompress it "
                f"(e.g. `{tool}`) and give the text file that name."
            )


def header(path: Path, config: Config) -> dict[str, str]:
    """``{column: type}`` of an atomic file's first line, once the whole file is :func:`readable`
    and a row follows the header (RecBole fails on an empty file with no file named)."""
    readable(path, config)
    with open(path, encoding=config["encoding"]) as file:
        first = file.readline().rstrip("\r\n")
        if not any(line.strip() for line in file):  # stops at the first row
            raise ValueError(f"{path} has a header ({first!r}) and no rows: fill it, or point `data_path` at the "
                             f"folder that holds the whole data set.")
    return typed_columns(path, first.split(config["field_separator"]))


def typed_columns(path: Path, columns: list[str]) -> dict[str, str]:
    """``{column: type}`` of a header whose every column is RecBole's ``name:type``: RecBole
    reads a header without types, or with a misspelt one, as "not enough values to unpack" or
    "Type flaot ... is not supported", with no file named."""
    types = [kind.value for kind in FeatureType]
    parsed = {}
    for column in columns:
        name, _, kind = column.partition(":")
        if kind not in types or not name:
            raise ValueError(
                f"{path}: the header's column {column!r} is not 'name:type' with a type RecBole knows "
                f"({', '.join(types)}). Write each header column as e.g. 'user_id:token', 'timestamp:float', "
                f"'title:token_seq'."
            )
        parsed[name] = kind
    return parsed


def loaded_columns(config: Config, source: str, columns: Mapping[str, str]) -> set[str]:
    """The columns of a file that RecBole will load, by its ``load_col``/``unload_col`` rules."""
    load_col, unload_col = config["load_col"], config["unload_col"] or {}
    if load_col is None or load_col.get(source) == "*":
        kept = set(columns)
    else:
        kept = set(load_col.get(source) or ()) & set(columns)
    return kept - set(unload_col.get(source) or ())


def column_loaded(config: Config, path: Path, columns: Mapping[str, str], column: str, label: str,
                  missing: str, unloaded: str) -> None:
    """``column`` is in ``path``'s header ``columns`` and RecBole loads it. ``label`` names it in
    the message ("TIME_FIELD 'timestamp'"); ``missing`` and ``unloaded`` end the message with why
    it is needed and the fix."""
    if column not in columns:
        raise ValueError(f"{label} is not a column of {path} (its header has "
                         f"{[f'{c}:{t}' for c, t in columns.items()]}){missing}")
    if column not in loaded_columns(config, path.suffix.lstrip("."), columns):
        raise ValueError(f"{label} is in {path} but RecBole will not load it (load_col: {config['load_col']}, "
                         f"unload_col: {config['unload_col']}){unloaded}")


def item_fields(config: Config, options: Mapping[str, str]) -> None:
    """Each ``option: column`` of ``options`` (``title_field: title``) is a column of the
    ``.item`` file that RecBole loads.

    The message shows the file's header, not what RecBole happened to load: the header is
    what a user can fix the option against.
    """
    path = atomic_file(config, "item")
    if not path.is_file():
        columns = ", ".join(f"{column}:token_seq" for column in options.values())
        raise FileNotFoundError(
            f"{config['model']} needs item titles, and there is no '{path.name}' in "
            f"{path.parent} (data_path + data set name). Write it (a tab-separated header "
            f"'item_id:token {columns}', one row per item), or fix `data_path` (the folder "
            f"that contains {config['dataset']}/{config['dataset']}.inter and .item)."
        )
    columns = header(path, config)
    for option, column in options.items():
        column_loaded(
            config, path, columns, column, f"`{option}: {column}`",
            f". Set `{option}` to one of {[c for c in columns if c != config['ITEM_ID_FIELD']]} and list it "
            f"in `load_col: item`.",
            f": add it, e.g. `load_col: {{inter: [...], item: [{config['ITEM_ID_FIELD']}, {column}]}}`.",
        )


def sequences_ordered(config: Config) -> None:
    """Each user's items come in order: by ``TIME_FIELD`` in one ``.inter`` file, or already
    as histories in the pre-split files of ``benchmark_filename``."""
    if config["benchmark_filename"]:
        benchmark_files(config)
    else:
        timestamp_loaded(config)


def benchmark_files(config: Config) -> None:
    """``benchmark_filename``: RecBole's sequential data sets read pre-split files as rows of
    (user, the items before, the next item), a ``<item field><LIST_SUFFIX>`` column in each.
    RecBole skips a missing part silently (a two-part run then tests on the validation file)
    and meets a missing or unloaded history column with "no attribute 'item_id_list_field'";
    without ``alias_of_item_id`` it numbers the histories apart from the items, and every
    history silently names other items."""
    parts, name = list(config["benchmark_filename"]), config["dataset"]
    history = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    if history not in (config["alias_of_item_id"] or []):
        raise ValueError(
            f"benchmark_filename is set and `alias_of_item_id` does not list '{history}': RecBole would "
            f"number the pre-split files' histories apart from {config['ITEM_ID_FIELD']}, so every history "
            f"would name other items (for {config['model']}, its teacher and any RecBole model alike). "
            f"Set `alias_of_item_id: [{history}]`."
        )
    if len(parts) != 3:
        raise ValueError(
            f"benchmark_filename is {parts}: {config['model']} trains, validates and tests on three "
            f"pre-split files; list their middle names in that order, e.g. [train, valid, test] for "
            f"{name}.train.inter, {name}.valid.inter and {name}.test.inter."
        )
    for part in parts:
        path = atomic_file(config, f"{part}.inter")
        if not path.is_file():
            raise FileNotFoundError(
                f"There is no {path.name} in {path.parent}, and benchmark_filename {parts} names it: "
                f"write it, or fix `benchmark_filename` or `data_path`."
            )
        column_loaded(
            config, path, header(path, config), history, f"'{history}'",
            f". With `benchmark_filename`, RecBole's sequential models read each row as (user, the items "
            f"before it, the next item), as RecBole's own pre-split sequential data sets do: add a "
            f"'{history}:token_seq' column (the earlier items, space-separated, oldest first), or remove "
            f"`benchmark_filename` and give one {name}.inter with every interaction and a time column: "
            f"{config['model']} then splits leave-one-out by time itself.",
            ", and the pre-split files' histories are in it: add it to `load_col: inter`.",
        )


def one_row_per_user(config: Config, dataset) -> None:
    """Pre-split files give each user at most one validation and one test row, as the
    leave-one-out split does (:func:`recbole_delrec.options.leave_one_out`): candidate sets,
    records and the paired tests are per user, and RecBole's sampled evaluation would score a
    user's second row with the first row's history and candidates."""
    parts = config["benchmark_filename"]
    if not parts:
        return
    users = np.asarray(dataset.inter_feat[dataset.uid_field])  # a DataFrame until RecBole's build
    ends = np.cumsum(dataset.file_size_list)
    for part, start, end in zip(parts[1:], ends[:-1], ends[1:]):
        counts = np.bincount(users[start:end])
        if len(counts) and counts.max() > 1:
            user, many = dataset.id2token(dataset.uid_field, int(counts.argmax())), int((counts > 1).sum())
            raise ValueError(
                f"{atomic_file(config, f'{part}.inter')} has {many:,} user{'s' * (many > 1)} with more than one "
                f"row ('{user}' has {counts.max()}): {config['model']} evaluates each user's next item, one "
                f"{part} row per user, as the leave-one-out split gives (the last interaction in the test "
                f"file, the one before it in the validation file): keep one row per user there."
            )


def parts_chained(config: Config, dataset) -> None:
    """Log the users whose pre-split parts do not follow each other: a validation history
    that does not end with the user's last training item, a test history that does not end
    with the validation item.  Parts made by one leave-one-out pass always do; parts from
    different preprocessings (or a protocol that keeps the validation item out of the test
    history) do not, and the run then learns and tests on histories as given, so it says so."""
    parts = config["benchmark_filename"]
    if not parts:
        return
    ends = np.cumsum([0, *dataset.file_size_list])
    uid, iid, seq = dataset.uid_field, dataset.iid_field, item_seq_field(dataset)
    train, valid, test = (dataset.inter_feat.iloc[start:end] for start, end in zip(ends[:-1], ends[1:]))
    last_item = lambda part: part.groupby(uid)[iid].last()  # noqa: E731  (each user's last row in file order)
    history_end = lambda part: part.groupby(uid)[seq].last().map(lambda h: h[-1] if len(h) else 0)  # noqa: E731
    for before, after, (name_before, name_after) in ((train, valid, parts[:2]), (valid, test, parts[1:3])):
        expected, found = last_item(before).align(history_end(after), join="inner")
        off = expected[expected != found]
        if len(off):
            user = off.index[0]
            getLogger().warning(
                f"Pre-split parts: {len(off):,} of {len(expected):,} users' {name_after} history does not end "
                f"with their last {name_before} item (user '{dataset.id2token(uid, user)}': "
                f"{atomic_file(config, f'{name_after}.inter').name} ends the history with "
                f"'{dataset.id2token(iid, int(found[user]))}', {atomic_file(config, f'{name_before}.inter').name} "
                f"has '{dataset.id2token(iid, int(expected[user]))}'). The parts may come from different "
                f"preprocessings; {config['model']} uses each history as the file gives it."
            )


def timestamp_loaded(config: Config) -> None:
    """RecBole's sequential data sets sort each user's interactions by ``TIME_FIELD``
    (whatever ``eval_args.order`` says), and ``order: TO`` splits by it: without that column
    loaded, RecBole fails deep inside its data augmentation with a dump of the batch."""
    path = atomic_file(config, "inter")
    if not path.is_file():
        flat = path.parent.parent / path.name  # the files put straight into data_path
        raise FileNotFoundError(
            f"There is no interaction file {path}: `data_path` must be the folder that contains "
            f"{config['dataset']}/{path.name} (RecBole appends the data set name itself)."
            + (f" {flat} is there: move the data set's files into {path.parent}." if flat.is_file() else "")
        )
    time_field = config["TIME_FIELD"]
    why = f"{config['model']}'s sequences are ordered by it (eval_args.order: {config['eval_args']['order']})"
    column_loaded(
        config, path, header(path, config), time_field, f"TIME_FIELD '{time_field}'",
        f", and {why}: add a '{time_field or 'timestamp'}:float' column (any number that orders each "
        f"user's interactions), or set `TIME_FIELD` to the column that does.",
        f", and {why}: add it, e.g. `load_col: {{inter: [user_id, item_id, {time_field}], ...}}`.",
    )


# ---------------------------------------------------------------------- settings against the data
def catalogue_holds(config: Config, dataset, n_candidates: int) -> None:
    """Every prompt lists ``n_candidates`` distinct items: the catalogue must have them."""
    n_items = dataset.item_num - 1  # RecBole's id 0 is padding
    if not 2 <= n_candidates <= n_items:
        raise ValueError(
            f"eval_args.mode asks for {n_candidates} candidates per prompt (the true item included), "
            f"which needs between 2 and the catalogue's size, and data set '{config['dataset']}' has "
            f"{n_items} items after loading: use a `uniN` mode with N + 1 at most {n_items} (or, for "
            f"`full`, a `rerank_k` at most {n_items})."
        )


def prompt_fits(config: Config, task: str, longest: int, n_candidates: int) -> None:
    """The longest prompt a task can make (:meth:`PromptBuilder.longest`) fits ``max_prompt_tokens``."""
    limit = config["max_prompt_tokens"]
    if longest > limit:
        raise ValueError(
            f"The longest {task} prompt needs up to {longest} tokens (template, "
            f"n_soft_tokens={config['n_soft_tokens']}, {n_candidates} candidates and one history "
            f"item with titles of up to max_prompt_title_tokens={config['max_prompt_title_tokens']} "
            f"tokens), more than max_prompt_tokens={limit}: raise `max_prompt_tokens` to at least "
            f"{longest}, or lower `max_prompt_title_tokens`, `n_candidates` or `n_soft_tokens`."
        )
