"""The paper's claims on a real LLM (SmolLM2): the seeded main table, split by seed.

    python benchmarks/claims.py --seed=2020 [row ...] [--key=value ...]   # run rows of one seed (all by default)
    python benchmarks/claims.py --seed=2020 --prefix=steam.smollm2 --dataset=steam --data_path=../shared/datasets \
        '--user_inter_num_interval=[30,inf)' delrec no_soft_prompt     # another data set: any RecBole setting
    python benchmarks/claims.py --seed=2020 --from-run=saved/<default run> delrec
        # the delrec row from a finished default run of that seed: loaded and scored again
        # beside the baselines (its stage 1 and stage 2 are not repeated)
    python benchmarks/claims.py --seed=2020 --adopt-run=saved/<finished run> delrec_full_budget
        # a finished run of that seed (run_delrec.py or benchmarks/run.py with the row's settings
        # and the seed's candidate sets) kept as that row, as it is: nothing runs again
    python benchmarks/claims.py --seed=2020 --orders=3 --from-run=saved/<delrec run of that seed>
        # candidate-order sensitivity of that seed's DELRec run (``order.*`` keys of the table)
    python benchmarks/claims.py --table [row ...] [--report=docs/img/<prefix>]
        # the table from the committed records: the seeds that have these rows (default: the
        # main table's rows that the most complete seed has)
    python benchmarks/claims.py --seed=2020 zeroshot_history_only delrec_history_only  # rows beside the
    python benchmarks/claims.py --table zeroshot zeroshot_history_only delrec_history_only \
        --tag=prompt_wording --versus=delrec_history_only             # main table, in their own

Each row is one run of the plugin's own ``run_delrec`` with the overrides of :data:`ROWS`, on
the default budget of the main command, all rows of a seed on the same candidate sets (the
``delrec`` row draws them; every other row loads them with ``candidates_path``).  The
``delrec`` row also scores the teacher, GRU4Rec, Caser and popularity (``baselines``).  Each
finished row's per-user records and its result (timings, stage-1 fidelity) are copied under
``benchmarks/results/claims/<prefix>/seed-<seed>/`` at once, so a table too long for one
session is completed by seed, on any machine, without rerunning what is done.

``--table`` merges each seed's rows into one records frame (``rank.<row>`` per row), runs the
project's summary over the seeds (means with 95% intervals, DELRec's paired tests against every
row with Holm's correction over the table's family, activity and popularity buckets) and writes
``benchmarks/results/<prefix>.claims.json`` with the keys (each behind ``<prefix>.``) ``<row>.<metric>.mean``/``.ci95``,
``delrec_vs_<row>.<metric>.pvalue``/``.pvalue_holm``, ``buckets.*``, ``stage1.fidelity.*``,
``<row>.teacher_agreement`` (the share of test users whose top-1 is the teacher's, with
``delrec_vs_<row>.teacher_agreement.pvalue``), ``<row>.hit@1.from_teacher``/``.own`` (its Hit@1
split by that agreement), ``<row>.first_listed`` (whose top-1 is the
first-listed candidate; ``target.first_listed`` for the true item), ``order.*`` (``--orders``) and ``seeds``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (the one owner of the records' device name)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
#: Prompt templates of rows that change the wording (``benchmarks/templates``).
TEMPLATES = Path(__file__).resolve().parent / "templates"
#: Each row's overrides of the main command's settings.
ROWS = {
    "delrec": {"baselines": ["GRU4Rec", "Caser", "Pop"]},
    "no_soft_prompt": {"n_soft_tokens": 0},
    "random_soft_prompt": {"delrec_tasks": []},
    "ta_only": {"delrec_tasks": ["ta"]},
    "rps_only": {"delrec_tasks": ["rps"]},
    "zeroshot": {"n_soft_tokens": 0, "delrec_tasks": [], "epochs": 0},
    "delrec_full_budget": {"config_files": ["properties/overall/full-budget.yaml"]},
    "no_soft_prompt_full_budget": {"n_soft_tokens": 0, "config_files": ["properties/overall/full-budget.yaml"]},
    # the prompt's wording: the zero-shot LSR prompt without its candidate list (pointwise scoring)
    "zeroshot_history_only": {"n_soft_tokens": 0, "delrec_tasks": [], "epochs": 0,
                              "lsr_template": "lsr_history_only.txt"},
    # DELRec itself (stage 1 + stage 2) with that prompt
    "delrec_history_only": {"lsr_template": "lsr_history_only.txt"},
}
#: Rows the ``delrec`` run scores beside DELRec (their records columns).
BASELINE_ROWS = {"teacher": "teacher", "gru4rec": "gru4rec", "caser": "caser", "pop": "pop"}
#: The main table's rows; the others run on request (``--table`` of named rows, ``--tag``).
DEFAULT_ROWS = ["delrec", "no_soft_prompt", "random_soft_prompt", "ta_only", "rps_only", "zeroshot"]


def seed_dir(prefix: str, seed: int) -> Path:
    """Where a table's seed keeps its rows: one folder per table (``--prefix``: data set and LLM)."""
    return RESULTS / "claims" / prefix / f"seed-{seed}"


