"""DELRec under RecBole's distributed mode (``nproc`` / ``world_size``): the collective steps.

Stage 2 is RecBole's own loop, so RecBole's DDP wrapper averages the gradients of what DELRec
trains there (AdaLoRA adapters, the scratch model's LM-head copy) and RecBole's samplers split
the data.  Stage 1 and the run's bookkeeping are DELRec's own, so they synchronise here:

* each rank trains the soft prompt on its share of every batch, and the gradients are
  averaged (weighted by share size) before the step: all ranks keep the same soft prompt;
* rank 0 decides what exists on disk (cached soft prompt, run folder) and tells the others;
  only rank 0 writes.

Without an initialised process group every function is the single-process identity, so the
same code runs everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def share(items: Sequence[T]) -> list[T]:
    """This rank's part of a batch (every ``world_size``-th item from its rank on)."""
    return list(items[rank() :: world_size()])


def weighted_mean(value: torch.Tensor, weight: float) -> torch.Tensor:
    """``sum_r weight_r * value_r / sum_r weight_r`` over ranks (``value`` itself alone)."""
    if not active():
        return value
    packed = torch.cat([(value.detach().float() * weight).reshape(-1), value.new_tensor([weight], dtype=torch.float)])
    dist.all_reduce(packed)
    return (packed[:-1] / packed[-1].clamp(min=1e-12)).view_as(value).to(value.dtype)


def total(count: float) -> float:
    """``count`` summed over ranks."""
    if not active():
        return count
    value = torch.tensor([float(count)], device=_collective_device())
    dist.all_reduce(value)
    return float(value)


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (picklable objects)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order; ``[value]`` outside a distributed run."""
    if not active():
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def check_synchronised(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise if the ranks hold different ``state`` (compares a checksum per tensor with rank 0's).

    Every rank applies the same averaged update, so the trained tensors must stay equal; if
    they do not (a parameter DDP does not see, a rank-dependent random step), the
    run stops here instead of saving rank 0's half of a diverged model.
    """
    if not active():
        return
    device = _collective_device()
    sums = torch.stack([t.detach().double().sum() for t in state.values()]).to(device)
    reference = sums.clone()
    dist.broadcast(reference, src=0)
    # Equal tensors give equal sums up to summation order (threads, kernels): 1e-12 in float64.
    differs = torch.tensor([float(not torch.allclose(sums, reference, rtol=1e-12, atol=0.0))], device=device)
    dist.all_reduce(differs)
    if differs.item():
        raise RuntimeError(f"{what} differs between the {world_size()} ranks of this distributed run.")


def _collective_device() -> torch.device:
    """NCCL reduces tensors on this rank's GPU, gloo on the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    """Wait until every rank is here (e.g. rank 0 has written a file the others read)."""
    if active():
        dist.barrier()


def finish() -> None:
    """End a distributed run: every rank waits until rank 0 has written the run's files, then
    the process group closes.  A rank whose process exits with the group still open aborts
    (gloo's threads are torn down mid-connection), failing the whole spawn."""
    if active():
        dist.barrier()
        dist.destroy_process_group()
