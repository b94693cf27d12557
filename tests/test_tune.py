"""Tests for hyper-parameter sweeps: RecBole-format space files, the CLI wiring, RecBole's
HyperTuning path, and one real Ray Tune sweep (4 trials, ASHA, one invalid) on a tiny
ML-100K slice with the offline scratch model."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Quantized

from recbole_delrec.config import external_values, hidden_command_line
from recbole_delrec.tune import ACCEPTED_FORMS, parse_search_space

REPO = Path(__file__).resolve().parents[1]

# A tiny, fast slice: 16 users (>= 400 interactions), a 1-layer 32-wide scratch T5, titles
# cut to 2 tokens (so a prompt's length is fixed by the template, not by the titles drawn).
TINY = {
    "use_gpu": False,
    "user_inter_num_interval": "[400,inf)",
    "epochs": 2,
    "train_prefixes_per_user": 1,
    "teacher_config": {"epochs": 1, "train_batch_size": 2048, "hidden_size": 16, "inner_size": 32,
                       "n_layers": 1, "n_heads": 1},
    "llm_path": "scratch", "scratch_llm": {"vocab_size": 500, "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 2, "num_layers": 1,
                    "num_decoder_layers": 1, "dropout_rate": 0.0, "feed_forward_proj": "gated-gelu"},
    "history_length": 3,
    "max_title_tokens": 2,
    "max_prompt_title_tokens": 2,
    "eval_batch_size": 200,
    "show_progress": False,
    "state": "WARNING",
}

# 2 x 2 grid: a 256-token soft prompt cannot fit in a 256-token prompt (the prompt builder
# raises ValueError), every other combination fits (template ~100 tokens + 21 two-token titles).
SWEEP_SPACE = """\
learning_rate loguniform -7,-4
n_soft_tokens choice [0, 256]
max_prompt_tokens choice [256, 512]
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------- space files


def test_each_form_becomes_the_matching_ray_domain(tmp_path):
    space = parse_search_space(write(tmp_path / "s.hyper", (
        "# a comment, then a blank line\n\n"
        "learning_rate loguniform -8,0\n"
        "n_soft_tokens choice [20,50,100]\n"
        "target_modules choice [['q', 'v'], ['q', 'k', 'v']]\n"
        "dropout uniform 0.1, 0.5\n"
        "history_length quniform 1,10,1\n"
        "weight_decay quniform 0,0.1,0.05\n"
    )))
    assert list(space) == ["learning_rate", "n_soft_tokens", "target_modules", "dropout", "history_length", "weight_decay"]
    lr = space["learning_rate"]
    assert isinstance(lr, Float) and isinstance(lr.get_sampler(), LogUniform)
    assert math.isclose(lr.lower, math.exp(-8)) and math.isclose(lr.upper, 1.0)  # RecBole: exp(uniform(-8, 0))
    assert isinstance(space["n_soft_tokens"], Categorical) and space["n_soft_tokens"].categories == [20, 50, 100]
    assert space["target_modules"].categories == [["q", "v"], ["q", "k", "v"]]
    assert isinstance(space["dropout"], Float) and (space["dropout"].lower, space["dropout"].upper) == (0.1, 0.5)
    assert isinstance(space["history_length"], Integer)  # whole-number quniform: ints, not 3.0
    assert isinstance(space["history_length"].get_sampler(), Quantized)
    assert isinstance(space["weight_decay"], Float) and isinstance(space["weight_decay"].get_sampler(), Quantized)
    samples = [space["history_length"].sample() for _ in range(50)]
    assert all(isinstance(v, int) and 1 <= v <= 10 for v in samples)


def test_grid_turns_every_choice_into_grid_search(tmp_path):
    space = parse_search_space(write(tmp_path / "s.hyper", "a choice [1,2]\nb choice ['x']\nlr uniform 0,1\n"), grid=True)
    assert space["a"] == {"grid_search": [1, 2]} and space["b"] == {"grid_search": ["x"]}
    assert isinstance(space["lr"], Float)


