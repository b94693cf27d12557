"""What loading and prompting dropped, said in the log: one line per loss and how to keep it.

RecBole filters interactions silently (a ``.item`` file that covers half of the items loses
half of the interactions under its default ``filter_inter_by_user_or_item: True``).
:class:`LossReportingDataset` is RecBole's ``SequentialDataset`` with each filtering step
measured; ``registry.register`` makes RecBole's ``create_dataset`` pick it for the plugin's
models (RecBole uses a class named ``<Model>Dataset`` on ``recbole.data.dataset`` when there is
one).  The start-up logs its lines (:func:`log_losses`); the model logs what its titles and
prompts lost (:func:`log_title_losses`, :func:`log_history_cuts`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from logging import getLogger

from recbole.config import Config
from recbole.data.dataset import SequentialDataset

from recbole_delrec.data.evaluated import evaluated_splits
from recbole_delrec.data.fields import item_seq_field
from recbole_delrec.data.titles import ItemText, TitleTokens


def log_losses(dataset) -> None:
    """One log line per loss recorded on ``dataset`` (``dataset.losses``, if it keeps any)."""
    logger = getLogger()
    for line in getattr(dataset, "losses", []):
        logger.warning(line)


class LossReportingDataset(SequentialDataset):
    """RecBole's ``SequentialDataset``, with what each filtering step removed in ``losses``,
    the file named when one cannot be parsed, and the evaluated users bounded (``eval_max_users``)."""

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


def dropped_line(name: str, before: tuple[int, int, int], after: tuple[int, int, int], reason: str, keep: str) -> str:
    """``Loading 'x': RecBole dropped 4,900 of 10,000 interactions (49.0%; ...) that ...``."""
    lost = [b - a for b, a in zip(before, after)]
    return (
        f"Loading '{name}': RecBole dropped {lost[0]:,} of {before[0]:,} interactions "
        f"({lost[0] / before[0]:.1%}; {lost[1]:,} users and {lost[2]:,} items left with none) that "
        f"{reason}. To keep them: {keep}."
    )


def short_users(per_user: Mapping, split: Mapping) -> str | None:
    """Users whose sequences are too short for every part of a leave-one-out split.

    RecBole's sequence augmentation makes one prefix per interaction after the first, and
    leave-one-out gives the last prefix to test and the one before to validation only when a
    user has prefixes to spare: with 1 interaction a user has no prefix at all, with 2 only a
    training one, with 3 no validation prefix (``valid_and_test``).
    """
    mode = split.get("LS")
    if mode is None:
        return None
    need = 4 if mode == "valid_and_test" else 3
    counts = {n: int((per_user == n).sum()) for n in range(1, need)}
    if not any(counts.values()):
        return None
    parts = ", ".join(f"{users:,} with {n}" for n, users in counts.items() if users)
    return (
        f"{sum(counts.values()):,} users have fewer than {need} interactions ({parts}): after "
        f"RecBole's sequence augmentation and leave-one-out split (LS: {mode}) they are not "
        f"in every split (1 interaction: no prefix at all; 2: training only"
        f"{'; 3: no validation prefix' if need == 4 else ''}), so they are not evaluated. "
        f"Nothing keeps them evaluated; `user_inter_num_interval: \"[{need},inf)\"` leaves them "
        f"out of training too."
    )


def log_title_losses(dataset_name: str, text: ItemText, prompt: TitleTokens, scored: TitleTokens) -> None:
    """Titles that fell back to ``item <token>``, titles cut to their token budgets, and items
    whose scored titles are alike (the LLM gives them one score)."""
    logger, n_items = getLogger(), len(text) - 1
    if text.n_fallback:
        logger.warning(
            f"Titles: {text.n_fallback:,} of {n_items:,} items have no title in '{dataset_name}.item' "
            f"and are shown as 'item <token>': give them a title in that file to keep their text."
        )
    for budget, option, where in ((prompt, "max_prompt_title_tokens", "in prompts"),
                                  (scored, "max_title_tokens", "as the scored candidate")):
        if budget.n_cut:
            logger.warning(
                f"Titles: {budget.n_cut:,} of {n_items:,} titles are cut to {option}={budget.budget} "
                f"tokens {where} (the longest has {budget.longest}): raise `{option}` to keep them whole."
            )
    alike = scored.alike()
    if alike:
        groups = f"{len(alike):,} group{'s' * (len(alike) > 1)}"
        logger.warning(
            f"Titles: {sum(map(len, alike)):,} of {n_items:,} items share their scored title with another item "
            f"({groups}, e.g. '{text[alike[0][0]]}'): the LLM scores each group alike. Tell them apart in "
            f"'{dataset_name}.item' (a year column: `title_year_field`), or raise `max_title_tokens` where "
            f"titles differ only after its first {scored.budget} tokens."
        )


def log_history_cuts(builders: Mapping, max_prompt_tokens: int) -> None:
    """Prompts that lost their oldest history titles since the last report, per task."""
    for task, builder in builders.items():
        cuts = builder.take_cuts()
        if cuts.cut:
            getLogger().warning(
                f"Prompts: {cuts.cut:,} of {cuts.prompts:,} {task} prompts lost {cuts.titles:,} oldest "
                f"history titles to fit max_prompt_tokens={max_prompt_tokens}: raise `max_prompt_tokens`, "
                f"or lower `max_prompt_title_tokens` or `history_length`, to keep them."
            )
