"""``benchmarks/ab_speed.py`` on a tiny random Llama: both sides of each change measured in one
run, and the records its BENCHMARKS.md figures come from."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.benchmark_scripts import BENCHMARKS, load_script
from tests.tiny_llms import save_tiny_llama


@pytest.mark.parametrize("change, sides", [("malloc_reuse", ("mmap", "heap")), ("huge_pages", ("heap", "huge"))])
def test_one_run_measures_both_sides_of_each_change(tmp_path, change, sides):
    out = tmp_path / "ab.json"
    assert load_script("ab_speed").main(["--llm_path", save_tiny_llama(tmp_path / "llama"), "--model-name", "tiny",
                                         "--users", "32", "--rounds", "1", "--repeats", "1", "--processes", "1",
                                         "--sides", *sides, "--out", str(out)]) == 0
    records = {r["metric"]: r for r in json.loads(out.read_text())}
    for side in ("masked", "split"):
        assert records[f"cpu.tiny.ab.prompt_split.{side}.stage2_ms_per_prefix"]["value"] > 0
        assert records[f"cpu.tiny.ab.prompt_split.{side}.scoring8_ms_per_user"]["value"] > 0
    before, after = (records[f"cpu.tiny.ab.{change}.{side}.scoring32_ms_per_user"]["value"] for side in sides)
    assert before > 0 and after > 0
    speedup = records[f"cpu.tiny.ab.{change}.speedup.scoring32"]
    assert speedup["value"] == pytest.approx(before / after, rel=1e-3)
    assert speedup["command"].split()[1:3] == ["benchmarks/ab_speed.py", "--llm_path"]


def test_a_child_on_huge_pages_uses_them_and_the_others_do_not():
    ab_speed = load_script("ab_speed")
    for side in ("huge", "heap"):  # PyTorch reads the switch once per process: each side in its own
        code = (f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import ab_speed; ab_speed.use_side('{side}'); "
                f"print(ab_speed.huge_pages_active())")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == str(side == "huge")
    with pytest.raises(SystemExit):
        ab_speed.parse_args(["--sides", "mmap", "huge"])  # not a change the script measures
