"""benchmarks/claims.py's table: rows of a seed paired by user, seeds chosen by their rows, and
the per-user figures read from the committed records (teacher agreement, its share of the hits)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recbole_delrec.prompts import check_template, domain_words, load_template
from tests.benchmark_scripts import load_script
from tests.synthetic_runs import write_run

USERS = 40


def keep_row(run: Path, folder: Path, row: str, rank: np.ndarray, top1: list[str]) -> None:
    """One finished row of a seed as ``claims.keep`` leaves it: the row's run records, whose
    ``rank.delrec``/``top1.delrec`` are the row's own, and its small result."""
    frame = pd.read_parquet(run / "records.parquet")
    frame["rank.delrec"], frame["top1.delrec"] = rank, top1
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / f"{row}.records.parquet", index=False)
    shutil.copyfile(run / "records.json", folder / f"{row}.records.json")
    result = json.loads((run / "result.json").read_text())
    small = {"row_keys": result["row_keys"], "cost": result["cost"], "timings": result["timings"],
             "stage1_result": {"fidelity_random": 0.05, "fidelity_distilled": 0.2} if row == "delrec" else {}}
    (folder / f"{row}.result.json").write_text(json.dumps(small))


def planted_seed(tmp_path: Path, claims, seed: int, rows: list[str]) -> None:
    """A seed whose teacher is right on users 0-19; DELRec copies the teacher on users 0-9 and
    20-29 and is right on its own on users 30-34; every other row is right on users 35-39 only."""
    run = write_run(tmp_path / f"run-{seed}", seed, users=USERS)
    frame = pd.read_parquet(run / "records.parquet")
    targets = frame["target"].tolist()
    teacher = [t if i < 20 else "x" for i, t in enumerate(targets)]
    frame["rank.teacher"], frame["top1.teacher"] = np.where(np.arange(USERS) < 20, 1, 2), teacher
    frame.to_parquet(run / "records.parquet", index=False)
    delrec = [teacher[i] if i < 10 or 20 <= i < 30 else (targets[i] if 30 <= i < 35 else "y") for i in range(USERS)]
    folder = claims.seed_dir("planted", seed)
    keep_row(run, folder, "delrec", np.array([1 if d == t else 3 for d, t in zip(delrec, targets)]), delrec)
    other = [t if i >= 35 else "y" for i, t in enumerate(targets)]
    for row in rows:
        keep_row(run, folder, row, np.array([1 if o == t else 3 for o, t in zip(other, targets)]), other)


def records(path: Path) -> dict[str, float]:
    return {r["metric"]: r["value"] for r in json.loads(path.read_text())}


def test_hits_split_by_teacher_agreement_add_up_to_hit_at_1(tmp_path, monkeypatch):
    claims = load_script("claims")
    monkeypatch.setattr(claims, "RESULTS", tmp_path / "results")
    planted_seed(tmp_path, claims, 1, ["no_soft_prompt"])
    planted_seed(tmp_path, claims, 2, ["no_soft_prompt"])
    summary = claims.table("planted", "python benchmarks/claims.py --table", "cpu-test")
    found = records(tmp_path / "results" / "planted.claims.json")
    assert summary["seeds"] == [1, 2]
    assert found["planted.delrec.teacher_agreement"] == 0.5  # users 0-9 and 20-29
    assert found["planted.delrec.hit@1.from_teacher"] == 0.25  # users 0-9: the teacher's hits it copied
    assert found["planted.delrec.hit@1.own"] == 0.125  # users 30-34
    assert found["planted.delrec.hit@1.mean"] == 0.375
    assert found["planted.no_soft_prompt.hit@1.from_teacher"] == 0.0
    assert found["planted.no_soft_prompt.hit@1.own"] == 0.125
    assert found["planted.stage1.delrec.seed-1.fidelity.distilled"] == 0.2


def test_a_table_of_named_rows_uses_only_the_seeds_that_have_them(tmp_path, monkeypatch, capsys):
    claims = load_script("claims")
    monkeypatch.setattr(claims, "RESULTS", tmp_path / "results")
    planted_seed(tmp_path, claims, 1, ["no_soft_prompt", "random_soft_prompt", "zeroshot_history_only"])
    planted_seed(tmp_path, claims, 2, ["no_soft_prompt"])
    side = claims.seed_dir("planted", 1) / "zeroshot_history_only.result.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "stage1_result": {"fidelity_distilled": 0.3}}))
    both = claims.table("planted", "cmd", "cpu-test", rows=["no_soft_prompt"], tag="two")
    first = claims.table("planted", "cmd", "cpu-test")  # the most complete seed's main rows
    assert both["seeds"] == [1, 2] and first["seeds"] == [1]
    assert "random_soft_prompt" in first["metrics"] and "random_soft_prompt" not in both["metrics"]
    assert "zeroshot_history_only" not in first["metrics"]  # a row beside the main table
    assert "without ['seed-2']: rows missing" in capsys.readouterr().out
    assert "planted.two.delrec.hit@1.mean" in records(tmp_path / "results" / "planted.claims.two.json")
    main = records(tmp_path / "results" / "planted.claims.json")
    assert main["planted.stage1.delrec.seed-1.fidelity.distilled"] == 0.2
    assert not any("zeroshot_history_only" in key for key in main)  # a side row stays in its own table


