"""``benchmarks/pass_memory.py`` on a tiny random Llama: both sides over the same batches in one
run, and the records the memory subsection of BENCHMARKS.md comes from."""

from __future__ import annotations

import json
import sys

import pytest

from tests.benchmark_scripts import load_script
from tests.tiny_llms import save_tiny_llama

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and glibc's heap")


def test_one_run_measures_a_fresh_pass_and_a_warm_heap(tmp_path, capsys):
    out = tmp_path / "pass.json"
    script = load_script("pass_memory")
    assert script.main(["--llm_path", save_tiny_llama(tmp_path / "llama"), "--model-name", "tiny",
                        "--checkpoint_dir", str(tmp_path), "--users", "32", "--out", str(out)]) == 0
    records = {r["metric"].removeprefix("cpu.tiny.pass_memory."): r for r in json.loads(out.read_text())}
    printed = capsys.readouterr().out
    assert printed.count("fresh batch ") == printed.count("kept batch ") == 4  # 32 users, 8 a batch, both sides
    assert records["fresh.pass_gib.max"]["value"] >= records["fresh.pass_gib.median"]["value"] >= 0
    assert records["kept.growth_gib.max"]["value"] >= records["kept.growth_gib_per_batch"]["value"]  # max >= mean
    ratio = records["fresh.stage2_ms_per_prefix"]["value"] / records["kept.stage2_ms_per_prefix"]["value"]
    assert records["fresh_over_kept.stage2"]["value"] == pytest.approx(ratio, rel=1e-3)
    assert {r["unit"] for r in records.values()} == {"GiB", "ms", "x"}
    assert records["kept.growth_gib_per_batch"]["command"].split()[1] == "benchmarks/pass_memory.py"
