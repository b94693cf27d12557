"""The one place that mends RecBole 1.2.1 where it is broken for us (current torch, CPUs).

Nothing here runs on import: :func:`apply` applies the patches of :data:`PATCHES`, and only
:func:`recbole_delrec.register` calls it (every entry point of the plugin does, and so does
RecBole's first lookup of a plugin model: :mod:`recbole_delrec.registry`).  Each patch
names the RecBole/torch problem it works around; ``tests/test_registration.py`` has a test per
patch that fails without it.

* Importing ``recbole.model.sequential_recommender`` imports SINE, whose module runs
  ``torch.autograd.set_detect_anomaly(True)`` for the whole process: every backward pass then
  checks every gradient for NaN (the ``ne``/``any`` ops that dominate RecBole profiles) and
  records stack traces.  We switch it back off; it halves a SASRec step on CPU.
* torch >= 2.6 loads with ``weights_only=True``, and RecBole saves checkpoints with pickle
  protocol 4 and its whole ``Config`` object inside, which that safe loader refuses: RecBole's
  own ``Trainer.evaluate(load_best_model=True)`` fails on the file it just wrote.  Rather than
  loading pickles blindly, RecBole's ``Trainer._save_checkpoint`` is replaced by one that
  stores the config as plain values (torch's default protocol), so every checkpoint RecBole
  writes from now on loads with ``weights_only=True``.
* RecBole's distributed mode (``nproc``/``world_size``) hard-codes NCCL and CUDA, and its DDP
  wrapper passes ``device_ids`` even for a model on the CPU, which DDP refuses; ``use_gpu`` is
  not read at all.  ``Config._init_device`` and ``AbstractTrainer.__init__`` are replaced by
  RecBole's own logic with those three points mended: ``use_gpu: False`` means the CPU, the
  backend is NCCL on GPUs and gloo on CPUs (or the ``backend`` key), and DDP gets
  ``device_ids`` only for a model on a GPU.
* RecBole reads atomic files with pandas' CSV quoting, which the atomic format does not have:
  a title that starts with a double quote stops the load with a parser error, and an
  unmatched one silently joins every row up to the next quote into one title.  RecBole's
  data set module gets a ``read_csv`` that reads quotes as text, except a whole field quoted
  the way ``csv.writer`` (and so ``recbole_delrec.convert``) writes it, which reads as before.
* RecBole's evaluation ``Collector.get_data_struct`` calls ``.cpu()`` on everything it
  collected, and ``data.num_items`` (and ``data.count_items``) are not tensors: any run with
  ItemCoverage, AveragePopularity, GiniIndex, ShannonEntropy or TailPercentage among its
  metrics fails at its first evaluation (RecBole issue #2131, open).  Only tensors are moved.
"""

from __future__ import annotations

import copy
import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pandas as pd
import recbole.data.dataset.dataset as recbole_dataset_module
import torch
import torch.distributed as dist
from recbole.config import Config
from recbole.evaluator.collector import Collector, DataStruct
from recbole.trainer import Trainer
from recbole.trainer.trainer import AbstractTrainer
from recbole.utils import set_color
from torch.nn.parallel import DistributedDataParallel


def plain(value: Any) -> Any:
    """``value`` as JSON-like data: what ``weights_only`` loading accepts."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Enum):
        return value.name
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _save_checkpoint(self: Trainer, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
    """RecBole's checkpoint, with the config as plain values so it loads safely."""
    if not self.config["single_spec"] and self.config["local_rank"] != 0:
        return
    saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
    state = {
        "config": plain(self.config.final_config_dict),
        "epoch": epoch,
        "cur_step": self.cur_step,
        "best_valid_score": float(self.best_valid_score),
        "state_dict": self.model.state_dict(),
        "other_parameter": self.model.other_parameter(),
        "optimizer": self.optimizer.state_dict(),
    }
    torch.save(state, saved_model_file)
    if verbose:
        self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")


def _init_device(self: Config) -> None:
    """RecBole's device set-up, honouring ``use_gpu`` and running distributed on CPUs too."""
    values = self.final_config_dict
    gpu_id = values["gpu_id"]
    values["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
    os.environ["CUDA_VISIBLE_DEVICES"] = values["gpu_id"]
    use_cuda = bool(values.get("use_gpu", True)) and len(values["gpu_id"]) > 0 and torch.cuda.is_available()
    if "local_rank" not in values:
        values.update(single_spec=True, local_rank=0, device=torch.device("cuda" if use_cuda else "cpu"))
        return
    rank = values["local_rank"]
    if use_cuda and len(values["gpu_id"].split(",")) < values["nproc"]:
        raise ValueError(f"nproc={values['nproc']} processes need as many GPUs in gpu_id (got '{values['gpu_id']}').")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=values.get("backend") or ("nccl" if use_cuda else "gloo"),
            rank=rank + values.get("offset", 0), world_size=values["world_size"],
            init_method=f"tcp://{values['ip']}:{values['port']}",
        )
    values.update(single_spec=False, device=torch.device("cuda", rank) if use_cuda else torch.device("cpu"))
    if use_cuda:
        torch.cuda.set_device(rank)
    if rank != 0:
        values.update(state="error", show_progress=False, verbose=False)


