"""Checks that fail fast: every check that the configuration and the data allow, run by the
start-up (:mod:`recbole_delrec.runs.startup`) before anything trains.

A model class adds its own checks through two class methods that RecBole never calls
(``check_config(config)`` before the data set is read, ``check_dataset(config, dataset)``
after it is loaded); each message names the setting, what was found and the fix.
"""

from __future__ import annotations

from recbole.config import Config
from recbole.utils import get_model


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
