"""``benchmarks/waste_ab.py`` on a tiny random Llama: each waste against the product in one run,
the same scores on both sides, and the records its BENCHMARKS.md table comes from."""

from __future__ import annotations

import json

import pytest
import torch

from recbole_delrec.runs import allocator
from tests.benchmark_scripts import load_script
from tests.tiny_llms import save_tiny_llama


def test_one_run_measures_each_waste_beside_the_product(tmp_path):
    script = load_script("waste_ab")
    out = tmp_path / "waste.json"
    assert script.main(["--llm_path", save_tiny_llama(tmp_path / "llama"), "--model-name", "tiny",
                        "--repeats", "1", "--out", str(out)]) == 0
    records = {r["metric"]: r for r in json.loads(out.read_text())}
    for waste, steps in script.MEASURES.items():
        for step in steps:
            unit = script.UNIT[step]
            waste_ms, product_ms = (records[f"cpu.tiny.ab.{waste}.{side}.{unit}"]["value"] for side in (waste, "product"))
            assert waste_ms > 0 and product_ms > 0
            speedup = records[f"cpu.tiny.ab.{waste}.speedup.{unit.rsplit('_ms_', 1)[0]}"]["value"]
            assert speedup == pytest.approx(waste_ms / product_ms, rel=1e-3)
    assert records["cpu.tiny.ab.frozen_grads.speedup.stage2"]["command"].split()[1] == "benchmarks/waste_ab.py"


def test_each_waste_is_put_back_after_its_call(tmp_path):
    """A waste left on would slow the product's side of every later measure."""
    script = load_script("waste_ab")
    args = script.parse_args(["--llm_path", save_tiny_llama(tmp_path / "llama"), "--checkpoint_dir", str(tmp_path)])
    env = script.setup(args)
    base = env.llm.get_base_model()
    trained = {n for n, p in env.llm.named_parameters() if p.requires_grad}
    kernel, n_threads = base.config._attn_implementation, torch.get_num_threads()
    dropouts = [d for d in env.llm.modules() if isinstance(d, torch.nn.Dropout)]
    assert dropouts  # AdaLoRA's lora_dropout: what no_lora_dropout takes out for its call
    bound = allocator._bound_bytes
    with torch.no_grad():  # adapters that move the weights when merged (PEFT starts them at zero)
        for name, param in env.llm.named_parameters():
            if "lora_E" in name:
                param.fill_(0.5)
    frozen = {n: p.detach().clone() for n, p in env.llm.named_parameters() if not p.requires_grad}
    for name in ("full_logits", "frozen_grads", "per_candidate", "whole_prompts", "eager", "one_thread",
                 "oversubscribed", "no_lora_dropout", "heap_trimmed", "one_forward", "merged_adapters"):
        steps, context = script.waste_side(name, args, env)
        with context():
            getattr(steps, script.MEASURES[name][0])()
            if name == "no_lora_dropout":
                assert not any(isinstance(d, torch.nn.Dropout) for d in env.llm.modules())
            if name == "whole_prompts":
                assert not env.steps.scorer.share_prefix
            if name == "merged_adapters":
                assert any(not torch.equal(p, frozen[n]) for n, p in env.llm.named_parameters() if n in frozen)
    assert {n for n, p in env.llm.named_parameters() if p.requires_grad} == trained
    assert all(p.grad is None for p in env.llm.parameters())
    assert base.config._attn_implementation == kernel and torch.get_num_threads() == n_threads
    assert not base.base_model._forward_hooks and env.steps.score_fn == env.steps.packed
    assert env.steps.scorer.share_prefix
    assert [d for d in env.llm.modules() if isinstance(d, torch.nn.Dropout)] == dropouts
    assert allocator._bound_bytes == bound
    assert all(torch.equal(p, frozen[n]) for n, p in env.llm.named_parameters() if n in frozen)  # bit for bit
    assert not any(getattr(m, "merged", False) for m in env.llm.modules())


def test_a_waste_side_that_scores_otherwise_is_refused():
    script = load_script("waste_ab")
    scores = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    script.check_same("per_candidate", scores, scores + 0.2, {torch.bfloat16})  # bf16 rounding: accepted
    with pytest.raises(AssertionError, match="per_candidate"):
        script.check_same("per_candidate", scores, scores.flip(1), {torch.bfloat16})
    script.check_same("float32", scores, scores + 0.2, {torch.bfloat16, torch.float32})
    with pytest.raises(AssertionError, match="float32"):
        script.check_same("float32", scores, scores.flip(1), {torch.bfloat16, torch.float32})
    script.check_same("eager", scores, scores + 1e-4, {torch.float32})  # float32 on both sides: tight
    with pytest.raises(AssertionError, match="eager"):
        script.check_same("eager", scores, scores + 1e-2, {torch.float32})
