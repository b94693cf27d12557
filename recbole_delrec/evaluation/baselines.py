"""Baselines: conventional RecBole sequential models scored beside DELRec on its candidates.

``baselines: [GRU4Rec, Caser, BERT4Rec]`` names any RecBole sequential models, and ``Pop``
the popularity floor (:mod:`recbole_delrec.evaluation.popularity`, counted, not trained);
``baseline_config: {GRU4Rec: {...}}`` gives one its own RecBole settings, merged over
``teacher_config``.  Each is trained on the training split exactly like the teacher
(:func:`recbole_delrec.teacher.load_or_train_teacher`), cached under ``checkpoint_dir`` and
reused by the next run with the same settings.  A model's key in records and results is its
lower-cased RecBole name (``gru4rec``).
"""

from __future__ import annotations

from recbole.model.abstract_recommender import SequentialRecommender

from recbole_delrec.evaluation.popularity import NAME as POPULARITY
from recbole_delrec.evaluation.popularity import Popularity
from recbole_delrec.teacher import load_or_train_teacher, teacher_class


def baseline_names(config) -> list[str]:
    """The ``baselines`` list, checked (:func:`check_baselines`)."""
    names = config["baselines"] or []
    if isinstance(names, str):
        names = [names]
    return list(names)


def check_baselines(config) -> None:
    """Check-time, before anything trains: every name is a RecBole sequential model, once."""
    names = baseline_names(config)
    for name in (n for n in names if n != POPULARITY):
        try:
            teacher_class(name)
        except ValueError as err:
            raise ValueError(
                f"baselines: '{name}' is not a RecBole sequential model: list models such as "
                f"GRU4Rec, Caser, NARM, STAMP, BERT4Rec, NextItNet or SASRec (RecBole's spelling), or {POPULARITY}."
            ) from err
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"baselines lists {twice} more than once: list each model once.")
    settings = config["baseline_config"] or {}
    if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
        raise ValueError(f"baseline_config must map a baseline's name to its settings, found {settings!r}: "
                         f"e.g. baseline_config: {{GRU4Rec: {{epochs: 5}}}}.")
    if POPULARITY in settings:
        raise ValueError(f"baseline_config has settings for {POPULARITY}, which is counted, not trained: remove them.")
    stray = sorted(set(settings) - set(names))
    if stray:
        raise ValueError(f"baseline_config has settings for {stray}, which are not in baselines {names}: "
                         f"add them to `baselines` or remove their settings.")


def baseline_settings(config, name: str) -> dict:
    """A baseline's RecBole settings: ``teacher_config`` with ``baseline_config[name]`` over it."""
    return {**(config["teacher_config"] or {}), **((config["baseline_config"] or {}).get(name) or {})}


def baseline_key(name: str) -> str:
    """The key of a model in records and results: its lower-cased RecBole name."""
    return name.lower()


def load_or_train_baseline(config, name: str, train_data, valid_data) -> SequentialRecommender:
    """One baseline, trained on the training split like the teacher (or reused from cache)."""
    if name == POPULARITY:
        return Popularity(config, train_data._dataset).to(config["device"])
    return load_or_train_teacher(config, train_data, valid_data, model_name=name, settings=baseline_settings(config, name))
