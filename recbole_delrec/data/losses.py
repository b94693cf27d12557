"""What loading and prompting dropped, said in the log: one line per loss and how to keep it.

Loading (:class:`recbole_delrec.data.dataset.PluginDataset`) records a line per filtering
step that removed interactions (:func:`dropped_line`) and the start-up logs them
(:func:`log_losses`); the model logs what its titles and prompts lost
(:func:`log_title_losses`, :func:`log_history_cuts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import getLogger

from recbole_delrec.data.titles import ItemText, TitleTokens


def log_losses(dataset) -> None:
    """One log line per loss recorded on ``dataset`` (``dataset.losses``, if it keeps any)."""
    logger = getLogger()
    for line in getattr(dataset, "losses", []):
        logger.warning(line)


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
    alike = scored.alike
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
