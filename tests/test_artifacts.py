"""Run folders: atomic writes, safe and checked loading, load, resume, determinism, explain."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import T5ForConditionalGeneration

from recbole_delrec import run_delrec
from recbole_delrec.runs.artifacts import atomic_dir, atomic_write, load_tensors, save_tensors
from recbole_delrec.config import hidden_command_line, isolated_config
from recbole_delrec.delrec.explain import explain
from recbole_delrec.delrec.quick_start import load_run
from recbole_delrec.evaluation.records import load_records
from recbole_delrec.runs.startup import build
from recbole_delrec.llm.adapters import add_adalora
from recbole_delrec.llm.soft_prompt import SoftPrompt
from tests.benchmark_scripts import load_script
from tests.conftest import tiny_dict


def test_a_failed_write_leaves_the_good_file_in_place(tmp_path):
    target = tmp_path / "ckpt.pth"
    save_tensors({"w": torch.ones(3)}, target)

    def broken(tmp):
        tmp.write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt  # the run is killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, broken)
    assert torch.equal(load_tensors(target)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_a_failed_folder_write_leaves_the_good_folder(tmp_path):
    atomic_dir(tmp_path / "adapter", lambda tmp: (tmp / "a.txt").write_text("good"))

    def broken(tmp):
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_dir(tmp_path / "adapter", broken)
    assert (tmp_path / "adapter" / "a.txt").read_text() == "good"


def test_loading_refuses_what_does_not_fit(tmp_path, tiny_model):
    prompt = SoftPrompt(4, 16)
    prompt.save(tmp_path / "p.pth", {"llm": "scratch-t5", "dataset": "ml-100k"})
    with pytest.raises(ValueError, match="shape"):
        SoftPrompt(4, 32).load(tmp_path / "p.pth", {"llm": "scratch-t5"})
    with pytest.raises(ValueError, match="another setting"):
        SoftPrompt(4, 16).load(tmp_path / "p.pth", {"llm": "google/flan-t5-xl"})
    state = tiny_model.trainable_state_dict()
    state["soft_prompt.weight"] = torch.zeros(4, 64)
    with pytest.raises(ValueError, match="soft_prompt.weight"):
        tiny_model.load_trainable_state_dict(state)
    with pytest.raises(ValueError, match="does not match"):
        tiny_model.load_trainable_state_dict({"foreign.weight": torch.zeros(1)})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    saved = tmp_path_factory.mktemp("runs")
    with hidden_command_line():
        return run_delrec(config_dict=tiny_dict(saved, epochs=2)), saved


def test_run_folder_holds_named_artefacts(finished_run):
    result, _ = finished_run
    run = result["run_dir"]
    names = {p.name for p in Path(run).iterdir()}
    assert {"config.json", "best.pth", "last.pth", "adapter", "llm", "teacher.pth", "result.json"} <= names
    assert "DELRec-ml-100k-SASRec-scratch-t5-" in run
    assert json.loads((Path(run) / "result.json").read_text())["test_result"] == result["test_result"]


def test_adapter_loads_with_peft_onto_the_base_llm(finished_run):
    """PEFT's own loader gives the same LLM as the run's checkpoint (AdaLoRA prunes ranks on save)."""
    run = Path(finished_run[0]["run_dir"])
    config = json.loads((run / "config.json").read_text())["final"]
    options = {**config["adalora"], **config["scratch_adalora"]}  # what the scratch T5 adapts
    trained = add_adalora(T5ForConditionalGeneration.from_pretrained(run / "llm"), options, 10)
    state = load_tensors(run / "best.pth")["state_dict"]
    missing = trained.load_state_dict({k[len("llm."):]: v for k, v in state.items() if k.startswith("llm.")}, strict=False)
    assert not missing.unexpected_keys
    loaded = PeftModel.from_pretrained(T5ForConditionalGeneration.from_pretrained(run / "llm"), run / "adapter")
    trained.eval(), loaded.eval()
    ids = torch.tensor([[5, 6, 7, 8, 1]])
    with torch.no_grad():
        a = trained(input_ids=ids, decoder_input_ids=ids).logits
        b = loaded(input_ids=ids, decoder_input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_load_evaluates_a_finished_run_without_training(finished_run):
    result, _ = finished_run
    with hidden_command_line():
        again = run_delrec(load=result["run_dir"], config_dict={"state": "WARNING"})
    assert again["test_result"] == result["test_result"]
    assert again["teacher_test_result"] == result["teacher_test_result"]
    assert "teacher_seconds" not in again["timings"]


def test_same_seed_same_metrics(finished_run):
    result, saved = finished_run
    with hidden_command_line():
        again = run_delrec(config_dict=tiny_dict(saved, epochs=2))
    assert again["test_result"] == result["test_result"]
    assert again["best_valid_result"] == result["best_valid_result"]


def test_resume_reaches_the_uninterrupted_metrics(finished_run, tmp_path):
    result, saved = finished_run

    class Killed(Exception):
        pass

    def kill_after_first_epoch(epoch_idx, score):
        raise Killed

    config = isolated_config("DELRec", "ml-100k", tiny_dict(saved, epochs=2))
    started = build(config)
    trainer, (train, valid, _) = started.trainer, started.splits
    with pytest.raises(Killed):
        trainer.fit(train, valid, callback_fn=kill_after_first_epoch)
    with hidden_command_line():
        resumed = run_delrec(config_dict=tiny_dict(saved, epochs=2), resume=str(trainer.run.path))
    assert resumed["test_result"] == result["test_result"]
    assert len(result["valid_history"]) == 2  # every epoch validated: the resumed run reports both
    assert resumed["valid_history"] == result["valid_history"]
    assert resumed["loss_history"] == pytest.approx(result["loss_history"])


@pytest.mark.parametrize("where", ["missing", "finished run"])
def test_resume_from_a_folder_without_last_pth_is_named_before_loading(finished_run, tmp_path, where):
    result, saved = finished_run
    folder = tmp_path / "nowhere" if where == "missing" else Path(result["run_dir"])
    if where == "finished run":  # a run that ended: its folder without the interrupted state
        shutil.copytree(folder, tmp_path / "ended", ignore=shutil.ignore_patterns("last.pth"))
        folder = tmp_path / "ended"
    with hidden_command_line(), pytest.raises(FileNotFoundError) as info:
        run_delrec(config_dict=tiny_dict(tmp_path / "fresh"), resume=str(folder))
    assert f"'{folder}' is not an interrupted DELRec run folder (no last.pth in it)" in str(info.value)
    assert not (tmp_path / "fresh").exists()  # nothing loaded, trained or written


def test_explain_shows_prompt_and_both_rankings(finished_run):
    result, _ = finished_run
    with hidden_command_line():
        text = run_delrec(load=result["run_dir"], explain="13")["explanation"]
    prompt, ranking = text.split("Candidates (* = the true next item)")
    assert "[SOFT PROMPT x4]" in prompt and "SASRec" in prompt and "watched" in prompt
    rows = [line for line in ranking.strip().splitlines()[2:]]
    assert len(rows) == 20 and sum(line.count(" *") for line in rows) == 2  # target marked in both columns
    assert "DELRec" in ranking and "teacher" in ranking


def test_explain_ranks_the_target_where_the_evaluation_did(finished_run):
    """The explained ranking is the evaluated one: the run's candidate set, the one scoring."""
    result, _ = finished_run
    with hidden_command_line():
        started = load_run(result["run_dir"], config_dict={"state": "WARNING"})
    started.trainer.load_checkpoint(started.trainer.saved_model_file)
    records = load_records(result["run_dir"])[0].set_index("user")
    sets = started.trainer.candidate_sets(started.test_data._dataset)
    for user in records.index[:5]:
        shown = explain(started.model, started.test_data, user, sets)
        assert [item for item, _ in shown.delrec].index(shown.target) + 1 == records.loc[user, "rank.delrec"]
        assert [item for item, _ in shown.teacher].index(shown.target) + 1 == records.loc[user, "rank.teacher"]


