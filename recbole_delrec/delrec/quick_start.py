"""``run_delrec``: RecBole's ``run_recbole`` for DELRec, with the teacher's and baselines' rows.

Same steps and logging as RecBole's quick start (Config -> dataset -> split -> model ->
trainer.fit -> test), plus what a DELRec user needs at the end: the teacher and every
``baselines`` model scored on exactly the same test candidates (one scoring function,
:meth:`DELRecTrainer.score`), all rows printed side by side with what each cost, the run's
candidate sets and per-user records saved, and the run's folder (see
:mod:`recbole_delrec.runs.folder`).  ``load`` evaluates a
finished run folder without training, ``resume`` continues an interrupted one, and
``explain`` prints one user's prompt and both rankings.
"""

from __future__ import annotations

import gc
import sys
import time
from logging import getLogger
from pathlib import Path
from typing import Any

from recbole.config import Config
from recbole.utils import get_local_time, set_color

from recbole_delrec import distributed
from recbole_delrec.config import check_config_files, external_values, hidden_command_line, isolated_config
from recbole_delrec.delrec.explain import explain as explain_user
from recbole_delrec.evaluation.baselines import baseline_key, baseline_names, load_or_train_baseline
from recbole_delrec.evaluation.cost import COST_FORMATS, cost_columns, model_cost
from recbole_delrec.evaluation.records import build_records, prompt_history_lengths, save_records
from recbole_delrec.evaluation.scoring import Scored
from recbole_delrec.evaluation.seeds import seeds_of
from recbole_delrec.evaluation.summary import summarise, summary_table
from recbole_delrec.registry import register
from recbole_delrec.runs.artifacts import save_json
from recbole_delrec.runs.folder import RunDirectory
from recbole_delrec.runs.startup import Started, build
from recbole_delrec.runs.tables import side_by_side
from recbole_delrec.teacher import teacher_class, teacher_config


def run_delrec(
    model: str = "DELRec",
    dataset: str = "ml-100k",
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    saved: bool = True,
    load: str | None = None,
    resume: str | None = None,
    explain: str | None = None,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str = "5678",
    group_offset: int = 0,
) -> dict[str, Any]:
    """Train (or ``load``/``resume``) and test DELRec, and test the teacher on the same candidates.

    A ``seeds`` setting (a count or a list) runs the whole pipeline once per seed instead and
    returns :func:`run_seeds`' summary (``run_dirs``,
    ``summary_dir``, ``metrics``, ...).

    ``nproc``/``world_size``/``ip``/``port``/``group_offset`` are RecBole's distributed options
    (its ``run``): ``nproc`` processes on this machine, ``world_size`` in all, rank 0's result
    returned.  Each process uses one GPU of ``gpu_id`` (NCCL), or the CPU (gloo).
    """
    if (nproc > 1 or world_size > 0) and "local_rank" not in (config_dict or {}):
        if external_values(config_file_list, config_dict, sys.argv[1:]).get("seeds") is not None:
            raise ValueError("`seeds` with `nproc`/`world_size`: the seeds run one after another in one "
                             "process; drop --nproc (or run each --seed=S with --nproc on its own).")
        distributed_values = {"world_size": world_size if world_size > 0 else nproc, "ip": ip, "port": port,
                              "nproc": nproc, "offset": group_offset}
        run_kwargs = dict(model=model, dataset=dataset, config_file_list=config_file_list, saved=saved,
                          load=load, resume=resume, explain=explain)
        return _spawn(nproc, {**(config_dict or {}), **distributed_values}, run_kwargs)
    start = time.time()
    register()
    check_config_files(config_file_list)
    if resume:
        RunDirectory.resumable(resume)  # before the data and the LLM load
    logger = getLogger()
    if load:
        started = load_run(load, model, dataset, config_file_list, config_dict)
        best_valid_score, best_valid_result = None, None
    else:
        config = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                        config_dict=dict(config_dict or {}))
        seeds = seeds_of(config)
        if seeds:  # the whole pipeline once per seed; its summary is the result
            return run_seeds(seeds, model, dataset, config_file_list, config_dict)
        started = build(config)
        if resume:
            started.trainer.resume_checkpoint(resume)
        best_valid_score, best_valid_result = started.trainer.fit(
            started.train_data, started.valid_data, saved=saved, show_progress=config["show_progress"]
        )
        if started.trainer.stage == "1":
            logger.info(set_color("stage 1 result", "yellow") + f": {started.trainer.stage1_result}")
            return {"stage1_result": started.trainer.stage1_result, "timings": started.trainer.timings}
    config, trainer, test_data = started.config, started.trainer, started.test_data
    if saved or load:
        trainer.load_checkpoint(trainer.saved_model_file)
    models = _models(started)
    scored = _score_all(trainer, models, test_data, config["show_progress"])
    writer = config["local_rank"] == 0  # one writer per machine, as for every run file
    out = trainer.run.new_evaluation(config) if load and writer else trainer.run
    rows = {_row_name(config, key, model): scored[key].result for key, model in models.items()}
    cost = {_row_name(config, key, model): _cost(trainer, key, model, len(scored[key].users)) for key, model in models.items()}
    timings = {**trainer.timings, "test_seconds": trainer.costs.seconds["test.delrec"],
               "teacher_test_seconds": trainer.costs.seconds["test.teacher"], "total_seconds": time.time() - start}
    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "valid_history": trainer.valid_history,
        "loss_history": trainer.loss_history,
        "test_result": scored["delrec"].result,
        "teacher_test_result": scored["teacher"].result,
        "rows": rows,
        "cost": cost,
        "row_keys": {key: _row_name(config, key, model) for key, model in models.items()},
        "stage1_result": getattr(trainer, "stage1_result", {}),
        "timings": timings,
        "run_dir": str(out.path),
        "records": str(out.records),
        "test_users": len(test_data._dataset),
        "eval_mode": config["eval_args"]["mode"]["test"],
    }
    _report(config, result)
    sets = None if _full_ranking(config) else trainer.candidate_sets(test_data._dataset)
    shown = prompt_history_lengths(started.model, test_data, sets)
    if writer:
        _save_evaluation(started, models, scored, shown, out)
        save_json(result, out.result)
    if explain is not None:
        rec_model = started.model
        sets = trainer.candidate_sets(test_data._dataset)
        result["explanation"] = explain_user(rec_model, test_data, str(explain), sets).render(rec_model.item_text.titles)
        logger.info("\n" + result["explanation"])
    return result


