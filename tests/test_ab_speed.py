"""``benchmarks/ab_speed.py`` on a tiny random Llama: both sides of each change measured in one
run, and the records its BENCHMARKS.md figures come from."""

from __future__ import annotations

import json

import pytest

from tests.benchmark_scripts import load_script
from tests.test_causal import save_tiny_llama


def test_one_run_measures_both_sides_of_each_change(tmp_path):
    out = tmp_path / "ab.json"
    assert load_script("ab_speed").main(["--llm_path", save_tiny_llama(tmp_path / "llama"), "--model-name", "tiny",
                                         "--users", "32", "--rounds", "1", "--repeats", "1", "--processes", "1", "--out", str(out)]) == 0
    records = {r["metric"]: r for r in json.loads(out.read_text())}
    for side in ("masked", "split"):
        assert records[f"cpu.tiny.ab.prompt_split.{side}.stage2_ms_per_prefix"]["value"] > 0
        assert records[f"cpu.tiny.ab.prompt_split.{side}.scoring8_ms_per_user"]["value"] > 0
    for side in ("mmap", "heap"):
        assert records[f"cpu.tiny.ab.malloc_reuse.{side}.scoring32_ms_per_user"]["value"] > 0
    speedup = records["cpu.tiny.ab.malloc_reuse.speedup.scoring32"]
    mmap, heap = (records[f"cpu.tiny.ab.malloc_reuse.{side}.scoring32_ms_per_user"]["value"] for side in ("mmap", "heap"))
    assert speedup["value"] == pytest.approx(mmap / heap, rel=1e-3)
    assert speedup["command"].split()[1:3] == ["benchmarks/ab_speed.py", "--llm_path"]
