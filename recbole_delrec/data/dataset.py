"""RecBole's ``SequentialDataset`` as the plugin's models load it (:class:`PluginDataset`).

``registry.register`` makes RecBole's ``create_dataset`` pick it for DELRec and TSLRec (RecBole
uses a class named ``<Model>Dataset`` on ``recbole.data.dataset`` when there is one).  It
measures each of RecBole's filtering steps (RecBole filters silently: a ``.item`` file that
covers half of the items loses half of the interactions under its default
``filter_inter_by_user_or_item: True``) and keeps a line per loss, worded by
:mod:`recbole_delrec.data.losses`, which the start-up logs.
"""

from __future__ import annotations

from collections.abc import Callable

from recbole.config import Config
from recbole.data.dataset import SequentialDataset

from recbole_delrec.data.evaluated import evaluated_splits
from recbole_delrec.data.fields import item_seq_field
from recbole_delrec.data.losses import dropped_line, short_users


class PluginDataset(SequentialDataset):
    """RecBole's ``SequentialDataset`` as the plugin's models load it: what each filtering
    step removed kept in ``losses``, a file that cannot be parsed or that the filters empty
    named, pre-split histories cut to ``MAX_ITEM_LIST_LENGTH``, and the evaluated users
    bounded (``eval_max_users``)."""

    def __init__(self, config: Config) -> None:
        self.losses: list[str] = []
        super().__init__(config)

    def build(self) -> list:
        """RecBole's splits, with the evaluated users cut to ``eval_max_users`` (DELRec's budget)."""
        return evaluated_splits(super().build(), self.config["eval_max_users"])

    def _benchmark_presets(self) -> None:
        """RecBole's set-up of pre-split files, each history first cut to its latest
        ``MAX_ITEM_LIST_LENGTH`` items, as RecBole cuts the histories it makes itself: a longer
        one indexes past the teacher's position embeddings (SASRec: ``IndexError: index out
        of range in self``, mid-training), and RecBole's own ``seq_len`` keeps the oldest items."""
        seq, cap = item_seq_field(self), self.config["MAX_ITEM_LIST_LENGTH"]
        lengths = self.inter_feat[seq].map(len)
        if lengths.max() > cap:
            self.inter_feat[seq] = self.inter_feat[seq].map(lambda history: history[-cap:])
            self.field2seqlen[seq] = cap
            self.losses.append(
                f"Pre-split histories: {int((lengths > cap).sum()):,} of {len(lengths):,} rows had more than "
                f"MAX_ITEM_LIST_LENGTH={cap} items (up to {lengths.max():,}); each keeps its latest {cap}. "
                f"Raise MAX_ITEM_LIST_LENGTH to keep more."
            )
        super()._benchmark_presets()

    def _load_feat(self, filepath: str, source):
        """RecBole's reader; a value it cannot parse (text in a ``:float`` column) is reported
        with the file it is in, which pandas' message leaves out."""
        try:
            return super()._load_feat(filepath, source)
        except ValueError as error:  # pandas' ParserError included
            raise ValueError(
                f"RecBole could not read {filepath}: {error}. Atomic files are tab-separated with a "
                f"'name:type' header, and a ':float' column holds numbers only (a timestamp as Unix seconds)."
            ) from error

    def _fill_nan(self) -> None:
        """RecBole gives an interaction without a time the column's mean, which puts it
        mid-way in its user's sequence: the log says how many there were."""
        times = self.inter_feat[self.time_field] if self.time_field in self.inter_feat else None
        missing = 0 if times is None else int(times.isna().sum())
        super()._fill_nan()
        if missing:
            self.losses.append(
                f"Loading '{self.dataset_name}': {missing:,} of {len(times):,} interactions have no {self.time_field}; "
                f"RecBole gave them the column's mean, which orders them mid-way in their users' sequences. "
                f"Fill in their {self.time_field} in {self.dataset_name}.inter, or drop those rows."
            )

    def _filter_nan_user_or_item(self) -> None:
        self._measured(super()._filter_nan_user_or_item, "have no user or item id in their row",
                       "fill in the ids in the atomic files")

    def _remove_duplication(self) -> None:
        self._measured(super()._remove_duplication,
                       f"repeat a (user, item) pair (rm_dup_inter: {self.config['rm_dup_inter']})",
                       "`rm_dup_inter: ~`")

    def _filter_by_field_value(self) -> None:
        self._measured(super()._filter_by_field_value,
                       f"have values outside val_interval {self.config['val_interval']}",
                       "widen or remove `val_interval`")

    def _filter_inter_by_user_or_item(self) -> None:
        self._measured(
            super()._filter_inter_by_user_or_item,
            f"belong to a user or item without a row in {self._feature_files()} (filter_inter_by_user_or_item: True)",
            "`filter_inter_by_user_or_item: False` (items without a row then get the fallback title 'item <token>')",
        )

    def _filter_by_inter_num(self) -> None:
        users, items = self.config["user_inter_num_interval"], self.config["item_inter_num_interval"]
        self._measured(
            super()._filter_by_inter_num,
            f"belong to users outside user_inter_num_interval {users} or items outside item_inter_num_interval "
            f"{items} (k-core: re-applied until both hold)",
            'widen those intervals (e.g. `user_inter_num_interval: "[1,inf)"`, `item_inter_num_interval: ~`)',
        )

    def _data_filtering(self) -> None:
        super()._data_filtering()
        short = short_users(self.inter_feat[self.uid_field].value_counts(), self.config["eval_args"]["split"])
        if short:
            self.losses.append(f"Loading '{self.dataset_name}': {short}")

    def _reset_index(self) -> None:
        """RecBole's own message for a data set its filters emptied ("Some feat is empty") names
        no file and no step; this one names the file and lists what each step dropped."""
        files = {"inter_feat": "inter", "user_feat": "user", "item_feat": "item"}
        empty = [f"{self.dataset_name}.{files.get(name, name)}" for name in self.feat_name_list
                 if getattr(self, name).empty]
        if empty:
            prefix = f"Loading '{self.dataset_name}': "
            dropped = " ".join(line.removeprefix(prefix) for line in self.losses) or "No filtering step removed a row."
            raise ValueError(
                f"{prefix}nothing is left of {' and '.join(empty)} after RecBole's filtering. {dropped} "
                f"(A step that drops every row usually means settings made for another data set, or "
                f"files whose user and item ids do not match each other's.)"
            )
        super()._reset_index()

    # ------------------------------------------------------------------ measuring
    def _sizes(self) -> tuple[int, int, int]:
        feat = self.inter_feat
        return len(feat), feat[self.uid_field].nunique(), feat[self.iid_field].nunique()

    def _measured(self, step: Callable[[], None], reason: str, keep: str) -> None:
        """Run one of RecBole's filtering steps; record a line if it removed interactions."""
        before = self._sizes()
        step()
        after = self._sizes()
        if after[0] < before[0]:
            self.losses.append(dropped_line(self.dataset_name, before, after, reason, keep))

    def _feature_files(self) -> str:
        files = [f"{self.dataset_name}.{kind}" for kind, feat in (("user", self.user_feat), ("item", self.item_feat))
                 if feat is not None]
        return " / ".join(files)
