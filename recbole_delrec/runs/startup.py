"""The one RecBole start-up of every entry point: run, load, resume, sweep trial, TSLRec.

RecBole's ``run_recbole`` does: seed -> logger -> data set -> split -> reseed -> model ->
trainer.  Every entry point of the plugin goes through :func:`prepare_data` and
:func:`build` below, so they all register the plugin, check the configuration and the data
before anything trains (:mod:`recbole_delrec.options`, :mod:`recbole_delrec.data.checks`),
say what RecBole's loading dropped (:mod:`recbole_delrec.data.dataset`,
:mod:`recbole_delrec.data.losses`), and seed exactly alike.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from logging import getLogger
from typing import Any

from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_logger, init_seed

from recbole_delrec.runs.allocator import reuse_heap_memory


@dataclass
class Started:
    """What a RecBole start-up gives an entry point."""

    config: Config
    model: Any
    trainer: Any
    train_data: Any
    valid_data: Any
    test_data: Any

    @property
    def splits(self) -> tuple[Any, Any, Any]:
        return self.train_data, self.valid_data, self.test_data


def prepare_data(config: Config) -> tuple[Any, Any, Any]:
    """Seed, logger, CPU allocator (``malloc_reuse``), checks, data set, split: (train, valid, test) loaders.

    The configuration is checked before RecBole reads a file and the loaded data before the
    split, so a bad setting costs seconds, not a teacher's training.
    """
    from recbole_delrec.data import checks, losses
    from recbole_delrec.options import misspelt_keys
    from recbole_delrec.registry import register

    register()
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    if config["malloc_reuse"] and config["device"].type == "cpu":
        reuse_heap_memory(config["malloc_reuse_max_share"])
    misspelt_keys(config)
    checks.check_config(config)
    dataset = create_dataset(config)
    logger.info(dataset)
    losses.log_losses(dataset)
    checks.check_dataset(config, dataset)
    return data_preparation(config, dataset)


def build(config: Config) -> Started:
    """:func:`prepare_data`, then RecBole's reseed, model and trainer."""
    splits = prepare_data(config)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, splits[0]._dataset).to(config["device"])
    getLogger().info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return Started(config, model, trainer, *splits)
