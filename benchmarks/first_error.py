"""Time to first error: how long a bad setting takes to be reported, from process start.

    python benchmarks/first_error.py [--cases title_field domain ...] [--device-name SLUG]
    python benchmarks/first_error.py --checkpoint_dir saved   # a rerun's: the LLM already dequantized there

Each case runs ``run_delrec.py`` in its own process (the real command, Python start-up and
imports included) with one bad setting, on RecBole's bundled ML-100K or on a small generated
data set (written to a temporary folder), and measures the seconds until the process ends with
the expected message.  Every case must fail before the teacher trains: compare with
``<name>.teacher_seconds`` of a recorded run (``ml100k.default.teacher_seconds``).

Records ``first_error.<case>.seconds`` in ``benchmarks/results/first_error.json`` (the project's
format: metric, value, unit, device, date, command), each case with a fresh ``checkpoint_dir``
as on a new machine; with ``--checkpoint_dir`` every case uses that one, as a user's rerun does
(``first_error.reused.<case>.seconds`` in ``first_error.reused.json``).  A case whose message is
not the expected one is reported and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))

from tests.generated import LOAD_COL, histories, titles, write_atomic, write_presplit  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (the one owner of the records' device name)

#: What pre-split files load: the histories, no time column.
PRESPLIT_COL = {"inter": ["user_id", "item_id", "item_id_list"], "item": ["item_id", "title"]}
#: case -> (data set, --key=value arguments or a YAML mapping, a piece of the expected message)
CASES = {
    "title_field": ("ml-100k", {"title_field": "title"}, "is not a column of"),
    "title_not_loaded": ("toy", {"load_col": {"inter": LOAD_COL["inter"], "item": ["item_id"]}}, "will not load it"),
    "no_item_file": ("bare", {}, "needs item titles"),
    "timestamp_not_loaded": ("toy", {"load_col": {"inter": ["user_id", "item_id"], "item": ["item_id", "title"]}},
                             "TIME_FIELD 'timestamp'"),
    "template_placeholder": ("toy", {"prompt_template_dir": "{templates}"}, "lacks {candidates}"),
    "domain": ("ml-100k", {"domain": "cars"}, "Unknown domain"),
    "teacher_model": ("ml-100k", {"teacher_model": "NoSuchRec"}, "teacher_model 'NoSuchRec'"),
    "llm_path": ("ml-100k", {"llm_path": "/no/such/flan-t5"}, "does not exist"),
    "n_candidates": ("toy", {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni999"}},
                     "asks for 1000 candidates per prompt"),
    "eval_mode_mismatch": ("ml-100k", {"n_candidates": 100}, "disagrees with eval_args.mode"),
    "eval_mode_pop": ("ml-100k", {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "pop19"}},
                      "pop19"),
    "baseline": ("ml-100k", {"baselines": ["NoSuchRec"]}, "NoSuchRec"),
    "prompt_too_long": ("ml-100k", {"max_prompt_tokens": 256}, "The longest lsr prompt"),
    "encoding": ("latin", {}, "is not utf-8"),
    "byte_order_mark": ("marked", {}, "starts with a byte-order mark"),
    "no_rows": ("empty", {}, "and no rows"),
    "text_in_float": ("dated", {}, "RecBole could not read"),
    "untyped_header": ("untyped", {}, "is not 'name:type'"),
    "compressed": ("zipped", {}, "is compressed (gzip)"),
    "filtered_empty": ("ml-100k", {"user_inter_num_interval": "[5000,inf)"}, "nothing is left of"),
    "valid_metric": ("ml-100k", {"valid_metric": "Recall@5"}, "is not among the metrics the run reports"),
    "learning_rate": ("ml-100k", {"learning_rate": -1}, "`learning_rate` must be a number above 0"),
    "limit_zero": ("ml-100k", {"train_max_prefixes": 0}, "`train_max_prefixes` must be a whole number"),
    "topk_candidates": ("ml-100k", {"topk": [1, 5, 20]}, "has [20]: each user's target is ranked among 20"),
    "presplit_alias": ("presplit", {"benchmark_filename": ["train", "valid", "test"], "load_col": PRESPLIT_COL},
                       "Set `alias_of_item_id"),
    "presplit_two_test_rows": ("doubled", {"benchmark_filename": ["train", "valid", "test"], "load_col": PRESPLIT_COL,
                                           "alias_of_item_id": ["item_id_list"]}, "with more than one row"),
}
#: What the generated data sets need besides the case's own setting.
GENERATED = {"load_col": LOAD_COL, "title_field": "title", "domain": "products", "user_inter_num_interval": "[1,inf)"}


def prepare(folder: Path) -> None:
    """The generated data sets (``toy`` with titles, ``bare`` without a .item file, bad
    copies of ``toy``: a latin-1 byte, a byte-order mark, no rows, a date in the float
    timestamp, a header without types, a gzip file under the .inter name, and ``toy``'s histories as pre-split files, ``doubled`` with two test rows for
    one user) and a template folder of the packaged templates but for an rps.txt that lacks
    ``{candidates}`` (an LSR template may leave it out: the history-only prompt scores each
    candidate pointwise)."""
    from recbole_delrec.prompts.builder import template_dir

    write_atomic(folder, "toy", histories(200, 12, 500), titles(500, (3, 10)))
    write_atomic(folder, "bare", histories(200, 12, 500), None)
    for name in ("presplit", "doubled"):
        write_presplit(folder, name, histories(200, 12, 500), titles(500, (3, 10)))
    with open(folder / "doubled" / "doubled.test.inter", "a", encoding="utf-8") as file:
        file.write("u1\ti1 i2\ti3\n")  # a second test row for u1
    for name, suffix, spoil in (
        ("latin", "item", lambda data: data.replace(b"\ni400\t", b"\ni400\tCaf\xe9 ", 1)),
        ("marked", "inter", lambda data: b"\xef\xbb\xbf" + data),
        ("empty", "inter", lambda data: data.split(b"\n", 1)[0] + b"\n"),
        ("dated", "inter", lambda data: data.rstrip(b"\n").rsplit(b"\t", 1)[0] + b"\t2020-01-03\n"),
        ("untyped", "inter", lambda data: b"user_id\titem_id\ttimestamp\n" + data.split(b"\n", 1)[1]),
        ("zipped", "inter", gzip.compress),
    ):
        shutil.copytree(folder / "toy", folder / name)
        for path in (folder / name).iterdir():
            path.rename(path.with_name(f"{name}{path.suffix}"))
        path = folder / name / f"{name}.{suffix}"
        path.write_bytes(spoil(path.read_bytes()))
    templates = folder / "templates"
    shutil.copytree(template_dir(), templates, ignore=shutil.ignore_patterns("__pycache__"))
    (templates / "rps.txt").write_text("{soft_prompt} The user bought {history}. What next?", encoding="utf-8")


def run_case(name: str, folder: Path, checkpoint_dir: Path | None = None) -> tuple[float, str, bool]:
    """Seconds from process start to its end, the last line of its error, whether it matched."""
    dataset, setting, expected = CASES[name]
    checkpoint_dir = checkpoint_dir or folder / "saved" / name
    values = {**(GENERATED if dataset != "ml-100k" else {}), **setting, "checkpoint_dir": str(checkpoint_dir),
              "state": "WARNING", "show_progress": False}
    if values.get("prompt_template_dir") == "{templates}":
        values["prompt_template_dir"] = str(folder / "templates")
    config_file = folder / f"{name}.yaml"
    config_file.write_text(json.dumps(values), encoding="utf-8")  # JSON is YAML
    command = [sys.executable, str(REPO / "run_delrec.py"), f"--dataset={dataset}", f"--data_path={folder}",
               f"--config_files={config_file}"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = [line for line in done.stderr.splitlines() if "Error" in line.split(":")[0]]
    last = lines[-1] if lines else (done.stderr.strip().splitlines() or ["(no error)"])[-1]
    return seconds, last, done.returncode != 0 and expected in done.stderr


def kept_records(path: Path, new: list[dict]) -> list[dict]:
    """The file's records of the cases this run did not measure: ``--cases`` replaces its own only."""
    measured = {r["metric"] for r in new}
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    return [r for r in old if r["metric"] not in measured]


