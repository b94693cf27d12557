"""Checks of single settings, run by the start-up before RecBole reads any data.

A bad value in a YAML file or on the command line would otherwise surface deep inside
PyTorch, NumPy or RecBole (``Invalid learning rate: -1``, ``KeyError: 'ndcg@5'``), often
after the teacher and stage 1 have trained; or it would be taken silently
(``train_max_prefixes: 0`` read as "no limit", ``topk: [30]`` among 20 candidates making
Hit@30 1 for every user).  Each check names the setting, what it holds and what to use.
The data-dependent checks (files, columns, catalogue size) live in
:mod:`recbole_delrec.data.checks`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from difflib import get_close_matches
from logging import getLogger

from recbole.config import Config
from recbole.evaluator.register import metric_types, metrics_dict
from recbole.utils import EvaluatorType

#: The optimizers RecBole's ``Trainer._build_optimizer`` knows (it falls back to Adam, with a
#: log warning, for any other name).
RECBOLE_LEARNERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def whole(config: Config, keys: Sequence[str], least: int = 1, most: int | None = None,
          optional: bool = False, why: str = "") -> None:
    """Each of ``keys`` is a whole number in ``[least, most]`` (``~`` too with ``optional``:
    these settings read ``~`` as "no limit", so a 0 is refused rather than read as ``~``)."""
    for key in keys:
        value = config[key]
        if optional and value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and least <= value and (most is None or value <= most):
            continue
        bound = f"from {least} to {most}" if most is not None else f"of at least {least}"
        raise ValueError(f"`{key}` must be a whole number {bound}{' or ~ (no limit)' if optional else ''}, "
                         f"and it is {value!r}{why}.")


def number(config: Config, keys: Sequence[str], low: float, high: float = math.inf,
           low_allowed: bool = False) -> None:
    """Each of ``keys`` is a number above ``low`` (or equal to it, with ``low_allowed``) and below ``high``."""
    for key in keys:
        value = config[key]
        if _is_number(value) and (low <= value if low_allowed else low < value) and value < high:
            continue
        bound = f"{'at least' if low_allowed else 'above'} {low:g}" + (f" and below {high:g}" if high < math.inf else "")
        raise ValueError(f"`{key}` must be a number {bound}, and it is {value!r}.")


def one_of(config: Config, choices: Mapping[str, Sequence[str]]) -> None:
    """Each setting of ``choices`` holds one of its names (a number is read as its text: ``stage: 1``)."""
    for key, names in choices.items():
        value = config[key]
        if str(value) not in names:
            raise ValueError(f"`{key}` is {value!r}: use one of {', '.join(names)}.")


def misspelt_keys(config: Config) -> None:
    """Warn about each setting given (YAML files, ``config_dict``, command line) that no RecBole
    or plugin default defines and that reads like one that does (``lerning_rate``): RecBole
    keeps any key silently, so a misspelling would leave the real setting at its default."""
    given = set(config.file_config_dict) | set(config.variable_config_dict) | set(config.cmd_config_dict)
    known = set(config.internal_config_dict) | {key for keys in config.parameters.values() for key in keys}
    by_case = {key.lower(): key for key in known}
    for key in sorted(given - known):
        close = [by_case[key.lower()]] if key.lower() in by_case else get_close_matches(key, known, n=1, cutoff=0.85)
        if close:
            getLogger().warning(f"Setting `{key}` is not one that RecBole or {config['model']} reads, and `{close[0]}` "
                                f"is: if you meant it, `{close[0]}` is still {config[close[0]]!r}.")


def recbole_settings(config: Config) -> None:
    """RecBole's own training and evaluation settings, which every plugin model uses."""
    whole(config, ("train_batch_size", "eval_batch_size"))
    whole(config, ("epochs",), least=0)
    number(config, ("learning_rate",), 0)
    number(config, ("weight_decay",), 0, low_allowed=True)
    learner(config)
    ranking_metrics(config)
    valid_metric_reported(config)


