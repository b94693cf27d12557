"""What each model cost: training seconds per stage, test milliseconds per user, trained
parameters and peak memory.

Peak memory is measured per stage: on a GPU ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``; on the CPU the process's peak resident set (Linux ``VmHWM``,
reset through ``/proc/self/clear_refs``; where that reset is not allowed, the peak since the
process started, which can only overstate a later stage).
"""

from __future__ import annotations

import re
import resource
import sys
import time
from logging import getLogger
from pathlib import Path

import torch

from recbole_delrec.runs.allocator import bound_releases, release_free_memory

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        _CLEAR_REFS.write_text("5")  # Linux: reset VmHWM to the current RSS
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since the last reset: GPU allocations, or the process's resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        return int(re.search(r"VmHWM:\s+(\d+)", _STATUS.read_text()).group(1)) / 1024
    except (OSError, AttributeError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class StageCosts:
    """Seconds and peak memory of named stages (``start()`` ... ``stop(name)``)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}
        self.give_backs: dict[str, int] = {}  # passes that met ``malloc_reuse_max_share``, each paying its page faults
        self._start = 0.0
        self._releases = 0

    def start(self) -> None:
        """A stage starts: the heap returns what earlier stages freed (``malloc_reuse``), and the
        peak is reset, so each stage's peak memory is its own."""
        release_free_memory()
        _reset_peak(self.device)
        self._releases = bound_releases()
        self._start = time.time()

    def stop(self, stage: str) -> float:
        """Record ``stage`` since the last ``start()``; returns its seconds."""
        self.seconds[stage] = time.time() - self._start
        self.peak_mb[stage] = peak_memory_mb(self.device)
        releases = self.give_backs[stage] = bound_releases() - self._releases
        if releases:
            getLogger().info(f"{stage}: the heap gave back its free memory at {releases} passes (malloc_reuse_max_share; "
                             f"each costs that pass its page faults; peak {self.peak_mb[stage] / 1024:.1f} GiB)")
        return self.seconds[stage]


def trained_parameters(model: torch.nn.Module) -> int:
    """Parameters the model's training changed: DELRec's soft prompt and adapters, or all of
    a conventional model's."""
    state = getattr(model, "trainable_state_dict", None)
    if state is not None:
        return sum(t.numel() for t in state().values())
    return sum(p.numel() for p in model.parameters())


def model_cost(stages: list[str], costs: StageCosts, test_stage: str, n_users: int, model: torch.nn.Module) -> dict:
    """One model's cost row: its training stages, its test, its parameters."""
    train = {s: costs.seconds[s] for s in stages if s in costs.seconds}
    peaks = [costs.peak_mb[s] for s in [*train, test_stage] if s in costs.peak_mb]
    return {
        "train_seconds": train,
        "train_seconds_total": sum(train.values()),
        "test_ms_per_user": 1000.0 * costs.seconds.get(test_stage, 0.0) / max(n_users, 1),
        "trained_parameters": trained_parameters(model),
        "peak_memory_mb": max(peaks) if peaks else None,
        "peak_memory_mb_per_stage": {s: costs.peak_mb[s] for s in [*train, test_stage] if s in costs.peak_mb},
        "heap_give_backs_per_stage": {s: costs.give_backs[s] for s in [*train, test_stage] if s in costs.give_backs},
    }


#: The table's cost columns and how each is printed (metrics keep four decimals).
COST_FORMATS = {"train s": ".1f", "test ms/user": ".2f", "trained params": ".0f", "peak MB": ".0f"}


def cost_columns(cost: dict) -> dict[str, float]:
    """A model's cost row as the table's columns (:data:`COST_FORMATS`)."""
    return {
        "train s": cost["train_seconds_total"], "test ms/user": cost["test_ms_per_user"],
        "trained params": cost["trained_parameters"], "peak MB": cost["peak_memory_mb"],
    }