def test_a_wording_row_gets_the_packaged_templates_with_its_own_lsr(tmp_path):
    claims = load_script("claims")
    lsr = claims.TEMPLATES / claims.ROWS["zeroshot_history_only"]["lsr_template"]
    folder = Path(claims.templates_with(lsr, str(tmp_path)))
    static = {"teacher": "SASRec", **domain_words("movies")}
    for task in ("lsr", "rps", "ta"):
        check_template(task, (folder / f"{task}.txt").read_text(encoding="utf-8"), static, folder)
    assert load_template("lsr", "movies", str(folder)) == lsr.read_text(encoding="utf-8").strip()
    assert "{candidates}" not in load_template("lsr", "movies", str(folder))
    assert load_template("rps", "movies", str(folder)) == load_template("rps", "movies")


def test_versus_tests_a_named_row_against_every_other_llm_row(tmp_path, monkeypatch):
    claims = load_script("claims")
    monkeypatch.setattr(claims, "RESULTS", tmp_path / "results")
    planted_seed(tmp_path, claims, 1, ["no_soft_prompt", "random_soft_prompt"])
    claims.table("planted", "cmd", "cpu-test", rows=["no_soft_prompt", "random_soft_prompt"], tag="v",
                 versus="no_soft_prompt")
    found = records(tmp_path / "results" / "planted.claims.v.json")
    same = "planted.v.no_soft_prompt_vs_random_soft_prompt.hit@1"
    assert found[f"{same}.pvalue"] == 1.0  # the two rows hit the same users
    # DELRec alone hits 15 users, the row alone 5: a two-sided sign test of 5 in 20
    assert found["planted.v.no_soft_prompt_vs_delrec.hit@1.pvalue"] == pytest.approx(0.0414, abs=1e-3)
    assert found["planted.v.no_soft_prompt_vs_delrec.hit@1.pvalue_holm"] >= 0.0414
    assert not any(k.startswith("planted.v.no_soft_prompt_vs_teacher") for k in found)  # LLM rows only
    with pytest.raises(SystemExit, match="--versus zeroshot"):
        claims.table("planted", "cmd", "cpu-test", rows=["no_soft_prompt"], tag="w", versus="zeroshot")


def test_a_finished_run_with_the_rows_settings_is_kept_as_that_row(tmp_path, monkeypatch):
    claims = load_script("claims")
    monkeypatch.setattr(claims, "RESULTS", tmp_path / "results")
    monkeypatch.chdir(tmp_path)  # the row's YAML is read from the checkout, not the working folder
    planted_seed(tmp_path, claims, 2020, [])
    run = write_run(tmp_path / "full-budget-run", 2020, users=USERS)
    settings = claims.row_settings("delrec_full_budget")
    assert settings["epochs"] == 2 and settings["train_prefixes_per_user"] == 2
    (run / "config.json").write_text(json.dumps({"final": {**settings, "seed": 2020}, "external": {}}))
    claims.adopt_run(str(run), "delrec_full_budget", 2020, "planted")
    folder = claims.seed_dir("planted", 2020)
    assert pd.read_parquet(folder / "delrec_full_budget.records.parquet").equals(pd.read_parquet(run / "records.parquet"))
    assert json.loads((folder / "delrec_full_budget.result.json").read_text())["timings"]["test_seconds"] == 1.2


def test_a_finished_run_with_other_settings_or_candidates_is_refused(tmp_path, monkeypatch):
    claims = load_script("claims")
    monkeypatch.setattr(claims, "RESULTS", tmp_path / "results")
    planted_seed(tmp_path, claims, 2020, [])
    run = write_run(tmp_path / "default-run", 2020, users=USERS)
    settings = claims.row_settings("delrec_full_budget")
    (run / "config.json").write_text(json.dumps({"final": {**settings, "epochs": 1}, "external": {}}))
    with pytest.raises(ValueError, match="epochs=1"):
        claims.adopt_run(str(run), "delrec_full_budget", 2020, "planted")
    (run / "config.json").write_text(json.dumps({"final": settings, "external": {}}))
    frame = pd.read_parquet(run / "records.parquet")
    frame["candidates"] = [["x", "y", f"i{i}"] for i in range(USERS)]
    frame.to_parquet(run / "records.parquet", index=False)
    with pytest.raises(ValueError, match="candidates_path"):
        claims.adopt_run(str(run), "delrec_full_budget", 2020, "planted")
    assert not (claims.seed_dir("planted", 2020) / "delrec_full_budget.records.parquet").exists()
