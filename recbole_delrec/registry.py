"""How RecBole finds the plugin's models, trainers, data set class and default YAML.

RecBole looks models up by module path (``recbole.model.<kind>.<name>``), trainers by name on
``recbole.trainer``, data set classes by name (``<Model>Dataset``) on ``recbole.data.dataset``
and default YAML under its own ``properties/``.  After :func:`register`, all four lookups
also answer for our models (their data set class,
:class:`~recbole_delrec.data.losses.LossReportingDataset`, records what loading dropped), so
RecBole's own ``run_recbole(model='DELRec', ...)``, ``Config`` and ``get_trainer`` work unchanged.  Our
YAML is layered the way RecBole layers its own: RecBole's defaults, then
``properties/model/<Model>.yaml``, then ``properties/dataset/<dataset>.yaml``; user files,
``config_dict`` and ``--key=value`` still win.  RecBole's FLOPs probe deep-copies the model
and traces a forward pass; for a multi-billion-parameter LLM that doubles memory for a
log line, so it is skipped for models that declare ``skip_flops = True``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import recbole.data.dataset as recbole_dataset
import recbole.model.sequential_recommender as recbole_sequential
import recbole.quick_start.quick_start as recbole_quick_start
import recbole.trainer as recbole_trainer
from recbole.config import Config

#: model name -> (model module, trainer module, trainer class name)
MODELS = {
    "DELRec": ("recbole_delrec.delrec.model", "recbole_delrec.delrec.trainer", "DELRecTrainer"),
    "TSLRec": ("recbole_delrec.tslrec.model", "recbole_delrec.tslrec.trainer", "TSLRecTrainer"),
}


def _properties_dir() -> Path:
    """``properties/`` beside the package in a checkout, or installed inside it from a wheel."""
    source = Path(__file__).resolve().parent.parent / "properties"
    return source if source.is_dir() else Path(__file__).resolve().parent / "properties"


PROPERTIES = _properties_dir()
_original_load_internal = Config._load_internal_config_dict
_original_get_flops = recbole_quick_start.get_flops


def plugin_yaml_files(model: str, dataset: str) -> list[Path]:
    """The plugin's YAML files for a model and data set, in merge order (existing only)."""
    files = [PROPERTIES / "model" / f"{model}.yaml", PROPERTIES / "dataset" / f"{dataset}.yaml"]
    return [f for f in files if f.is_file()] if model in MODELS else []


def _load_internal_config_dict(self: Config, model, model_class, dataset) -> None:
    """RecBole's own internal defaults, then the plugin's YAML for plugin models."""
    _original_load_internal(self, model, model_class, dataset)
    for file in plugin_yaml_files(model, dataset):
        # Not added to ``parameters["Dataset"]``: that list is RecBole's module-level
        # ``dataset_arguments`` itself (extending it leaked preset keys into every later Config
        # of the process), and a preset's plugin keys (titles, budgets) are DELRec's settings,
        # not data settings that a teacher trained on the same split must share.
        self._update_internal_config_dict(str(file))


def _get_flops(model, *args, **kwargs):
    if getattr(model, "skip_flops", False):
        return "skipped for LLM-based models"
    return _original_get_flops(model, *args, **kwargs)


def register() -> None:
    """Mend RecBole (:mod:`recbole_delrec.compat`), then make its lookups find the plugin's
    models, trainers, data set class and YAML (idempotent)."""
    from recbole_delrec import compat
    from recbole_delrec.data.losses import LossReportingDataset

    compat.apply()
    for name, (module_path, trainer_path, trainer_name) in MODELS.items():
        module = importlib.import_module(module_path)
        alias = f"recbole.model.sequential_recommender.{name.lower()}"
        sys.modules[alias] = module
        setattr(recbole_sequential, name, getattr(module, name))
        trainer_module = importlib.import_module(trainer_path)
        setattr(recbole_trainer, trainer_name, getattr(trainer_module, trainer_name))
        setattr(recbole_dataset, f"{name}Dataset", LossReportingDataset)
    Config._load_internal_config_dict = _load_internal_config_dict
    recbole_quick_start.get_flops = _get_flops
