"""CPU memory for large tensors: reused from the heap instead of mapped fresh for every batch.

glibc's ``malloc`` serves every block above its mmap threshold (32 MiB at most) with new pages
from the kernel and unmaps them on ``free``.  An LLM step on a CPU allocates such blocks every
batch (the logits of the scored positions over the whole vocabulary, a batch's feed-forward
activations), so it pays a page fault and the zeroing of every 4 KiB page of each of them,
every batch.  Served from the heap and kept there when freed (``M_MMAP_MAX = 0``, trimming off),
the next batch reuses the same pages.  SmolLM2 on cpu-2core, both sides measured alternately
(``benchmarks/ab_speed.py``): a stage-2 step 8% faster, scoring 4-6%, and scoring 32 prompts per
batch 5% to 37% faster, as the cost of a page fault on the host varies (``BENCHMARKS.md``).
Within a stage the same shapes reuse the same blocks; :func:`release_free_memory` gives the rest
back as each stage starts, so a stage's peak memory stays its own.

Batches of many lengths fragment the heap: a freed block too small for the next batch's tensor
stays resident while the heap grows for it.  In the larger budget's stage 2 (1,886 prefixes of
varying length) the resident set grew ~50 MB per batch and the kernel killed the run at 24 GiB
after ~200 batches, though only ~2.6 GiB was in use between batches.  So the heap is bounded:
:func:`bound_heap` runs as every LLM pass starts (a hook on the backbone's ``pass_start``, where the last
pass's temporaries are free) and gives the free memory back when the pass could take the process
past ``malloc_reuse_max_share`` of the machine's memory: when the resident set plus the largest
growth a pass on a warm heap has shown would pass it.  A bound on the resident set alone at the
pass's start did not hold the peak: a stage-2 pass of 8 prompts needs ~8.4 GiB of fresh memory
from a heap fragmented by the validation's batches, and the 0.7 bound (16.5 GiB) let the same run
peak at 23.2 GiB.  So a pass of another kind (evaluation after training, or back) starts on a heap
that gave back, as a stage does.  The growth of a pass that started on a heap that had just given
back is its whole working set, not what a warm heap takes: counted, it made every later pass give
back wherever twice the working set passes the bound (22 of 24 stage-2 passes of the main command
in float32, 13.4 GiB at its peak against a 21.2 GiB bound).

``malloc_reuse`` (on by default) applies it at start-up on a CPU run; it is a no-op where the C
library is not glibc (macOS, musl, Windows), and a process that preloads another allocator
(jemalloc, tcmalloc) is served by that one.
"""

from __future__ import annotations

import ctypes
import os
import sys
from logging import getLogger
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

#: ``mallopt`` parameters (glibc's ``malloc.h``).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
#: "Setting M_TRIM_THRESHOLD to -1 disables trimming completely" (``mallopt(3)``): any finite
#: threshold a C int holds (2 GiB) is below what one stage-2 step frees, and the next step would
#: fault its pages in again.
NO_TRIMMING = -1


_applied = False  # whether this process runs with it: mallopt's settings are process-wide
_bound_bytes = 0  # the memory a pass may take the process to before :func:`bound_heap` gives free memory back
_bound_releases = 0  # how often it did: each costs the next pass its page faults
_warm_start: int | None = None  # the resident set as the last pass started on a warm heap (None: the heap
# gave back since, or that pass started just after it did)
_released = True  # the heap gave back since the last pass started
_pass_growth = 0  # the largest growth of the resident set over one pass on a warm heap, since the heap last gave back
_training: bool | None = None  # whether the last pass trained (its module's mode)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def reuse_heap_memory(max_share: float) -> bool:
    """Large blocks from the heap, freed memory kept for reuse (glibc), while the process's
    peak stays under ``max_share`` of the machine's memory; False where not applied."""
    global _applied, _bound_bytes
    if not sys.platform.startswith("linux"):
        return False
    if not 0 < max_share <= 1:
        raise ValueError(f"malloc_reuse_max_share={max_share} must be in (0, 1]: the share of the machine's "
                         f"memory the process's peak may reach before the heap gives its free memory back.")
    _bound_bytes = int(max_share * machine_memory_bytes())
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library
        return False
    applied = _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NO_TRIMMING))
    getLogger().info(f"malloc_reuse: large CPU tensors reuse freed heap memory (glibc) while the process holds "
                     f"under {_bound_bytes / 2**30:.1f} GiB at its peak" if applied
                     else "malloc_reuse: glibc refused the setting; large tensors are mapped fresh")
    return applied


def release_free_memory() -> None:
    """Give what the heap holds free back to the system (``malloc_trim``), where
    :func:`reuse_heap_memory` applies: called as each stage starts.  Within a stage the same
    shapes repeat and reuse the same blocks; a new stage's shapes (stage 1's, stage 2's, the
    test's 32-prompt batches) would otherwise stack on a heap fragmented by the last one's: the
    main command's peak resident memory rose from 16.2 to 21.9 GiB without it (``BENCHMARKS.md``).
    A heap that gave back holds only what is in use: what :func:`bound_heap` learnt of the growth
    of passes on the fuller heap before is dropped."""
    global _warm_start, _released, _pass_growth
    _give_back()
    _warm_start, _released, _pass_growth = None, True, 0


def _give_back() -> None:
    if _applied:
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def bound_heap(module: nn.Module | None = None, *_: object) -> None:
    """A forward pre-hook of the module that starts every LLM pass (the backbone's
    ``pass_start``): if this pass could take the process past the bound, the heap gives back what
    it holds free first.

    What a pass may take is the largest growth of the resident set from one pass's start to the
    next's, over the passes that started on a warm heap since the heap last gave back: with
    trimming off and no mapped blocks the resident set never shrinks on its own, so that growth is
    the fragmentation's share of a pass.  A pass that started just after a give-back grows by its
    whole working set, which the next pass finds free in the heap: its growth is not counted.  A
    pass of another kind than the last (``module.training`` changed) has other shapes, which a heap
    fragmented by the last kind's serves badly: the heap gives back before it, as at a stage's
    start (not counted as meeting the bound)."""
    global _bound_releases, _warm_start, _released, _pass_growth
    if not _applied:
        return
    _new_kind_of_pass(getattr(module, "training", None))
    resident = resident_bytes()
    if _warm_start is not None:
        _pass_growth = max(_pass_growth, resident - _warm_start)
    if resident + _pass_growth > _bound_bytes:
        release_free_memory()
        _bound_releases += 1
    _warm_start = None if _released else resident
    _released = False


def _new_kind_of_pass(training: bool | None) -> None:
    """Give back as a pass of another kind than the last starts (training after evaluation, or
    back): its batches have other shapes."""
    global _training
    if None not in (training, _training) and training != _training:
        release_free_memory()
    _training = training


def bound_releases() -> int:
    """How often :func:`bound_heap` gave memory back so far: a stage where it did often pays
    page faults on most passes (its working set is near the bound: raise
    ``malloc_reuse_max_share``)."""
    return _bound_releases


def resident_bytes() -> int:
    """The process's resident set (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def machine_memory_bytes() -> int:
    """Physical memory, or the container's limit (cgroup v2 ``memory.max``) where that is lower."""
    total = os.sysconf("SC_PHYS_PAGES") * _PAGE
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total