def run_row(row: str, seed: int, dataset: str, prefix: str, checkpoint_dir: str, from_run: str | None = None,
            config_files: list[str] | None = None, extra: dict | None = None) -> dict:
    """One row of one seed through ``run_delrec`` (or ``load`` of ``from_run``); kept at once."""
    from recbole_delrec import run_delrec
    from recbole_delrec.config import hidden_command_line

    if from_run:
        check_run_seed(from_run, seed)
    overrides = dict(ROWS[row])
    files = [*(config_files or []), *overrides.pop("config_files", [])] or None
    if "lsr_template" in overrides:
        overrides["prompt_template_dir"] = templates_with(TEMPLATES / overrides.pop("lsr_template"), checkpoint_dir)
    values = {"seed": seed, "checkpoint_dir": checkpoint_dir, "show_progress": False, **(extra or {}), **overrides}
    if row != "delrec":
        values["candidates_path"] = str(seed_dir(prefix, seed) / "delrec.candidates.parquet")
    with hidden_command_line():
        result = run_delrec(model="DELRec", dataset=dataset, config_file_list=files, config_dict=values, load=from_run)
    if from_run:  # the finished run's own training figures
        trained = json.loads((Path(from_run) / "result.json").read_text())
        result.update({k: trained[k] for k in ("stage1_result", "loss_history", "valid_history")})
        result["timings"] = {**trained["timings"], "rescored_test_seconds": result["timings"]["test_seconds"]}
    keep(result, row, seed_dir(prefix, seed))
    return result