def teacher_seconds() -> str:
    """``ml100k.default.teacher_seconds`` from the recorded default run, if there is one."""
    path = RESULTS / "ml100k.default.json"
    records = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    found = [r["value"] for r in records if r["metric"] == "ml100k.default.teacher_seconds"]
    return f"{found[0]} s" if found else "not recorded"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--device-name", default=machine.device_name(), help="the records' device")
    parser.add_argument("--checkpoint_dir", type=Path, help="every case's checkpoint_dir (default: a fresh one each)")
    args = parser.parse_args()
    reused = args.checkpoint_dir.resolve() if args.checkpoint_dir else None  # the cases run in a temporary folder
    key = "first_error.reused" if reused else "first_error"
    out = RESULTS / f"{key}.json"
    from recbole_delrec.runs.artifacts import save_json

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    date = datetime.date.today().isoformat()
    records, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder)
        for name in args.cases:
            seconds, last, ok = run_case(name, folder, reused)
            print(f"{name:<22} {seconds:6.1f} s  {'ok ' if ok else 'BAD'} {last[:150]}", flush=True)
            records.append({"metric": f"{key}.{name}.seconds", "value": round(seconds, 2), "unit": "s",
                            "device": args.device_name, "date": date, "command": command})
            failed += [] if ok else [name]
    RESULTS.mkdir(parents=True, exist_ok=True)
    save_json(kept_records(out, records) + records, out)  # atomic
    print(f"wrote {out}")
    print(f"for comparison, the teacher's training time of the default ML-100K run: {teacher_seconds()}")
    if failed:
        print(f"cases without the expected message: {failed}")
        sys.exit(1)


if __name__ == "__main__":
    main()