def run_seeds(seeds: list[int], model: str = "DELRec", dataset: str = "ml-100k",
              config_file_list: list[str] | None = None, config_dict: dict[str, Any] | None = None,
              argv: list[str] | None = None) -> dict[str, Any]:
    """:func:`run_delrec` once per seed, then :func:`summarise` into ``<checkpoint_dir>/evidence-<dataset>-<time>``.

    Each seed is a complete run with ``seed`` set, so each writes its own run folder, and the
    teacher and stage-1 caches, keyed by the seed among their settings, are reused by a second
    invocation.  ``argv`` (default: the command line) holds ``--key=value`` overrides for every
    seed; ``--seed`` itself is replaced by each seed.
    """
    values = external_values(config_file_list, config_dict, argv=sys.argv[1:] if argv is None else argv)
    values.pop("seeds", None)
    run_dirs = []
    for seed in seeds:
        getLogger().info(f"seed {seed} ({len(run_dirs) + 1} of {len(seeds)})")
        with hidden_command_line():  # every value is in config_dict; the seed must win
            result = run_delrec(model=model, dataset=dataset, config_dict={**values, "seed": seed})
        run_dirs.append(result["run_dir"])
        gc.collect()  # a finished run's LLM sits in reference cycles: free it before the next seed builds one
    checkpoint_dir = isolated_config(model, dataset, values)["checkpoint_dir"]
    out = Path(checkpoint_dir) / f"evidence-{dataset}-{get_local_time()}"
    summary = summarise(run_dirs, out)
    getLogger().info("\n" + summary_table(summary) + f"\nsummary: {out / 'summary.json'}")
    return {**summary, "summary_dir": str(out)}


def _spawn(nproc: int, config_dict: dict[str, Any], run_kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """RecBole's ``run``: ``nproc`` spawned processes of :func:`run_delrec`, rank 0's result back."""
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_run_rank, args=(config_dict, run_kwargs, queue), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def _run_rank(rank: int, config_dict: dict[str, Any], run_kwargs: dict[str, Any], queue) -> None:
    result = run_delrec(config_dict={**config_dict, "local_rank": rank}, **run_kwargs)
    distributed.finish()
    if rank == 0:
        queue.put(result)


def load_run(
    run_dir: str,
    model: str = "DELRec",
    dataset: str = "ml-100k",
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
) -> Started:
    """A finished run folder, rebuilt through the one start-up with nothing trained.

    The run's own values (and its scratch LLM) come first; ``config_file_list``,
    ``config_dict`` and the command line win over them.
    """
    register()
    values = {**RunDirectory.open(run_dir).user_values(), **_loaded_llm(run_dir), **(config_dict or {})}
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=values)
    started = build(config)
    _attach_finished_run(started.model, started.trainer, config, run_dir, started.train_data._dataset)
    return started