def learner(config: Config) -> None:
    """``learner`` is an optimizer RecBole builds, not a typo it would replace by Adam."""
    value = config["learner"]
    if str(value).lower() not in RECBOLE_LEARNERS:
        raise ValueError(f"`learner` is {value!r}, an optimizer RecBole does not know (it would train with Adam "
                         f"instead): use one of {', '.join(RECBOLE_LEARNERS)}.")


def leave_one_out(config: Config) -> None:
    """One test row per user: candidate sets, records and the paired tests are all per user,
    which RecBole's leave-one-out split gives; a ratio split gives a user several test rows
    and would otherwise fail mid-test with a message about a "file of another split"."""
    split = config["eval_args"]["split"]
    if "LS" not in (split or {}):
        raise ValueError(
            f"eval_args.split is {split}: {config['model']} evaluates each user's next item, one test row per "
            f"user; use RecBole's leave-one-out split, `eval_args: {{split: {{LS: valid_and_test}}, order: TO}}`."
        )


def known_tasks(config: Config, tasks: tuple[str, ...]) -> None:
    """``delrec_tasks`` lists stage-1 tasks that exist."""
    unknown = [t for t in config["delrec_tasks"] or () if t not in tasks]
    if unknown:
        raise ValueError(
            f"delrec_tasks {config['delrec_tasks']} has {unknown}: use a sub-list of {list(tasks)}."
        )


# ---------------------------------------------------------------------- metrics
def ranking_metrics(config: Config) -> None:
    """Every name in ``metrics`` is a RecBole ranking metric: the plugin's models rank items
    for each user, and RecBole accepts a value metric alone (AUC, LogLoss) and fails in the
    middle of the first evaluation."""
    names = [str(m) for m in config["metrics"]]
    value = [m for m in names if metric_types.get(m.lower()) != EvaluatorType.RANKING]
    if value:
        ranking = [metrics_dict[m].__name__ for m, kind in metric_types.items() if kind == EvaluatorType.RANKING]
        raise ValueError(f"metrics {names} has {value}, which {config['model']} cannot compute: it ranks items for "
                         f"each user, so use RecBole ranking metrics ({', '.join(ranking)}).")


def reported_metrics(config: Config) -> list[str]:
    """The result keys RecBole's evaluator reports: ``name@k`` for every cut-off of a metric
    that takes one (``hit@5``), the bare name otherwise (``gauc``)."""
    keys = []
    for name in (str(m).lower() for m in config["metrics"]):
        takes_topk = name in metrics_dict and hasattr(metrics_dict[name](config), "topk")
        keys += [f"{name}@{k}" for k in config["topk"]] if takes_topk else [name]
    return keys


def valid_metric_reported(config: Config) -> None:
    """``valid_metric`` is among what the evaluation reports: RecBole reads it only after the
    first validation (``KeyError: 'ndcg@5'``), when a model has trained for an epoch."""
    valid = str(config["valid_metric"])
    reported = reported_metrics(config)
    if valid.lower() not in reported:
        raise ValueError(f"valid_metric '{valid}' is not among the metrics the run reports ({', '.join(reported)}, "
                         f"from `metrics` x `topk`): set valid_metric to one of them, or add its metric and "
                         f"cut-off to `metrics` and `topk`.")


def cut_offs_below(config: Config, n_candidates: int) -> None:
    """Every ``topk`` cut-off is below the candidates per prompt: at ``k >= n_candidates``
    every target is inside the top k, so Hit@k is 1 for every user and says nothing."""
    large = [k for k in config["topk"] if k >= n_candidates]
    if large:
        raise ValueError(f"topk {list(config['topk'])} has {large}: each user's target is ranked among "
                         f"{n_candidates} candidates, so at a cut-off of {n_candidates} or more every target is a "
                         f"hit. Use cut-offs below {n_candidates} (or more candidates: a larger `uniN` mode).")
