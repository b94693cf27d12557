"""Which seeds a command asks for; bad seed settings are refused with the fix."""

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from peft import PeftModel
from recbole.config import Config

from recbole_delrec import run_delrec
from recbole_delrec.config import hidden_command_line, isolated_config
from recbole_delrec.evaluation.seeds import resolve_seeds, seeds_of
from tests.conftest import tiny_dict

ROOT = Path(__file__).resolve().parents[1]


def test_a_count_starts_at_the_configured_seed_and_a_list_is_kept():
    assert resolve_seeds(3, 2020) == [2020, 2021, 2022]
    assert resolve_seeds("3", 7) == [7, 8, 9]
    assert resolve_seeds("[5, 1]", 7) == [5, 1]


@pytest.mark.parametrize("bad", [0, "0", -2, [], [1, 1], "abc", [1.5], True])
def test_bad_seeds_are_refused(bad):
    with pytest.raises(ValueError, match="seeds"):
        resolve_seeds(bad, 2020)


def test_seeds_from_the_command_line_and_from_a_file(tmp_path, monkeypatch):
    assert seeds_of(isolated_config("DELRec", "ml-100k", {})) is None
    monkeypatch.setattr(sys, "argv", ["run_delrec.py", "--seeds=2", "--seed=11"])  # RecBole reads the command line
    assert seeds_of(Config(model="DELRec", dataset="ml-100k")) == [11, 12]
    config = tmp_path / "seeds.yaml"
    config.write_text("seeds: [3, 4]\n")
    assert seeds_of(isolated_config("DELRec", "ml-100k", {}, [str(config)])) == [3, 4]


def adapted_models() -> int:
    """PEFT models alive in this process, collected or not (a run's LLM sits in reference cycles)."""
    return sum(isinstance(o, PeftModel) for o in gc.get_objects())


def test_python_run_delrec_honours_a_seeds_setting(tmp_path):
    alive_before = adapted_models()
    with hidden_command_line():
        summary = run_delrec(config_dict=tiny_dict(tmp_path, seeds=[7, 8]))
    assert summary["seeds"] == [7, 8] and len(summary["run_dirs"]) == 2
    assert adapted_models() <= alive_before  # no seed's LLM outlives its run
    assert all(json.loads((Path(d) / "result.json").read_text())["eval_mode"] for d in summary["run_dirs"])
    assert (Path(summary["summary_dir"]) / "summary.json").is_file()


def test_seeds_zero_on_the_command_line_is_a_clear_error():
    done = subprocess.run([sys.executable, "run_delrec.py", "--seeds=0"], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)
    assert done.returncode != 0 and "--seeds=0: the number of seeds must be at least 1" in done.stderr


def test_seeds_and_report_on_the_command_line(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_dict(tmp_path)))
    done = subprocess.run([sys.executable, "run_delrec.py", f"--config_files={config}", "--seeds=2", "--report"],
                          cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(next(tmp_path.glob("evidence-ml-100k-*/summary.json")).read_text())
    assert summary["seeds"] == [7, 8] and len(summary["run_dirs"]) == 2
    assert "p (Holm)" in next(tmp_path.glob("evidence-ml-100k-*/report.md")).read_text()


def test_seeds_with_several_processes_is_refused_before_anything_runs(tmp_path):
    with hidden_command_line(), pytest.raises(ValueError, match="drop --nproc"):
        run_delrec(config_dict=tiny_dict(tmp_path, seeds=2), nproc=2)
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written
