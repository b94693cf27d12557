"""``benchmarks/llm_speed.py`` on a tiny random Llama: one run measures every phase and writes the
records issue 19 names, and its FLOP count of the packed scorer is torch's own matmul count."""

from __future__ import annotations

import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from recbole_delrec.llm.causal import CausalScorer, PackedRow
from recbole_delrec.llm.scoring import PromptBatch
from recbole_delrec.llm.soft_prompt import SoftPrompt
from tests.benchmark_scripts import load_script
from tests.tiny_llms import SHARED, TITLES, save_tiny_llama, tiny_llama


def test_one_run_measures_scoring_naive_stage1_stage2_and_profiles(tmp_path, capsys):
    out = tmp_path / "speed.json"
    code = load_script("llm_speed").main(["--llm_path", save_tiny_llama(tmp_path / "llama"), "--model-name", "tiny",
                                          "--device", "cpu", "--dtype", "fp32", "--users", "1", "--repeats", "1",
                                          "--profile", "--out", str(out)])
    assert code == 0  # the packed scores are the naive ones within fp32 tolerance
    records = {r["metric"]: r for r in json.loads(out.read_text())}
    for key in ("cpu.matmul.bf16_gflops", "cpu.matmul.fp32_gflops", "cpu.tiny.scoring.mfu", "cpu.tiny.scoring.ms_per_user",
                "cpu.tiny.scoring.speedup_vs_naive", "cpu.tiny.stage1.mfu", "cpu.tiny.stage1.ms_per_prefix",
                "cpu.tiny.stage2.mfu", "cpu.tiny.stage2.ms_per_prefix"):
        assert records[key]["value"] > 0, key
    assert {records[f"cpu.tiny.{phase}.heap_give_backs"]["value"] for phase in ("scoring", "stage1", "stage2")} == {0}
    assert any(k.startswith("cpu.tiny.scoring.profile.aten::") for k in records)
    assert any(k.startswith("cpu.tiny.stage2.profile.aten::") for k in records)
    assert records["cpu.tiny.scoring.mfu"]["command"].split()[1:3] == ["benchmarks/llm_speed.py", "--llm_path"]
    assert "2 x the non-embedding parameters" in capsys.readouterr().out  # the FLOP definition is printed


def test_causal_flop_count_is_torch_matmul_count_less_what_the_mask_hides():
    """torch counts every matmul of the scorer's forward; the script's count has the same weights
    and LM head, and attention only over the keys the product's block mask allows (eager attention:
    plain matmuls that torch counts, over the whole row), the prompts' shared prefix once."""
    model = tiny_llama(kernel="eager")
    scorer, soft = CausalScorer(TITLES, pad_id=0, end_id=1), SoftPrompt(2, 32)
    batch, candidates = PromptBatch.collate(SHARED, pad_id=0, n_soft=2), torch.tensor([[1, 2, 3], [4, 2, 5], [0, 3, 1]])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        scorer(model, soft, batch, candidates)
    linear = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    prefix = batch.shared_prefix()
    counts = load_script("llm_speed").causal_flop_counts(model.config, [(SHARED, candidates.tolist(), prefix)], TITLES,
                                                         linear, 0)
    row = PackedRow.pack(batch, scorer.table(torch.device("cpu")), candidates, pad_id=0)
    width, per_key = row.input_ids.shape[1], 4 * model.config.num_hidden_layers * model.config.hidden_size
    padding = int((row.segment == -2).sum())
    assert prefix == 4 and counts["tokens"] == prefix + len(SHARED) * (width - prefix) - padding
    computed = prefix**2 + len(SHARED) * (width - prefix) * width  # eager: the prefix's square, then rows x row
    assert counter.get_total_flops() == counts["dense"] + 2 * linear * padding + per_key * computed
    real = (row.segment[:, prefix:] != -2)[:, None, :, None]  # the mask's rows of real queries
    allowed = int((row.attention_mask("sdpa", torch.float32, prefix) & real).sum()) + prefix * (prefix + 1) // 2
    assert counts["attention"] == per_key * allowed