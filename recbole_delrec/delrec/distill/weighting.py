"""Dynamic weighting of the TA and RPS losses on the one shared soft prompt.

As in the reference implementation, each task's weight follows the inverse square root of
the norm of its loss gradient on the soft prompt, normalised to sum to 1 and recomputed at
every step: a task whose gradient is large (and would dominate the shared prompt) is damped,
so both tasks keep shaping it.  ``fixed`` gives every task the same weight, for ablations.
"""

from __future__ import annotations

import torch

WEIGHTINGS = ("dynamic", "fixed")


def task_weights(gradients: dict[str, torch.Tensor], mode: str = "dynamic") -> dict[str, float]:
    """Weights per task from each task's gradient on the soft prompt."""
    if mode == "fixed":
        return {task: 1.0 / len(gradients) for task in gradients}
    if mode != "dynamic":
        raise ValueError(f"stage1_weighting '{mode}' is not one of {list(WEIGHTINGS)}.")
    raw = {task: float(grad.norm()) ** -0.5 if float(grad.norm()) > 0 else 0.0 for task, grad in gradients.items()}
    total = sum(raw.values())
    if total == 0:
        return {task: 1.0 / len(gradients) for task in gradients}
    return {task: value / total for task, value in raw.items()}