def test_merged_adapters_while_delrec_scores_and_the_same_bits_after(finished_run):
    """``llm_merge_adapters``: DELRec's scoring runs on weights with the adapters merged in; the
    teacher's leaves them alone, and the LLM's weights come back bit for bit."""
    result, _ = finished_run
    started = load_run(result["run_dir"], config_dict={"llm_merge_adapters": True})
    trainer, model = started.trainer, started.model
    trainer.load_checkpoint(trainer.saved_model_file)
    before = {n: p.detach().clone() for n, p in model.llm.named_parameters() if "base_layer" in n}
    changed = lambda: [n for n, p in model.llm.named_parameters() if n in before and not torch.equal(p, before[n])]  # noqa: E731
    with trainer.scoring_weights(model.teacher):
        assert not changed()
    with trainer.scoring_weights(model):
        assert changed()
    assert not changed()


def test_merged_adapters_leave_training_alone(finished_run):
    """Each validation and the test score with the adapters merged (float32: the same scores to
    rounding); training goes on from the unmerged weights, so its losses are exactly the same."""
    result, saved = finished_run
    with hidden_command_line():
        merged = run_delrec(config_dict=tiny_dict(saved, epochs=2, llm_merge_adapters=True))
    assert len(merged["valid_history"]) == 2
    assert merged["loss_history"] == result["loss_history"]
    assert merged["test_result"] == pytest.approx(result["test_result"])


def test_merge_check_records_how_far_merging_moves_each_user(finished_run, tmp_path):
    """``benchmarks/merge_check.py`` on a finished run: float32 merging changes no user's top-1."""
    result, _ = finished_run
    out = load_script("merge_check").main(["--run", result["run_dir"], "--model-name", "tiny",
                                           "--out", str(tmp_path / "records.json"), "--config", "state=WARNING"])
    values = {r["metric"]: r["value"] for r in out}
    assert values["cpu.tiny.merged.users"] == result["test_users"]
    assert values["cpu.tiny.merged.top1_agreement"] == 1.0
    assert values["cpu.tiny.merged.plain.hit@1"] == pytest.approx(result["test_result"]["hit@1"], abs=1e-4)
    assert values["cpu.tiny.merged.hit@1.pvalue"] == 1.0  # no user's hit changes
    assert json.loads((tmp_path / "records.json").read_text()) == out
    assert out[0]["command"].startswith("python benchmarks/merge_check.py --run ")  # relative to the checkout
