"""How RecBole finds the plugin's models, trainers, data set class and default YAML.

RecBole looks models up by module path (``get_model`` tries ``recbole.model.<kind>.<name>``),
trainers by name on ``recbole.trainer``, data set classes by name (``<Model>Dataset``) on
``recbole.data.dataset`` and default YAML under its own ``properties/``.

* Importing ``recbole_delrec`` installs :class:`PluginModels` (:func:`install`), an import
  finder that answers for two module paths only, ``recbole.model.sequential_recommender.delrec``
  and ``...tslrec``.  So ``get_model('DELRec')``, and with it RecBole's ``Config`` and
  ``run_recbole``, find the plugin's models, as ``import peft`` makes its tuners known; the
  import itself changes nothing in RecBole.
* :func:`register` makes the other three lookups answer for our models too (their data set
  class, :class:`~recbole_delrec.data.dataset.PluginDataset`, records what loading
  dropped) and applies the RecBole mends of :mod:`recbole_delrec.compat`.  It runs when RecBole
  first resolves a plugin model through the finder (the plugin is about to run), and every
  entry point of the plugin calls it itself; a process that never uses DELRec or TSLRec
  gets none of it.

Our YAML is layered the way RecBole layers its own: RecBole's defaults, then
``properties/model/<Model>.yaml``, then ``properties/dataset/<dataset>.yaml``; user files,
``config_dict`` and ``--key=value`` still win.  RecBole's FLOPs probe deep-copies the model
and traces a forward pass; for a multi-billion-parameter LLM that doubles memory for a
log line, so it is skipped for models that declare ``skip_flops = True``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

#: model name -> (model module, trainer module, trainer class name)
MODELS = {
    "DELRec": ("recbole_delrec.delrec.model", "recbole_delrec.delrec.trainer", "DELRecTrainer"),
    "TSLRec": ("recbole_delrec.tslrec.model", "recbole_delrec.tslrec.trainer", "TSLRecTrainer"),
}


def alias(name: str) -> str:
    """The module path under which RecBole's ``get_model`` finds the sequential model ``name``."""
    return f"recbole.model.sequential_recommender.{name.lower()}"


ALIASES = {alias(name) for name in MODELS}


def _properties_dir() -> Path:
    """``properties/`` beside the package in a checkout, or installed inside it from a wheel."""
    source = Path(__file__).resolve().parent.parent / "properties"
    return source if source.is_dir() else Path(__file__).resolve().parent / "properties"


PROPERTIES = _properties_dir()
#: RecBole's own functions that :func:`register` wraps, kept on first registration.
_ORIGINALS: dict[str, Callable[..., Any]] = {}


class PluginModels(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the plugin's models under the module paths RecBole's ``get_model`` tries.

    Loading one registers the plugin (:func:`register`), which puts the model's real module
    in ``sys.modules`` under that path: the import returns it, so ``get_model`` gets the class.
    """

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in ALIASES else None

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # Python's default module, replaced in sys.modules by exec_module

    def exec_module(self, module: ModuleType) -> None:
        register()


def install() -> None:
    """Make ``get_model`` find the plugin's models (idempotent; changes nothing in RecBole)."""
    if not any(isinstance(finder, PluginModels) for finder in sys.meta_path):
        sys.meta_path.append(PluginModels())


def plugin_yaml_files(model: str, dataset: str) -> list[Path]:
    """The plugin's YAML files for a model and data set, in merge order (existing only)."""
    files = [PROPERTIES / "model" / f"{model}.yaml", PROPERTIES / "dataset" / f"{dataset}.yaml"]
    return [f for f in files if f.is_file()] if model in MODELS else []


def _load_internal_config_dict(self, model, model_class, dataset) -> None:
    """RecBole's own internal defaults, then the plugin's YAML for plugin models."""
    _ORIGINALS["load_internal"](self, model, model_class, dataset)
    for file in plugin_yaml_files(model, dataset):
        # Not added to ``parameters["Dataset"]``: that list is RecBole's module-level
        # ``dataset_arguments`` itself (extending it leaked preset keys into every later Config
        # of the process), and a preset's plugin keys (titles, budgets) are DELRec's settings,
        # not data settings that a teacher trained on the same split must share.
        self._update_internal_config_dict(str(file))


def _get_flops(model, *args, **kwargs):
    if getattr(model, "skip_flops", False):
        return "skipped for LLM-based models"
    return _ORIGINALS["get_flops"](model, *args, **kwargs)


def register() -> None:
    """Mend RecBole (:mod:`recbole_delrec.compat`), then make its lookups find the plugin's
    models, trainers, data set class and YAML (idempotent)."""
    import recbole.data.dataset as recbole_dataset
    import recbole.model.sequential_recommender as recbole_sequential
    import recbole.quick_start.quick_start as recbole_quick_start
    import recbole.trainer as recbole_trainer
    from recbole.config import Config

    from recbole_delrec import compat
    from recbole_delrec.data.dataset import PluginDataset

    compat.apply()
    for name, (module_path, trainer_path, trainer_name) in MODELS.items():
        module = importlib.import_module(module_path)
        sys.modules[alias(name)] = module
        setattr(recbole_sequential, name, getattr(module, name))
        setattr(recbole_trainer, trainer_name, getattr(importlib.import_module(trainer_path), trainer_name))
        setattr(recbole_dataset, f"{name}Dataset", PluginDataset)
    _ORIGINALS.setdefault("load_internal", Config._load_internal_config_dict)
    _ORIGINALS.setdefault("get_flops", recbole_quick_start.get_flops)
    Config._load_internal_config_dict = _load_internal_config_dict
    recbole_quick_start.get_flops = _get_flops
