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
import torch

from recbole_delrec.config import isolated_config
from recbole_delrec.evaluation.cost import StageCosts
from recbole_delrec.runs import allocator
from recbole_delrec.runs.startup import prepare_data
from tests.conftest import tiny_dict

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

PROBE = textwrap.dedent("""
    import ctypes, json
    import torch
    from recbole_delrec.runs.allocator import bound_heap, bound_releases, machine_memory_bytes, release_free_memory, reuse_heap_memory

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

    out = {"default": mapped_growth(), "applied": reuse_heap_memory(0.5), "reused": mapped_growth()}

    def freed_then(step):  # what a step gives back of a freed 256 MiB block that the heap kept
        block = torch.ones(256 << 20, dtype=torch.uint8)
        del block
        kept = resident_mib()
        step()
        return kept - resident_mib()

    out["released_mib"] = freed_then(release_free_memory)
    out["under_bound_mib"] = freed_then(lambda: bound_heap())  # the bound: half the machine's memory
    out["under_bound_releases"] = bound_releases()
    out["over_bound_mib"] = freed_then(lambda: reuse_heap_memory(resident_mib() * 2**20 / 2 / machine_memory_bytes())
                                       and bound_heap())
    out["over_bound_releases"] = bound_releases()

    def bound_above(mib):  # the bound: this many MiB above the resident set
        reuse_heap_memory((resident_mib() + mib) * 2**20 / machine_memory_bytes())

    def grow(mib, held=None):  # a pass's temporaries: freed, kept by the heap
        block = torch.ones(mib << 20, dtype=torch.uint8)
        del block, held

    training = torch.nn.Embedding(2, 2)  # the module that starts each pass
    release_free_memory()  # a stage starts: the heap gave back
    bound_heap(training)  # the first pass starts on a heap that gave back ...
    grow(256)  # ... and takes its working set fresh: the heap keeps it
    bound_above(128)
    releases = bound_releases()
    bound_heap(training)  # a warm heap serves the next pass: no give-back
    out["after_fresh_pass_releases"] = bound_releases() - releases
    grow(256, torch.ones(256 << 20, dtype=torch.uint8))  # this pass on a warm heap grows it by 256 MiB
    bound_above(128)
    kept = resident_mib()
    bound_heap(training)  # the next could grow it as much: the heap gives back first
    out["anticipated_mib"], out["anticipated_releases"] = kept - resident_mib(), bound_releases() - releases
    grow(256)  # a pass after a give-back takes its working set fresh again
    bound_above(128)
    bound_heap(training)  # ... which the next pass finds free: no give-back
    out["after_give_back_releases"] = bound_releases() - releases
    grow(256, torch.ones(256 << 20, dtype=torch.uint8))  # grows the heap by another 256 MiB, kept
    kept = resident_mib()
    bound_heap(training.eval())  # an evaluation pass after training: the heap gives back, not a bound release
    out["new_kind_mib"], out["new_kind_releases"] = kept - resident_mib(), bound_releases() - releases
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


def test_under_its_bound_the_heap_keeps_freed_memory(probe):
    assert probe["under_bound_mib"] < 50
    assert probe["under_bound_releases"] == 0


def test_past_its_bound_the_heap_gives_freed_memory_back_as_a_pass_starts(probe):
    """``bound_heap``, the LLM's pre-hook: a stage of many batch shapes would otherwise grow the heap
    until the machine runs out (the larger budget's stage 2 was killed at 24 GiB)."""
    assert probe["over_bound_mib"] > 200
    assert probe["over_bound_releases"] == 1


def test_a_pass_that_could_pass_the_bound_starts_on_a_heap_that_gave_back(probe):
    """The bound holds the peak, not the resident set at a pass's start: a pass on a heap that
    fragmentation grew can grow it again (a bound on the resident set alone, 16.5 GiB, let the
    larger budget's stage 2 peak at 23.2 GiB)."""
    assert probe["anticipated_mib"] > 400
    assert probe["anticipated_releases"] == 1


def test_a_pass_on_a_heap_that_just_gave_back_is_not_taken_for_growth(probe):
    """Its growth is its whole working set, which the next pass finds free: counted, every later
    pass gave back wherever twice the working set passes the bound (22 of the main command's 24
    stage-2 passes in float32, each paying its page faults)."""
    assert probe["after_fresh_pass_releases"] == 0
    assert probe["after_give_back_releases"] == 1  # the anticipated one, no other


def test_a_pass_of_another_kind_starts_on_a_heap_that_gave_back(probe):
    """Evaluation's batches after training's (or back) find a heap fragmented by the other kind's
    shapes: the larger budget peaked at 23.2 GiB just after its first validation."""
    assert probe["new_kind_mib"] > 400
    assert probe["new_kind_releases"] == 1  # not a bound release: the log counts those


def test_a_stage_whose_passes_met_the_bound_says_so_in_the_log(monkeypatch, caplog):
    """Each give-back costs the next pass its page faults (a stage-2 step 1.56x slower when every
    pass pays): the log tells the user the stage's working set is near the bound."""
    monkeypatch.setattr(allocator, "_applied", True)
    monkeypatch.setattr(allocator, "_bound_bytes", allocator.machine_memory_bytes())
    costs = StageCosts("cpu")
    with caplog.at_level(logging.INFO):
        costs.start()
        allocator.bound_heap()  # under the bound: nothing given back
        costs.stop("stage1")
        monkeypatch.setattr(allocator, "_bound_bytes", 0)
        costs.start()
        allocator.bound_heap()
        allocator.bound_heap()
        costs.stop("stage2")
    assert "stage1: the heap gave back" not in caplog.text
    assert "stage2: the heap gave back its free memory at 2 passes (malloc_reuse_max_share" in caplog.text
    assert costs.give_backs == {"stage1": 0, "stage2": 2}  # benchmarks/run.py records them


def test_a_bound_outside_0_1_is_refused_with_its_option_named():
    with pytest.raises(ValueError, match="malloc_reuse_max_share=1.5"):
        allocator.reuse_heap_memory(1.5)


def test_every_pass_of_a_loaded_llm_checks_the_bound_once(monkeypatch, tmp_path):
    """T5's embeddings run in its encoder and its decoder: the check sits on the encoder, so a
    pass counts as one (a second check mid-pass would take the pass's own growth for a warm one)."""
    from recbole_delrec.llm.loading import load_backbone

    config = isolated_config("DELRec", "ml-100k", tiny_dict(tmp_path))
    backbone = load_backbone(config, ["a few words", "of corpus"])
    monkeypatch.setattr(allocator, "_applied", True)
    monkeypatch.setattr(allocator, "_bound_bytes", 0)  # every check gives back
    before = allocator.bound_releases()
    ids = torch.tensor([[3, 4, 5]])
    backbone.model(input_ids=ids, decoder_input_ids=ids)
    assert allocator.bound_releases() - before == 1


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