def _loaded_llm(load: str) -> dict[str, Any]:
    """A scratch-T5 run carries its frozen LLM in its folder: load that one (float32, as it was
    built), same adapters."""
    run = RunDirectory.open(load)
    if not run.llm.is_dir():
        return {}
    final = run.final_values()
    return {"llm_path": str(run.llm), "llm_dtype": "float32",
            "adalora": {**final["adalora"], **(final.get("scratch_adalora") or {})}}


def _attach_finished_run(rec_model, trainer, config: Config, load: str, train_dataset) -> None:
    """Teacher and trainer pointed at a finished run folder, nothing trained."""
    run = RunDirectory.open(load)
    teacher = teacher_class(config["teacher_model"])(teacher_config(config), train_dataset)
    teacher.load_state_dict(run.teacher_state())
    rec_model.attach_teacher(teacher.to(config["device"]).eval())
    trainer.run = run
    trainer.saved_model_file = str(run.best)


def _models(started: Started) -> dict[str, Any]:
    """The rows of the test table, by key: the teacher, each baseline (trained or reused), DELRec."""
    config, trainer = started.config, started.trainer
    models = {"teacher": started.model.teacher}
    for name in baseline_names(config):
        trainer.costs.start()
        models[baseline_key(name)] = load_or_train_baseline(config, name, started.train_data, started.valid_data)
        trainer.costs.stop(f"train.{baseline_key(name)}")
    models["delrec"] = started.model
    return models


def _score_all(trainer, models: dict[str, Any], test_data, show_progress: bool) -> dict[str, Scored]:
    """Every model on the same test candidates (or the catalogue), each test timed."""
    scored = {}
    for key in ("delrec", *[k for k in models if k != "delrec"]):
        trainer.costs.start()
        scored[key] = trainer.score(models[key], test_data, show_progress=show_progress and key == "delrec")
        trainer.costs.stop(f"test.{key}")
    return {key: scored[key] for key in models}


def _full_ranking(config: Config) -> bool:
    return config["eval_args"]["mode"]["test"] == "full"


def _row_name(config: Config, key: str, model) -> str:
    if key == "teacher":
        return f"{config['teacher_model']} (teacher)"
    return config["model"] if key == "delrec" else type(model).__name__


#: The training stages of each kind of row (keys of ``trainer.costs``).
TRAIN_STAGES = {"teacher": ["teacher"], "delrec": ["stage1", "stage2"]}


def _cost(trainer, key: str, model, n_users: int) -> dict[str, Any]:
    return model_cost(TRAIN_STAGES.get(key, [f"train.{key}"]), trainer.costs, f"test.{key}", n_users, model)


def _save_evaluation(started: Started, models: dict[str, Any], scored: dict[str, Scored], shown: dict[int, int],
                     out: RunDirectory) -> None:
    """The evaluation's candidate sets and per-user records, atomically, in ``out`` (the run's
    folder, or a ``--load``'s evaluation folder inside it)."""
    config, trainer = started.config, started.trainer
    full = _full_ranking(config)
    test = started.test_data._dataset
    sets = trainer.candidate_sets(test)
    if not full:
        sets.cover(started.valid_data._dataset, "valid")
        sets.cover(test, "test")
        sets.save(out.candidates, test)
    frame = build_records(test, started.train_data._dataset, scored, shown, full)
    save_records(out.path, frame, {
        "models": {key: type(model).__name__ for key, model in models.items()},
        "mode": config["eval_args"]["mode"]["test"], "n_candidates": config["n_candidates"],
        "seed": config["seed"], "dataset": config["dataset"], "topk": list(config["topk"]),
        "metrics": [m.lower() for m in config["metrics"]],
    })


def _report(config: Config, result: dict[str, Any]) -> None:
    logger = getLogger()
    table = side_by_side(
        {name: {**metrics, **cost_columns(result["cost"][name])} for name, metrics in result["rows"].items()},
        formats=COST_FORMATS,
    )
    logger.info(set_color("best valid ", "yellow") + f": {result['best_valid_result']}")
    logger.info(set_color("test result", "yellow") + f": {result['test_result']}")
    logger.info(set_color("test, same candidates", "yellow") + "\n" + table)
    logger.info(set_color("time (s)", "yellow") + ": " + ", ".join(f"{k}={v:.1f}" for k, v in result["timings"].items()))
    logger.info(set_color("run folder", "blue") + f": {result['run_dir']}")
