"""``malloc_reuse``: large CPU tensors come from the heap, not from fresh pages (glibc).

glibc's state is process-wide and a test process has run many models before, so what glibc does
is checked in a fresh interpreter: ``mallinfo2().hblkhd`` is the memory held in mmapped blocks (a
64 MiB tensor adds 64 MiB to it under glibc's defaults, nothing once the heap serves it), and the
resident set shows what ``release_free_memory`` gives back."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest

from recbole_delrec.config import isolated_config
from recbole_delrec.runs import allocator
from recbole_delrec.runs.startup import prepare_data
from tests.conftest import tiny_dict

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

PROBE = textwrap.dedent("""
    import ctypes, json
    import torch
    from recbole_delrec.runs.allocator import release_free_memory, reuse_heap_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def mapped_growth():
        before = libc.mallinfo2().hblkhd
        block = torch.empty(64 << 20, dtype=torch.uint8)
        return libc.mallinfo2().hblkhd - before

    def resident_mib():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    out = {"default": mapped_growth(), "applied": reuse_heap_memory(), "reused": mapped_growth()}
    block = torch.ones(256 << 20, dtype=torch.uint8)
    del block
    kept = resident_mib()
    release_free_memory()
    out["released_mib"] = kept - resident_mib()
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def probe() -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_glibc_maps_a_large_tensor_fresh_by_default_and_from_the_heap_after(probe):
    assert probe["default"] >= 64 << 20
    assert probe["applied"]
    assert probe["reused"] == 0


def test_a_stage_start_gives_back_what_the_heap_holds_free(probe):
    """``StageCosts.start`` calls it: the heap keeps freed memory within a stage, not across them."""
    assert probe["released_mib"] > 200


@pytest.fixture
def not_applied():
    applied = allocator._applied
    allocator._applied = False
    yield
    allocator._applied = applied


def test_the_start_up_applies_it_on_a_cpu_run(not_applied, tmp_path, caplog):
    config = isolated_config("DELRec", "ml-100k", tiny_dict(tmp_path))
    assert config["malloc_reuse"] and config["device"].type == "cpu"
    with caplog.at_level(logging.INFO):
        prepare_data(config)
    assert allocator._applied
    assert "malloc_reuse: large CPU tensors reuse freed heap memory" in caplog.text


def test_malloc_reuse_false_leaves_glibc_alone(not_applied, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        prepare_data(isolated_config("DELRec", "ml-100k", tiny_dict(tmp_path, malloc_reuse=False)))
    assert not allocator._applied
    assert "malloc_reuse: " not in caplog.text