def templates_with(lsr: Path, checkpoint_dir: str) -> str:
    """A ``prompt_template_dir`` of the packaged templates with ``lsr`` as its ``lsr.txt``."""
    from recbole_delrec.prompts.builder import template_dir

    folder = Path(checkpoint_dir) / f"templates-{lsr.stem}"
    shutil.copytree(template_dir(), folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(lsr, folder / "lsr.txt")
    return str(folder)


def keep(result: dict, row: str, folder: Path) -> None:
    """The row's per-user records, their description, its candidate sets and a small result."""
    folder.mkdir(parents=True, exist_ok=True)
    run = Path(result["run_dir"])
    shutil.copyfile(result["records"], folder / f"{row}.records.parquet")
    shutil.copyfile(run / "records.json", folder / f"{row}.records.json")
    if row == "delrec":
        shutil.copyfile(run / "candidates.parquet", folder / "delrec.candidates.parquet")
    small = {k: result[k] for k in ("test_result", "stage1_result", "timings", "loss_history", "valid_history",
                                    "cost", "row_keys")}
    (folder / f"{row}.result.json").write_text(json.dumps(small, indent=2, sort_keys=True) + "\n")


def adopt_run(run_dir: str, row: str, seed: int, prefix: str) -> None:
    """Keep a finished run as ``row`` of ``seed`` without running it again: a row too long to run
    twice (the larger budget, ~2 hours on a CPU) can be recorded by ``benchmarks/run.py`` and
    joined to the table.  Its seed, the row's settings and the seed's test users and candidate sets
    are checked first, so the row pairs with the others user by user."""
    import pandas as pd

    check_run_seed(run_dir, seed)
    final = json.loads((Path(run_dir) / "config.json").read_text())["final"]
    for key, value in row_settings(row).items():
        if final.get(key) != value:
            raise ValueError(f"--adopt-run {run_dir} ran with {key}={final.get(key)!r}; row '{row}' sets {value!r}.")
    folder = seed_dir(prefix, seed)
    mine, theirs = pd.read_parquet(Path(run_dir) / "records.parquet"), pd.read_parquet(folder / "delrec.records.parquet")
    if not mine["user"].equals(theirs["user"]) or any(list(a) != list(b) for a, b in zip(mine["candidates"], theirs["candidates"])):
        raise ValueError(f"--adopt-run {run_dir} scored other users or candidates than seed {seed}'s rows: run it "
                         f"with --candidates_path={folder / 'delrec.candidates.parquet'}.")
    keep(json.loads((Path(run_dir) / "result.json").read_text()), row, folder)


def row_settings(row: str) -> dict:
    """Every setting a row makes: its overrides and the values of its YAML files (paths as given)."""
    import yaml

    overrides = dict(ROWS[row])
    values = {}
    for path in overrides.pop("config_files", []):
        values.update(yaml.safe_load((REPO / path).read_text(encoding="utf-8")))
    overrides.pop("lsr_template", None)  # a template folder: its path is the run's own
    return {**values, **overrides}


def check_run_seed(run_dir: str, seed: int) -> None:
    """A finished run given for a seed must be a run of that seed (its rows pair users by seed)."""
    if json.loads((Path(run_dir) / "records.json").read_text()).get("seed") != seed:
        raise ValueError(f"--from-run {run_dir} is not a run of --seed {seed}.")


def analyse_orders(run_dir: str, orders: int, seed: int, dataset: str, prefix: str,
                   config_files: list[str] | None) -> None:
    """The order analysis of a seed's finished ``delrec`` run, kept beside its rows."""
    from recbole_delrec.evaluation.order import analyse_run, order_table
    from recbole_delrec.evaluation.summary import ORDER_FILE

    check_run_seed(run_dir, seed)
    result = analyse_run(run_dir, orders, dataset=dataset, config_file_list=config_files or None)
    print(order_table(result))
    shutil.copyfile(Path(run_dir) / ORDER_FILE, seed_dir(prefix, seed) / f"delrec.{ORDER_FILE}")


def merged_seed(folder: Path, out: Path) -> list[str]:
    """One records frame for a seed: the ``delrec`` run's columns plus ``rank.<row>``/``top1.<row>``
    of every other finished row (checked to be the same users and candidates)."""
    import pandas as pd

    from recbole_delrec.evaluation.summary import ORDER_FILE

    base = pd.read_parquet(folder / "delrec.records.parquet")
    meta = json.loads((folder / "delrec.records.json").read_text())
    rows = ["delrec", *BASELINE_ROWS]
    for path in sorted(folder.glob("*.records.parquet")):
        row = path.name.removesuffix(".records.parquet")
        if row == "delrec":
            continue
        other = pd.read_parquet(path)
        if not other["user"].equals(base["user"]) or not all(
                list(a) == list(b) for a, b in zip(other["candidates"], base["candidates"])):
            raise ValueError(f"{path} holds other users or candidates than {folder / 'delrec.records.parquet'}.")
        base[f"rank.{row}"], base[f"top1.{row}"] = other["rank.delrec"], other["top1.delrec"]
        meta["models"][row] = row
        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    if (folder / f"delrec.{ORDER_FILE}").is_file():  # the summary reads it as the run's own
        shutil.copyfile(folder / f"delrec.{ORDER_FILE}", out / ORDER_FILE)
    base.to_parquet(out / "records.parquet", index=False)
    (out / "records.json").write_text(json.dumps(meta))
    (out / "result.json").write_text(json.dumps(_costs(folder, rows)))
    return rows


def _costs(folder: Path, rows: list[str]) -> dict:
    """The summary's ``row_keys``/``cost`` for the merged rows: the ``delrec`` run's own rows, and
    each other row's DELRec cost under the row's name."""
    results = {p.name.removesuffix(".result.json"): json.loads(p.read_text()) for p in folder.glob("*.result.json")}
    first = results.get("delrec", {})
    keys, cost = dict(first.get("row_keys", {})), dict(first.get("cost", {}))
    for row in rows:
        found = results.get(row, {})
        if row not in keys and "delrec" in found.get("row_keys", {}):
            keys[row] = row
            cost[row] = found["cost"][found["row_keys"]["delrec"]]
    return {"row_keys": {k: v for k, v in keys.items() if k in rows}, "cost": cost}


def table(prefix: str, command: str, device: str, report: Path | None = None, rows: list[str] | None = None,
          tag: str | None = None, versus: str | None = None) -> dict:
    """Summarise the seeds that have every one of ``rows`` (default: the main table's rows of the
    most complete seed), on those rows; with ``report``, also the project's report of them (``report.md`` and
    its PNG pictures) in that folder.  ``tag`` names a table of some rows beside the main one
    (``<prefix>.claims.<tag>.json``, keys ``<prefix>.<tag>.*``).  ``versus`` names a row that is
    also tested against every other LLM row (``<versus>_vs_<row>.*``), beside DELRec's tests."""
    from recbole_delrec.evaluation.summary import evidence_records, summarise, summary_table

    seeds = sorted(p for p in (RESULTS / "claims" / prefix).glob("seed-*") if (p / "delrec.records.parquet").is_file())
    with tempfile.TemporaryDirectory() as tmp:
        merged = {p.name: merged_seed(p, Path(tmp) / p.name) for p in seeds}
        main = [set(found) & {*BASELINE_ROWS, *DEFAULT_ROWS} for found in merged.values()]
        wanted = {"delrec", *BASELINE_ROWS, *rows} if rows else max(main, key=len)
        folders = [Path(tmp) / name for name, found in merged.items() if wanted <= set(found)]
        print(f"table of {sorted(wanted)}: {[f.name for f in folders]} "
              f"(without {sorted(set(merged) - {f.name for f in folders})}: rows missing)")
        for folder in folders:  # the same rows in every seed, so the seeds form one table
            _keep_columns(folder, wanted)
        summary = summarise(folders)
        frames = read_frames(folders)
        behaviour = _teacher_agreement(frames) | _hits_by_agreement(frames) | _first_listed(frames)
        if versus:
            behaviour |= _versus(frames, versus)
        if report:
            _report(folders, Path(tmp) / "report", report)
    print(summary_table(summary))
    flat = evidence_records(summary)
    flat.update(_fidelity([p for p in seeds if p.name in {f.name for f in folders}], wanted))
    flat.update(behaviour)
    date = datetime.date.today().isoformat()
    name = f"{prefix}.{tag}" if tag else prefix
    records = [{"metric": f"{name}.{k}", "value": _rounded(k, v), "unit": "", "device": device, "date": date,
                "command": command} for k, v in flat.items() if v is not None and not isinstance(v, (list, dict))]
    (RESULTS / (f"{prefix}.claims.{tag}.json" if tag else f"{prefix}.claims.json")).write_text(
        json.dumps(records, indent=2) + "\n")
    return summary


def _report(folders: list[Path], made: Path, out: Path) -> None:
    """The report of the merged seeds, its Markdown and pictures copied to ``out`` (the
    interactive HTML carries plotly's whole script: made, not kept)."""
    from recbole_delrec.report import write_report

    write_report(folders, made)
    out.mkdir(parents=True, exist_ok=True)
    for path in [made / "report.md", *made.glob("*.png")]:
        shutil.copyfile(path, out / path.name)
    print(f"report: {out / 'report.md'}")


def _keep_columns(folder: Path, rows: set[str]) -> None:
    import pandas as pd

    frame = pd.read_parquet(folder / "records.parquet")
    drop = [c for c in frame.columns if c.startswith(("rank.", "top1.")) and c.split(".", 1)[1] not in rows]
    frame.drop(columns=drop).to_parquet(folder / "records.parquet", index=False)


def read_frames(folders: list[Path]) -> list:
    """Each merged seed's per-user records, in user order (so seeds pair user by user)."""
    import pandas as pd

    return [pd.read_parquet(f / "records.parquet").sort_values("user") for f in folders]


def _top1_rows(frames: list) -> list[str]:
    """The rows that have a top-1 column (every model of the table, the teacher included)."""
    return sorted(c.split(".", 1)[1] for c in frames[0].columns if c.startswith("top1."))


def _teacher_agreement(frames: list) -> dict[str, float]:
    """How often each row's top-1 is the teacher's on the test users: stage 1's fidelity where it
    matters.  Per user over the seeds, with DELRec's sign test against every LLM row; the
    conventional rows' own agreement with the teacher is the yardstick (two models that share
    no distillation, only the data)."""
    import numpy as np

    from recbole_delrec.evaluation.stats import sign_test

    rows = [row for row in _top1_rows(frames) if row != "teacher"]
    agree = {row: np.mean([(f[f"top1.{row}"] == f["top1.teacher"]).to_numpy(float) for f in frames], axis=0)
             for row in rows}
    out = {f"{row}.teacher_agreement": float(values.mean()) for row, values in agree.items()}
    for row in rows:
        if row != "delrec" and row not in BASELINE_ROWS:
            out[f"delrec_vs_{row}.teacher_agreement.pvalue"] = sign_test(agree["delrec"], agree[row]).pvalue
    return out


def _hits_by_agreement(frames: list) -> dict[str, float]:
    """Each model's Hit@1 split in two shares of all test users (they add up to its Hit@1): hits
    where its top-1 is the teacher's (``.from_teacher``: there it scores exactly as the teacher)
    and hits where it differs (``.own``).  Stage 1 distils the teacher's pattern, so this is where
    a gain from distillation would show, per user: a distilled prompt should add ``from_teacher``
    hits, a prompt that only helps the LLM read the task adds ``own`` ones.  Pooled over seeds."""
    import pandas as pd

    pooled = pd.concat(frames, ignore_index=True)
    out = {}
    for row in _top1_rows(frames):
        if row == "teacher":
            continue
        hit = (pooled[f"rank.{row}"] == 1).to_numpy()
        agree = (pooled[f"top1.{row}"] == pooled["top1.teacher"]).to_numpy()
        out[f"{row}.hit@1.from_teacher"] = float((hit & agree).mean())
        out[f"{row}.hit@1.own"] = float((hit & ~agree).mean())
    return out


def _first_listed(frames: list) -> dict[str, float]:
    """Share of test users whose top-1 is the prompt's first-listed candidate, per row over the
    seeds, beside the target's own share (the candidates are shuffled per user): position bias."""
    import numpy as np

    first = [f["candidates"].map(lambda c: c[0]) for f in frames]
    out = {"target.first_listed": float(np.mean([(f["target"] == c).mean() for f, c in zip(frames, first)]))}
    for row in _top1_rows(frames):
        out[f"{row}.first_listed"] = float(np.mean([(f[f"top1.{row}"] == c).mean() for f, c in zip(frames, first)]))
    return out


def _versus(frames: list, reference: str) -> dict[str, float]:
    """``reference`` against every other LLM row (Hit@1 and NDCG@5, users paired on their seed
    means, Holm over these tests): a question the table's DELRec-centred tests do not ask, such
    as whether training helps under another prompt."""
    from recbole_delrec.evaluation.stats import holm_records, paired_test
    from recbole_delrec.evaluation.summary import user_means

    if f"rank.{reference}" not in frames[0]:
        raise SystemExit(f"--versus {reference}: the table has no such row; name it among the table's rows.")
    others = [r for r in _top1_rows(frames) if r not in (reference, *BASELINE_ROWS)]
    tests = {f"{reference}_vs_{row}.{metric}": paired_test(metric, user_means(frames, reference, metric),
                                                           user_means(frames, row, metric), len(frames)).pvalue
             for row in others for metric in ("hit@1", "ndcg@5")}
    return holm_records(tests)


def _fidelity(seeds: list[Path], rows: set[str]) -> dict[str, float]:
    """Stage-1 fidelity before and after distillation, per seed of the table and row of it that
    distilled (a row beside the table stays in its own table's records)."""
    out = {}
    for folder in seeds:
        for row in sorted(rows):
            path = folder / f"{row}.result.json"
            stage1 = (json.loads(path.read_text()).get("stage1_result") or {}) if path.is_file() else {}
            for key in ("fidelity_random", "fidelity_distilled"):
                if key in stage1:
                    out[f"stage1.{row}.{folder.name}.fidelity.{key.split('_')[1]}"] = stage1[key]
    return out


def _rounded(key: str, value: float) -> float:
    return float(f"{value:.3g}") if key.endswith(("pvalue", "pvalue_holm")) else round(float(value), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", help=f"rows to run (default: {' '.join(DEFAULT_ROWS)})")
    parser.add_argument("--seed", type=int, help="run the rows of this seed")
    parser.add_argument("--table", action="store_true", help="only summarise the committed records")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--prefix", default="ml100k.smollm2", help="metric prefix and results file name")
    parser.add_argument("--checkpoint_dir", default="saved/claims", help="cached teachers, soft prompts, LLM")
    parser.add_argument("--from-run", help="the delrec row from this finished run folder of --seed")
    parser.add_argument("--adopt-run", help="keep this finished run of --seed as the one row named, as it is")
    parser.add_argument("--config_files", default="", help="space-separated YAML files for every row (another LLM, say)")
    parser.add_argument("--device-name", default=machine.device_name(), help="the records' device")
    parser.add_argument("--tag", help="with the table of named rows: write <prefix>.claims.<tag>.json, keys <prefix>.<tag>.*")
    parser.add_argument("--report", type=Path, help="with the table: write the report's Markdown and pictures here")
    parser.add_argument("--versus", help="with the table: also test this row against every other LLM row")
    parser.add_argument("--orders", type=int, help="with --seed and --from-run: the candidate-order analysis only")
    args, rest = parser.parse_known_args()
    from recbole_delrec.config import external_values

    extra = external_values(argv=rest)  # --key=value settings of every row, read as RecBole reads them
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    if args.orders is not None:
        if args.seed is None or not args.from_run:
            parser.error("--orders needs --seed and --from-run (that seed's finished delrec run)")
        analyse_orders(args.from_run, args.orders, args.seed, args.dataset, args.prefix, args.config_files.split())
    elif args.adopt_run:
        if args.seed is None or len(args.rows) != 1:
            parser.error("--adopt-run needs --seed and exactly one row")
        adopt_run(args.adopt_run, args.rows[0], args.seed, args.prefix)
    elif args.seed is not None:
        rows = args.rows or DEFAULT_ROWS
        for row in sorted(rows, key=lambda r: r != "delrec"):  # delrec first: it draws the candidates
            if (seed_dir(args.prefix, args.seed) / f"{row}.records.parquet").is_file():
                print(f"{row} of seed {args.seed} is done: skipped")
                continue
            run_row(row, args.seed, args.dataset, args.prefix, args.checkpoint_dir,
                    args.from_run if row == "delrec" else None, args.config_files.split(), extra)
            gc.collect()  # the finished row's LLM sits in reference cycles: free it before the next row
    if args.table or args.seed is None:
        table(args.prefix, command, args.device_name, args.report, args.rows, args.tag, args.versus)


if __name__ == "__main__":
    main()
