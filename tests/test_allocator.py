"""``malloc_reuse``: large CPU tensors come from the heap, not from fresh pages (glibc).

Read through glibc's own ``mallinfo2``: ``hblkhd`` is the memory held in mmapped blocks, so a
64 MiB tensor adds 64 MiB to it under glibc's defaults and nothing once the heap serves it."""

from __future__ import annotations

import ctypes
import logging
import sys

import pytest
import torch

from recbole_delrec.config import isolated_config
from recbole_delrec.runs import allocator
from recbole_delrec.runs.allocator import M_MMAP_MAX, M_TRIM_THRESHOLD, release_free_memory, reuse_heap_memory
from recbole_delrec.runs.startup import prepare_data
from tests.conftest import tiny_dict

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
M_MMAP_THRESHOLD = -3
BLOCK = 64 << 20


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


@pytest.fixture
def libc():
    """glibc, with its default allocation settings before and after the test."""
    lib = ctypes.CDLL("libc.so.6")
    lib.mallinfo2.restype = MallInfo2

    def defaults():
        lib.mallopt(M_MMAP_MAX, 65536)
        lib.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        lib.mallopt(M_TRIM_THRESHOLD, 128 * 1024)

    defaults()
    applied = allocator._applied
    yield lib
    defaults()
    allocator._applied = applied


def mapped_growth(lib) -> int:
    """How much mmapped memory a live 64 MiB tensor adds."""
    before = lib.mallinfo2().hblkhd
    block = torch.empty(BLOCK, dtype=torch.uint8)
    grown = lib.mallinfo2().hblkhd - before
    del block
    return grown


def test_glibc_maps_a_large_tensor_fresh_by_default_and_from_the_heap_after(libc):
    assert mapped_growth(libc) >= BLOCK
    assert reuse_heap_memory()
    assert mapped_growth(libc) == 0


def test_the_start_up_applies_it_on_a_cpu_run(libc, tmp_path, caplog):
    config = isolated_config("DELRec", "ml-100k", tiny_dict(tmp_path))
    assert config["malloc_reuse"] and config["device"].type == "cpu"
    with caplog.at_level(logging.INFO):
        prepare_data(config)
    assert mapped_growth(libc) == 0
    assert "malloc_reuse: large CPU tensors reuse freed heap memory" in caplog.text


def test_malloc_reuse_false_leaves_glibc_alone(libc, tmp_path):
    prepare_data(isolated_config("DELRec", "ml-100k", tiny_dict(tmp_path, malloc_reuse=False)))
    assert mapped_growth(libc) >= BLOCK


def resident_mib() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20


def test_a_stage_start_gives_back_what_the_heap_holds_free(libc):
    """``StageCosts.start`` calls it: the heap keeps freed memory within a stage, not across them."""
    assert reuse_heap_memory()
    block = torch.ones(256 << 20, dtype=torch.uint8)  # 256 MiB, touched
    del block
    kept = resident_mib()
    release_free_memory()
    assert resident_mib() < kept - 200
