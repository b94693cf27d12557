"""The one place that mends RecBole 1.2.1 where it is broken for us on current torch.

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
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import recbole.model.sequential_recommender  # noqa: F401  (the import that turns anomaly mode on)
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color


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


def apply() -> None:
    """Apply both fixes; safe to call more than once."""
    torch.autograd.set_detect_anomaly(False)
    Trainer._save_checkpoint = _save_checkpoint
