"""Stage 1: TA/RPS examples by construction, frozen LLM, task weighting, artefact reuse."""

import pytest
import torch

from recbole_delrec import run_delrec
from recbole_delrec.config import hidden_command_line
from recbole_delrec.delrec.distill import SoftPromptDistiller
from recbole_delrec.delrec.distill.weighting import task_weights
from recbole_delrec.teacher import load_or_train_teacher, teacher_rank
from tests.conftest import tiny_dict


@pytest.fixture
def distiller(tiny_model, tiny_data) -> SoftPromptDistiller:
    config, train, valid, _ = tiny_data
    tiny_model.attach_teacher(load_or_train_teacher(config, train, valid))
    return SoftPromptDistiller(tiny_model, config)


def _future_items(loader) -> dict[int, set[int]]:
    """Each user's validation/test target (what stage 1 must never see)."""
    feat = loader._dataset.inter_feat
    items: dict[int, set[int]] = {}
    for user, item in zip(feat["user_id"].tolist(), feat["item_id"].tolist()):
        items.setdefault(user, set()).add(item)
    return items


def test_examples_are_correct_by_construction(distiller, tiny_data):
    _, train, valid, test = tiny_data
    examples, holdout = distiller.build(train._dataset)
    future = _future_items(valid)
    for user, items in _future_items(test).items():
        future.setdefault(user, set()).update(items)
    for example in examples["rps"] + holdout:
        top1 = teacher_rank(distiller.model.teacher, [example.history], 1)[0][0][0]
        assert example.candidates[example.target] == top1
        assert len(set(example.candidates)) == len(example.candidates) == 20
        assert not set(example.history) & future.get(example.user, set())
    for example in examples["ta"]:
        hidden = example.candidates[example.target]
        assert example.candidates.count(hidden) == 1 and len(set(example.candidates)) == 20
        seen = example.demo_history + [example.demo_answer] + example.query_history + [hidden]
        assert not set(seen) & future.get(example.user, set())
    assert {e.user for e in holdout}.isdisjoint({e.user for e in examples["rps"]})


@pytest.mark.parametrize("amp", [False, True])
def test_a_stage1_step_moves_the_soft_prompt_and_nothing_else(distiller, tiny_data, amp):
    """Also under RecBole's ``enable_amp`` (autocast to bfloat16 on the CPU)."""
    config = tiny_data[0]
    config["enable_amp"] = amp
    model = distiller.model
    examples, _ = distiller.build(tiny_data[1]._dataset)
    llm_before = {k: v.clone() for k, v in model.llm.state_dict().items()}
    prompt_before = model.soft_prompt.weight.detach().clone()
    model.soft_prompt.requires_grad_(True)
    optimizer = torch.optim.Adam(model.soft_prompt.parameters(), lr=0.05)
    losses = distiller.step({task: items[:4] for task, items in examples.items()}, optimizer)
    config["enable_amp"] = False
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert not torch.equal(prompt_before, model.soft_prompt.weight.detach())
    assert model.soft_prompt.weight.dtype == torch.float32
    for key, value in model.llm.state_dict().items():
        assert torch.equal(llm_before[key], value), key
    assert set(distiller.last_weights) == {"ta", "rps"}


def test_weighting_damps_the_task_with_the_larger_gradient():
    weights = task_weights({"ta": torch.full((4,), 10.0), "rps": torch.full((4,), 0.1)})
    assert weights["ta"] < weights["rps"]
    assert sum(weights.values()) == pytest.approx(1.0)
    assert task_weights({"ta": torch.ones(2), "rps": torch.ones(9)}, "fixed") == {"ta": 0.5, "rps": 0.5}


def test_stage1_then_stage2_alone_reuse_saved_artefacts(tmp_path, saved_dir):
    values = tiny_dict(saved_dir, stage1_epochs=1, stage1_prefixes_per_user=1)
    with hidden_command_line():
        first = run_delrec(config_dict={**values, "stage": 1})
        second = run_delrec(config_dict={**values, "stage": 2})
    assert "fidelity_distilled" in first["stage1_result"]
    assert second["stage1_result"] == first["stage1_result"]  # the saved soft prompt's record, reused
    assert list(saved_dir.glob("soft-prompt-ml-100k-SASRec-scratch-t5-*.pth"))
    assert "hit@1" in second["test_result"]


def test_stage2_alone_without_a_soft_prompt_says_what_to_do(tmp_path):
    values = tiny_dict(tmp_path / "fresh", stage=2, seed=11)
    with hidden_command_line(), pytest.raises(ValueError, match="stage: 2 needs"):
        run_delrec(config_dict=values)


def test_stage1_gradient_is_the_same_with_gradient_checkpointing(distiller, tiny_data):
    """The backward recomputes the forward with the adapters still off (stage 1's LLM)."""
    model = distiller.model
    examples, _ = distiller.build(tiny_data[1]._dataset)
    batch = {task: items[:4] for task, items in examples.items()}
    model.soft_prompt.requires_grad_(True)
    model.train()
    steps = []
    for checkpointing in (False, True):
        if checkpointing:
            model.llm.get_base_model().gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        start = model.soft_prompt.weight.detach().clone()
        optimizer = torch.optim.SGD(model.soft_prompt.parameters(), lr=1.0)
        distiller.step(batch, optimizer)
        steps.append(model.soft_prompt.weight.detach() - start)
        model.soft_prompt.weight.data.copy_(start)
    model.llm.get_base_model().gradient_checkpointing_disable()
    assert steps[0].abs().sum() > 0
    assert torch.allclose(steps[0], steps[1], atol=1e-6)


def test_the_trained_soft_prompt_is_kept_even_when_fidelity_does_not_rise(distiller, tiny_data, caplog):
    """A TA-only soft prompt may leave the RPS fidelity where the random one was: the ablation
    must still get the trained prompt, not the random one back."""
    config = tiny_data[0]
    saved = {k: config[k] for k in ("stage1_learning_rate", "stage1_epochs")}
    config["stage1_learning_rate"], config["stage1_epochs"] = 1e-7, 1  # moves it, changes no top-1
    random = distiller.model.soft_prompt.weight.detach().clone()
    try:
        result = distiller.fit(tiny_data[1]._dataset)
    finally:
        for key, value in saved.items():
            config[key] = value
    assert result["fidelity_distilled"] == result["fidelity_random"]
    assert not torch.equal(random, distiller.model.soft_prompt.weight.detach())
    assert "no epoch raised the fidelity" in caplog.text
