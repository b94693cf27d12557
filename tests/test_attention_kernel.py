"""``benchmarks/attention_kernel.py``: its block split is exact, its records are written."""

import json

import torch
import torch.nn.functional as F

from tests.benchmark_scripts import load_script


def test_the_block_split_is_causal_attention_exactly():
    script = load_script("attention_kernel")
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 16) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for blocks in (1, 2, 3, 5):
        assert torch.allclose(script.block_causal(q, k, v, blocks), expected, atol=1e-5), blocks


def test_a_title_sees_the_prompt_and_its_own_earlier_tokens():
    mask = load_script("attention_kernel").title_mask(1, 4, 6, per_title=3)[0, 0]
    assert mask[:, :4].all()
    assert mask[1, 4:].tolist() == [True, True, False, False, False, False]  # 2nd token of title 1
    assert mask[3, 4:].tolist() == [False, False, False, True, False, False]  # 1st token of title 2


def test_records_name_each_measure(tmp_path):
    out = load_script("attention_kernel").main(
        ["--batch", "1", "--heads", "2", "--head-dim", "16", "--layers", "1", "--lengths", "32", "--prompt", "32",
         "--titles", "20", "--blocks", "1", "2", "--repeats", "1", "--out", str(tmp_path / "a.json")])
    keys = {r["metric"] for r in out}
    assert {"cpu.attention.causal_ms.L32", "cpu.attention.full_ms.L32", "cpu.attention.block_split_ms.blocks2",
            "cpu.attention.fp32.titles_masked_ms", "cpu.attention.full_scores_per_second.L32"} <= keys
    diffs = [r["value"] for r in out if "max_abs_diff" in r["metric"]]
    assert diffs and max(diffs) < 0.05  # bf16 rounding of the same attention
    assert json.loads((tmp_path / "a.json").read_text()) == out
    assert out[0]["command"].startswith("python benchmarks/attention_kernel.py --batch 1")
