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

``malloc_reuse`` (on by default) applies it at start-up on a CPU run; it is a no-op where the C
library is not glibc (macOS, musl, Windows), and a process that preloads another allocator
(jemalloc, tcmalloc) is served by that one.
"""

from __future__ import annotations

import ctypes
import sys
from logging import getLogger

#: ``mallopt`` parameters (glibc's ``malloc.h``).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
#: "Setting M_TRIM_THRESHOLD to -1 disables trimming completely" (``mallopt(3)``): any finite
#: threshold a C int holds (2 GiB) is below what one stage-2 step frees, and the next step would
#: fault its pages in again.
NO_TRIMMING = -1


_applied = False  # whether this process runs with it: mallopt's settings are process-wide


def reuse_heap_memory() -> bool:
    """Large blocks from the heap, freed memory kept for reuse (glibc); False where not applied."""
    global _applied
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library
        return False
    applied = _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NO_TRIMMING))
    getLogger().info("malloc_reuse: large CPU tensors reuse freed heap memory (glibc)" if applied
                     else "malloc_reuse: glibc refused the setting; large tensors are mapped fresh")
    return applied


def release_free_memory() -> None:
    """Give what the heap holds free back to the system (``malloc_trim``), where
    :func:`reuse_heap_memory` applies: called as each stage starts.  Within a stage the same
    shapes repeat and reuse the same blocks; a new stage's shapes (stage 1's, stage 2's, the
    test's 32-prompt batches) would otherwise stack on a heap fragmented by the last one's: the
    main command's peak resident memory rose from 16.2 to 21.9 GiB without it (``BENCHMARKS.md``)."""
    if _applied:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