@pytest.mark.parametrize("line, reason", [
    ("lr lognormal 0,1", "unknown type 'lognormal'"),
    ("lr uniform 0.1", "takes 2 comma-separated numbers"),
    ("lr uniform 1,0", "not below high"),
    ("lr quniform 1,10", "takes 3 comma-separated numbers"),
    ("n choice [1,2", "not a list literal"),
    ("n choice []", "not a non-empty list"),
    ("n choice __import__('os')", "not a list literal"),
    ("lr loguniform a,b", "not 2 comma-separated numbers"),
    ("lr", "expected a name, a type and values"),
])
def test_a_bad_line_names_file_line_and_the_accepted_forms(tmp_path, line, reason):
    path = write(tmp_path / "bad.hyper", f"ok choice [1]\n\n{line}\n")
    with pytest.raises(ValueError) as err:
        parse_search_space(path)
    message = str(err.value)
    assert f"{path}:3:" in message and reason in message and ACCEPTED_FORMS in message


def test_a_name_given_twice_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r":2: .*defined twice"):
        parse_search_space(write(tmp_path / "s.hyper", "a choice [1]\na choice [2]\n"))


def test_shipped_space_reads_in_ray_hyperopt_and_recbole():
    """The shipped file drives RecBole's HyperTuning and Ray's HyperOptSearch alike."""
    from ray.tune.search.hyperopt import HyperOptSearch
    from recbole.trainer.hyper_tuning import HyperTuning

    path = REPO / "properties" / "tune" / "DELRec.hyper"
    space = parse_search_space(path)
    assert "n_candidates" not in space  # the 20-candidate protocol is not swept
    assert set(HyperTuning._build_space_from_file(str(path))) == set(space)
    search = HyperOptSearch(random_state_seed=0)
    search.set_search_properties("valid_score", "max", space)
    suggested = search.suggest("trial-1")
    assert math.exp(-8) <= suggested["learning_rate"] <= math.exp(-4)
    assert suggested["n_soft_tokens"] in (20, 50, 100)


# ----------------------------------------------------------------------- CLI wiring


def test_external_values_reads_files_dict_and_command_line_like_recbole(tmp_path):
    path = write(tmp_path / "a.yaml", "epochs: 7\nuser_inter_num_interval: '[5,inf)'\nlearning_rate: 0.1\n")
    values = external_values([str(path)], {"learning_rate": 0.2}, ["--learning_rate=0.3", "--topk=[1,5]", "--state=INFO"])
    assert values == {"epochs": 7, "user_inter_num_interval": "[5,inf)", "learning_rate": 0.3, "topk": [1, 5],
                      "state": "INFO"}


