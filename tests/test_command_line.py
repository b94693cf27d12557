"""What ``run_delrec.py`` and the runs' ``config_file_list`` say about a misspelt model or a
config file RecBole cannot read (RecBole's own errors name neither the option nor the file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recbole_delrec import run_delrec
from recbole_delrec.config import hidden_command_line
from recbole_delrec.tslrec.quick_start import run_tslrec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model, expected", [
    ("delrec", "--model=delrec: use --model=DELRec (RecBole's model names are case-sensitive)"),
    ("SASRec", "--model=SASRec: run_delrec.py runs DELRec or TSLRec; a RecBole model runs with RecBole's"),
])
def test_a_model_run_delrec_does_not_run_is_named(model, expected):
    done = subprocess.run([sys.executable, "run_delrec.py", f"--model={model}"], cwd=ROOT, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)
    assert done.returncode == 2 and expected in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("text, expected", [
    ("epochs: 1\ntopk: [1, 5\n", "is not valid YAML in UTF-8: while parsing a flow sequence\n  in \"{path}\", line 2"),
    ("# only a comment\n", "holds nothing, and RecBole reads a config file as settings"),
    ("- epochs\n- 1\n", "holds a list, and RecBole reads a config file as settings"),
    (None, "(--config_files) cannot be read"),
])
@pytest.mark.parametrize("run", [run_delrec, lambda **kw: run_tslrec("ml-100k", "SASRec", **kw)])
def test_a_config_file_recbole_cannot_read_is_named(tmp_path, run, text, expected):
    path = tmp_path / "settings.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with hidden_command_line(), pytest.raises((ValueError, FileNotFoundError)) as info:
        run(config_file_list=[str(path)], config_dict={"checkpoint_dir": str(tmp_path / "saved")})
    assert expected.format(path=path) in str(info.value) and str(path) in str(info.value)
    assert not (tmp_path / "saved").exists()