def _trainer_init(self: AbstractTrainer, config: Config, model: torch.nn.Module) -> None:
    """RecBole's ``AbstractTrainer.__init__``; DDP gets ``device_ids`` only for a GPU model."""
    self.config = config
    self.model = model
    if not config["single_spec"]:
        self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        on_gpu = next(model.parameters()).device.type == "cuda"
        self.distributed_model = DistributedDataParallel(self.model, device_ids=[config["local_rank"]] if on_gpu else None)


def _get_data_struct(self: Collector) -> DataStruct:
    """RecBole's ``Collector.get_data_struct``, moving only tensors to the CPU."""
    for key, value in list(self.data_struct._data_dict.items()):
        if isinstance(value, torch.Tensor):
            self.data_struct._data_dict[key] = value.cpu()
    returned_struct = copy.deepcopy(self.data_struct)
    for key in ["rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label"]:
        if key in self.data_struct:
            del self.data_struct[key]
    return returned_struct


def _collector_counts() -> None:
    Collector.get_data_struct = _get_data_struct


def _anomaly_off() -> None:
    import recbole.model.sequential_recommender  # noqa: F401  (the import that turns anomaly mode on)

    torch.autograd.set_detect_anomaly(False)


def _safe_checkpoints() -> None:
    Trainer._save_checkpoint = _save_checkpoint


def _device_and_ddp() -> None:
    Config._init_device = _init_device
    AbstractTrainer.__init__ = _trainer_init


def _unquoted(column: pd.Series) -> pd.Series:
    """A text column read without quoting, with the fields that ``csv.writer`` quoted
    (``"The ""Best"" of"``, as ``recbole_delrec.convert`` writes them) read back as
    written; any other field, a bare leading quote included, is kept as it is."""
    text = column[column.str.startswith('"', na=False)]  # one pass over the column; the rest sees few fields
    text = text[text.str.len().ge(2) & text.str.endswith('"')].str[1:-1]
    text = text[~text.str.replace('""', "", regex=False).str.contains('"', regex=False)]
    if text.empty:
        return column
    column = column.copy()
    column[text.index] = text.str.replace('""', '"', regex=False)
    return column


class _LiteralQuotesPandas:
    """pandas as RecBole's atomic-file reader sees it: ``read_csv`` of a tab-separated file
    takes a quote inside or at the start of a field as text (the atomic format has no quoting),
    everything else is pandas itself.  Another ``field_separator`` (a comma) keeps CSV quoting:
    it is the only way such a file can hold its separator inside a title."""

    def __getattr__(self, name: str) -> Any:
        return getattr(pd, name)

    @staticmethod
    def read_csv(path: str, **kwargs: Any) -> pd.DataFrame:
        if kwargs.get("delimiter", kwargs.get("sep")) != "\t":
            return pd.read_csv(path, **kwargs)
        frame = pd.read_csv(path, quoting=csv.QUOTE_NONE, **kwargs)
        if _has_quote(path):  # most .inter files have none: no pass over their text columns
            for name in frame.columns[frame.dtypes == object]:
                frame[name] = _unquoted(frame[name])
        return frame


def _has_quote(path: str, chunk: int = 1 << 24) -> bool:
    with open(path, "rb") as file:
        return any(b'"' in block for block in iter(lambda: file.read(chunk), b""))


def _literal_quotes() -> None:
    recbole_dataset_module.pd = _LiteralQuotesPandas()


@dataclass(frozen=True)
class Patch:
    """One mend: what it works around, and the function that applies it."""

    name: str
    problem: str
    apply: Callable[[], None]


PATCHES = (
    Patch("anomaly_detection_off", "RecBole's SINE module switches on torch's autograd anomaly detection "
          "process-wide on import (about 2x slower backward passes)", _anomaly_off),
    Patch("safe_checkpoints", "torch >= 2.6 loads with weights_only=True and refuses RecBole's checkpoints, "
          "which pickle its Config: Trainer.evaluate(load_best_model=True) fails", _safe_checkpoints),
    Patch("device_and_ddp", "RecBole ignores use_gpu, hard-codes NCCL/CUDA in distributed mode and gives "
          "DDP device_ids for CPU models", _device_and_ddp),
    Patch("literal_quotes", "RecBole reads atomic files with pandas' CSV quoting: a field that starts with a "
          "double quote (a title '\"Weird Al\" Yankovic') stops the load with a parser error, and an unmatched "
          "one silently joins the rows up to the next quote into one title", _literal_quotes),
    Patch("collector_counts", "RecBole's evaluation collector calls .cpu() on data.num_items, an int: every "
          "item-distribution metric (ItemCoverage, GiniIndex, ...) fails at the first evaluation", _collector_counts),
)


def apply() -> list[str]:
    """Apply every patch of :data:`PATCHES` (idempotent); returns their names."""
    for patch in PATCHES:
        patch.apply()
    return [patch.name for patch in PATCHES]