def test_cli_tune_flags_become_sweep_arguments_and_overrides_a_config_dict(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    import run_delrec as cli

    calls = {}
    monkeypatch.setattr("recbole_delrec.tune.run_sweep", lambda **kw: calls.update(kw))
    monkeypatch.setattr(cli, "run_delrec", lambda **kw: calls.update(single=kw))
    monkeypatch.setattr(sys, "argv", ["run_delrec.py", "--model=DELRec", "--dataset=ml-100k", "--tune=x.hyper",
                                      "--samples", "4", "--search=grid", "--scheduler=fifo", "--cpus-per-trial=2",
                                      "--ray-address=auto", "--epochs=3", "--learning_rate=0.01"])
    cli.main()
    assert "single" not in calls
    assert calls["space_file"] == "x.hyper" and calls["samples"] == 4 and calls["search"] == "grid"
    assert calls["scheduler"] == "fifo" and calls["cpus_per_trial"] == 2 and calls["ray_address"] == "auto"
    assert calls["config_dict"] == {"epochs": 3, "learning_rate": 0.01}
    monkeypatch.setattr(sys, "argv", ["run_delrec.py", "--dataset=ml-100k", "--epochs=3", "--nproc=2"])
    calls.clear()
    cli.main()
    assert calls == {"single": {"model": "DELRec", "dataset": "ml-100k", "config_file_list": None,
                                "load": None, "resume": None, "explain": None, "nproc": 2, "world_size": -1,
                                "ip": "localhost", "port": "5678", "group_offset": 0}}
    assert sys.argv == ["run_delrec.py", "--epochs=3"]  # what RecBole's Config reads itself


# ----------------------------------------------------------------------- a real sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One 4-trial grid sweep (ASHA, local Ray), shared by the checks below."""
    import ray

    from recbole_delrec.tune import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    config = {**TINY, "checkpoint_dir": str(root / "saved")}
    table = run_sweep("DELRec", "ml-100k", write(root / "space.hyper", SWEEP_SPACE), samples=1, search="grid",
                      scheduler="asha", cpus_per_trial=1, config_dict=config, output_dir=root / "out")
    assert not ray.is_initialized()  # the local instance is shut down
    return root, table


def test_sweep_table_ranks_four_trials_with_one_error(sweep):
    root, table = sweep
    print(table.drop(columns=["error"]).to_string())
    assert len(table) == 4 and list(table["rank"]) == [1, 2, 3, 4]
    assert (table["status"] == "ERROR").sum() == 1
    failed = table[table["status"] == "ERROR"].iloc[0]
    assert failed["n_soft_tokens"] == 256 and failed["max_prompt_tokens"] == 256
    assert "ValueError" in failed["error"] and "max_prompt_tokens" in failed["error"]
    assert table.iloc[-1]["status"] == "ERROR"  # failed trials rank last
    ok = table[table["status"] != "ERROR"]
    assert ok["valid_score"].notna().all() and set(ok["status"]) <= {"TERMINATED", "PRUNED"}
    assert list(ok["valid_score"]) == sorted(ok["valid_score"], reverse=True)  # NDCG: bigger is better
    finished = table[table["status"] == "TERMINATED"]
    assert len(finished) >= 1 and finished[["test/ndcg@5", "valid/ndcg@5"]].notna().all().all()
    assert (finished["valid/ndcg@5"] == finished["valid_score"]).all()  # selection on validation
    assert len(list((root / "saved").glob("teacher-*.pth"))) == 1  # one teacher, trained once, shared
    assert len(list((root / "saved").glob("soft-prompt-*.pth"))) == 1  # distilled once, under a lock


def test_sweep_writes_csv_json_yaml_and_html(sweep):
    root, table = sweep
    out = root / "out"
    assert len(pd.read_csv(out / "trials.csv")) == 4
    rows = json.loads((out / "trials.json").read_text())
    assert len(rows) == 4 and sum(r["status"] == "ERROR" for r in rows) == 1
    html = (out / "sweep.html").read_text(encoding="utf-8")
    assert "plotly" in html.lower() and "valid_score" in html
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    top = table.iloc[0]
    assert best["n_soft_tokens"] == top["n_soft_tokens"] and best["max_prompt_tokens"] == top["max_prompt_tokens"]
    assert math.isclose(best["learning_rate"], top["learning_rate"])
    assert best["history_length"] == 3 and Path(best["checkpoint_dir"]).is_absolute()


def test_best_config_runs_through_run_delrec(sweep):
    from recbole_delrec import run_delrec

    root, table = sweep
    with hidden_command_line():
        result = run_delrec("DELRec", "ml-100k", config_file_list=[str(root / "out" / "best_config.yaml")])
    assert 0 <= result["test_result"]["ndcg@5"] <= 1
    assert len(list((root / "saved").glob("teacher-*.pth"))) == 1  # the sweep's teacher is reused


def test_objective_function_drives_recbole_hypertuning(sweep, tmp_path, capsys):
    """RecBole's own HyperTuning (hyperopt, one process) with our objective_function."""
    from recbole.trainer.hyper_tuning import HyperTuning

    from recbole_delrec.tune import objective_function

    root, _ = sweep
    fixed = write(tmp_path / "fixed.yaml", yaml.safe_dump({**TINY, "epochs": 1, "checkpoint_dir": str(root / "saved")}))
    params = write(tmp_path / "p.hyper", "learning_rate loguniform -7,-4\nhistory_length quniform 2,3,1\n")
    tuning = HyperTuning(objective_function, algo="random", params_file=str(params),
                         fixed_config_file_list=[str(fixed)], max_evals=1)
    tuning.run()
    (result,) = tuning.params2result.values()
    assert set(result) >= {"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}
    assert result["valid_score_bigger"] is True and tuning.best_params is not None
