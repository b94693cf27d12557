"""Hyper-parameter sweeps of DELRec: Ray Tune (hyperopt TPE, random or grid search, ASHA).

* :func:`parse_search_space` reads RecBole's own hyper-parameter file format (the one
  ``run_hyper.py --params_file`` takes), so one file serves both RecBole's ``HyperTuning``
  and a Ray sweep.
* :func:`objective_function` has RecBole's signature: ``HyperTuning(objective_function, ...)``
  tunes DELRec with hyperopt in one process.
* :func:`run_sweep` runs trials in parallel with Ray Tune (also on a cluster via
  ``ray_address``).  Each trial reports its *validation* metrics after every epoch, so ASHA
  prunes and the search algorithm learns on validation only; test metrics are reported once,
  at the end, and are never used to select.  The teacher is trained once in the driver and
  shared by every trial through its cache in ``checkpoint_dir``; a stage-1 soft prompt is
  distilled by the first trial that needs it (under the cache's file lock,
  :mod:`recbole_delrec.runs.cache`) and reused by the others with the same stage-1 inputs.  At the end a ranked table
  (CSV, JSON), the best configuration (YAML for ``run_delrec.py --config_files``) and a
  plotly HTML plot are written to ``output_dir``.

Ray is pinned to 2.6.3 by RecBole 1.2.1 (``ray<=2.6.3``), hence ``tune.run`` and
``ray.air.session.report``.
"""

from __future__ import annotations

import ast
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from logging import getLogger
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml
from recbole.config import Config
from recbole.utils import get_local_time

from recbole_delrec.compat import plain
from recbole_delrec.config import external_values, hidden_command_line, isolated_config
from recbole_delrec.delrec.quick_start import run_delrec
from recbole_delrec.registry import register
from recbole_delrec.runs.startup import build, prepare_data

SEARCHES = ("hyperopt", "random", "grid")
SCHEDULERS = ("asha", "fifo")
METRIC = "valid_score"
ACCEPTED_FORMS = (
    "'<name> choice [v1, v2, ...]', '<name> uniform <low>,<high>', "
    "'<name> quniform <low>,<high>,<q>', '<name> loguniform <low>,<high>' "
    "(natural-log bounds: the value is exp(uniform(low, high)), as in RecBole); "
    "blank lines and lines starting with '#' are ignored"
)


# ---------------------------------------------------------------------------- search space
def parse_search_space(path: str | Path, grid: bool = False) -> dict[str, Any]:
    """A Ray Tune search space from a RecBole hyper-parameter file.

    One line per parameter, as RecBole's ``HyperTuning`` reads it, so the same file drives
    both tools.  With ``grid=True`` every ``choice`` becomes ``tune.grid_search`` (the other
    forms are still sampled, once per grid point and sample).
    """
    space: dict[str, Any] = {}
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            name, domain = _parse_line(text, grid)
            if name in space:
                raise ValueError(f"'{name}' is defined twice")
        except ValueError as err:
            raise ValueError(f"{path}:{number}: cannot read {text!r} ({err}). Accepted forms: {ACCEPTED_FORMS}.") from None
        space[name] = domain
    if not space:
        raise ValueError(f"{path}: no parameters to search. Accepted forms: {ACCEPTED_FORMS}.")
    return space


def _parse_line(text: str, grid: bool) -> tuple[str, Any]:
    """``(name, domain)`` of one line; ``ValueError`` saying what is wrong with it."""
    from ray import tune

    parts = text.split(maxsplit=2)
    if len(parts) < 3:
        raise ValueError("expected a name, a type and values")
    name, kind, values = parts
    if kind == "choice":
        options = _literal_list(values)
        return name, tune.grid_search(options) if grid else tune.choice(options)
    numbers = _numbers(values, {"uniform": 2, "loguniform": 2, "quniform": 3}.get(kind, 0), kind)
    if numbers[0] >= numbers[1]:
        raise ValueError(f"low {numbers[0]} is not below high {numbers[1]}")
    if kind == "uniform":
        return name, tune.uniform(*numbers)
    if kind == "loguniform":
        return name, tune.loguniform(math.exp(numbers[0]), math.exp(numbers[1]))
    return name, _quantized(*numbers)


def _literal_list(values: str) -> list[Any]:
    """The options of a ``choice``: a non-empty Python list literal (never ``eval``)."""
    try:
        options = ast.literal_eval(values)
    except (ValueError, SyntaxError):
        raise ValueError(f"'{values}' is not a list literal") from None
    if not isinstance(options, (list, tuple)) or not options:
        raise ValueError(f"'{values}' is not a non-empty list")
    return list(options)


def _numbers(values: str, count: int, kind: str) -> list[float]:
    """``count`` comma-separated numbers (an unknown type has ``count`` 0)."""
    if not count:
        raise ValueError(f"unknown type '{kind}'")
    try:
        numbers = [float(v) for v in values.replace(" ", "").split(",")]
    except ValueError:
        raise ValueError(f"'{values}' is not {count} comma-separated numbers") from None
    if len(numbers) != count:
        raise ValueError(f"'{kind}' takes {count} comma-separated numbers, got {len(numbers)}")
    return numbers


def _quantized(low: float, high: float, q: float) -> Any:
    """``quniform``; integers when all three are whole numbers (``history_length 3``, not 3.0)."""
    from ray import tune

    if q <= 0:
        raise ValueError(f"q must be positive, got {q}")
    if all(float(v).is_integer() for v in (low, high, q)):
        return tune.qrandint(int(low), int(high), int(q))
    return tune.quniform(low, high, q)


# ---------------------------------------------------------------------------- values
def plain_value(value: Any) -> Any:
    """``value`` as YAML/JSON data (NumPy scalars included): what configs may hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    return plain(value)


def whole_numbers(params: Mapping[str, Any]) -> dict[str, Any]:
    """Floats such as hyperopt's ``quniform`` 3.0 as ints: a history length must index lists."""
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in params.items()}


def _model_and_dataset(values: Mapping[str, Any], config_file_list: Sequence[str] | None) -> tuple[str, str]:
    """Model and data set named in ``config_dict`` or the files, as RecBole looks them up."""
    merged = {**external_values(config_file_list), **values}
    return merged.get("model", "DELRec"), merged.get("dataset", "ml-100k")


#: What every trial sets unless told otherwise: a sweep chooses by validation, so each trial
#: validates after every epoch (the default budget's ``eval_step: 0`` would leave it blind).
SWEEP = {"eval_step": 1}


# ---------------------------------------------------------------------------- RecBole HyperTuning
def objective_function(config_dict: dict[str, Any] | None = None, config_file_list: list[str] | None = None,
                       saved: bool = True) -> dict[str, Any]:
    """RecBole's ``objective_function`` for DELRec: ``HyperTuning(objective_function, ...)``.

    Runs :func:`~recbole_delrec.delrec.quick_start.run_delrec` with the command line hidden (the
    tuning script's own flags are no configuration) and returns RecBole's result dict.
    """
    values = {**SWEEP, **whole_numbers(dict(config_dict or {}))}
    model, dataset = _model_and_dataset(values, config_file_list)
    with hidden_command_line():
        result = run_delrec(model, dataset, config_file_list, values, saved)
    keys = ("best_valid_score", "valid_score_bigger", "best_valid_result", "test_result")
    return {"model": model, **{k: result[k] for k in keys}}


# ---------------------------------------------------------------------------- one Ray trial
def train_trial(params: dict[str, Any], model: str, dataset: str, base: dict[str, Any]) -> None:
    """Ray trainable: one DELRec run with ``base`` + ``params``, reporting as it goes.

    Every value comes through ``base``/``params`` (the worker's command line is hidden).
    After each validation it reports ``valid_score`` and the validation metrics (ASHA prunes
    on them); only at the end are the test metrics reported, once.
    """
    from ray.air import session

    values = {**SWEEP, **base, **_device_values(base), **whole_numbers(plain_value(params))}
    register()
    config = isolated_config(model, dataset, values)
    _set_threads()
    started = build(config)
    trainer, (train_data, valid_data, test_data) = started.trainer, started.splits
    callback = _validation_reporter(trainer, session.report)
    best_score, best_result = trainer.fit(train_data, valid_data, verbose=False, saved=True,
                                          show_progress=config["show_progress"], callback_fn=callback)
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
    stage1 = {k: v for k, v in (getattr(trainer, "stage1_result", None) or {}).items() if isinstance(v, (int, float))}
    session.report({METRIC: best_score, "best_valid_score": best_score, "best_valid": dict(best_result),
                    "test": dict(test_result), "stage1": stage1})


def _device_values(base: Mapping[str, Any]) -> dict[str, Any]:
    """The GPU Ray gave this trial, or none: RecBole would otherwise pin every trial to ``gpu_id`` 0."""
    import ray

    gpus = [str(g) for g in ray.get_gpu_ids()]
    if not gpus:
        return {"use_gpu": False}
    return {"use_gpu": base.get("use_gpu", True), "gpu_id": ",".join(gpus)}


def _set_threads() -> None:
    """Torch threads = the CPUs Ray reserved for the trial, so parallel trials do not oversubscribe."""
    import torch
    from ray.air import session

    cpus = session.get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))


def _validation_reporter(trainer: Any, report: Callable[[dict], None]) -> Callable[[int, float], None]:
    """``callback_fn`` for RecBole's ``fit``: report this epoch's validation (and the best so far).

    RecBole's callback only receives the score; the epoch's metrics are the last entry of the
    trainer's ``valid_history``.
    """
    def callback(epoch_idx: int, valid_score: float) -> None:
        report({"epoch": epoch_idx + 1, METRIC: valid_score, "valid": dict(trainer.valid_history[-1]),
                "best_valid_score": trainer.best_valid_score, "best_valid": dict(trainer.best_valid_result or {})})

    return callback


# ---------------------------------------------------------------------------- driver
def prepare_sweep(model: str, dataset: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], Config]:
    """Trial base values (absolute paths) and the driver's config; trains the teacher once.

    Trials run in other directories (and maybe on other machines), so ``data_path`` and
    ``checkpoint_dir`` become absolute; every trial then finds the teacher this driver
    trained in the ``checkpoint_dir`` cache instead of training its own, concurrently.
    """
    from recbole_delrec.teacher import load_or_train_teacher

    register()
    config = isolated_config(model, dataset, values)
    if "stage" in config and str(config["stage"]) == "1":
        raise ValueError("A sweep ranks trials by their stage-2 validation score: set `stage` to 'all' or '2'.")
    base = dict(values)
    base["data_path"] = os.path.abspath(os.path.dirname(os.path.normpath(config["data_path"])))
    base["checkpoint_dir"] = os.path.abspath(config["checkpoint_dir"])
    config = isolated_config(model, dataset, base)
    train_data, valid_data, _ = prepare_data(config)
    load_or_train_teacher(config, train_data, valid_data)
    return base, config


@contextmanager
def ray_instance(address: str | None) -> Iterator[None]:
    """Ray connected (``address``) or started locally, and always shut down afterwards."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address) if address else ray.init(include_dashboard=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _search_alg(search: str, seed: int) -> Any:
    """TPE (hyperopt) or Ray's random/grid variant generator, seeded."""
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.hyperopt import HyperOptSearch

    if search == "hyperopt":
        return HyperOptSearch(random_state_seed=seed)
    return BasicVariantGenerator(random_state=seed)


def _scheduler(scheduler: str, max_epochs: int) -> Any:
    """ASHA on the validation score (epochs as time), or FIFO (every trial runs to the end).

    ``stop_last_trials=False``: a trial that reaches ``max_t`` still reports its test metrics.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epoch", max_t=max(1, max_epochs), grace_period=1, reduction_factor=2,
                         stop_last_trials=False)


def run_sweep(
    model: str = "DELRec",
    dataset: str = "ml-100k",
    space_file: str | Path = "properties/tune/DELRec.hyper",
    samples: int | None = None,
    search: str = "hyperopt",
    scheduler: str = "asha",
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    ray_address: str | None = None,
    config_file_list: Sequence[str] | None = None,
    config_dict: Mapping[str, Any] | None = None,
    output_dir: str | Path | None = None,
    max_concurrent_trials: int | None = None,
    verbose: int = 1,
) -> pd.DataFrame:
    """Sweep DELRec's hyper-parameters with Ray Tune; returns the ranked trial table.

    ``samples``: trials for hyperopt/random (default 10), repeats of the whole grid for grid
    (default 1).  Failed trials are kept as ``ERROR`` rows; the sweep goes on.
    """
    from ray import tune

    _check_choice(search, SEARCHES, "search")
    _check_choice(scheduler, SCHEDULERS, "scheduler")
    space = parse_search_space(space_file, grid=search == "grid")
    samples = samples or (1 if search == "grid" else 10)
    output = Path(output_dir or Path("saved") / "sweeps" / f"{model}-{dataset}-{get_local_time()}").absolute()
    values = external_values(config_file_list, config_dict)
    with ray_instance(ray_address):
        base, config = prepare_sweep(model, dataset, values)
        mode = "max" if config["valid_metric_bigger"] else "min"
        analysis = tune.run(
            tune.with_parameters(train_trial, model=model, dataset=dataset, base=base),
            name=output.name, config=space, num_samples=samples, metric=METRIC, mode=mode,
            search_alg=_search_alg(search, config["seed"]), scheduler=_scheduler(scheduler, config["epochs"]),
            resources_per_trial={"cpu": cpus_per_trial, "gpu": gpus_per_trial},
            storage_path=str(output / "ray"), raise_on_failed_trial=False, verbose=verbose,
            max_concurrent_trials=max_concurrent_trials,
        )
    table = sweep_table(analysis.trials, list(space), mode == "max")
    save_sweep(table, base, list(space), output, config["valid_metric"])
    return table


def _check_choice(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} '{value}' is not one of {list(allowed)}.")


# ---------------------------------------------------------------------------- results
def sweep_table(trials: Sequence[Any], params: list[str], bigger: bool) -> pd.DataFrame:
    """One row per trial, best validation score first (errors last); never ranked on test."""
    rows = [_trial_row(t, params) for t in trials]
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["trial_id", "status", *params, METRIC, "error"])
    table = table.sort_values(METRIC, ascending=not bigger, na_position="last", kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def _trial_row(trial: Any, params: list[str]) -> dict[str, Any]:
    """Status, parameters, best validation metrics, test metrics and error of one trial."""
    result = trial.last_result or {}
    status = trial.status
    if status == "TERMINATED" and "test" not in result:
        status = "PRUNED"
    row = {"trial_id": trial.trial_id, "status": status}
    row.update({p: plain_value(trial.config.get(p)) for p in params})
    row[METRIC] = np.nan if status == "ERROR" else plain_value(result.get("best_valid_score", np.nan))
    row.update({f"valid/{k}": v for k, v in (result.get("best_valid") or {}).items()})
    row.update({f"test/{k}": v for k, v in (result.get("test") or {}).items()})
    row.update({f"stage1/{k}": v for k, v in (result.get("stage1") or {}).items()})
    row["epochs"] = result.get("epoch", np.nan) if "test" not in result else _epochs_run(trial)
    row["error"] = _error_line(trial) if trial.status == "ERROR" else ""
    return row


def _epochs_run(trial: Any) -> float:
    """Epochs a finished trial validated (its final report carries no epoch)."""
    return trial.metric_analysis.get("epoch", {}).get("max", np.nan)


def _error_line(trial: Any) -> str:
    """The exception line of a failed trial ("ValueError: ..."), for the table."""
    path = getattr(trial, "error_file", None)
    if not path or not os.path.isfile(path):
        return "error (no error file)"
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines()]
    errors = [line for line in lines if line and ("Error" in line.split(":")[0] or "Exception" in line.split(":")[0])]
    return (errors or [line for line in lines if line] or ["error"])[-1][:300]


def save_sweep(table: pd.DataFrame, base: Mapping[str, Any], params: list[str], output: Path,
               valid_metric: str) -> dict[str, Path]:
    """Print the table; write it (CSV, JSON), the best config (YAML) and the plot (HTML)."""
    from tabulate import tabulate

    output.mkdir(parents=True, exist_ok=True)
    shown = table.drop(columns=["error"]).copy()
    print(tabulate(shown, headers="keys", showindex=False, floatfmt=".4f"))
    for row in table[table["status"] == "ERROR"].itertuples():
        print(f"trial {row.trial_id} failed: {row.error}")
    paths = {"csv": output / "trials.csv", "json": output / "trials.json", "html": output / "sweep.html"}
    table.to_csv(paths["csv"], index=False)
    records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    paths["json"].write_text(json.dumps(plain_value(records), indent=2) + "\n", encoding="utf-8")
    plot_sweep(table, params, paths["html"], valid_metric)
    finished = table[table["status"] != "ERROR"].dropna(subset=[METRIC])
    if len(finished):
        paths["yaml"] = write_best_config(base, finished.iloc[0], params, output / "best_config.yaml")
    else:
        getLogger().warning("No trial finished: no best configuration written.")
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
    return paths


def write_best_config(base: Mapping[str, Any], best: pd.Series, params: list[str], path: Path) -> Path:
    """``base`` + the best trial's parameters as YAML, plain values only.

    ``run_delrec.py --config_files <path>`` (with the sweep's ``--model``/``--dataset``)
    then reproduces the best trial, reusing the cached teacher.
    """
    values = plain_value({**base, **whole_numbers({p: best[p] for p in params})})
    header = (f"# Best trial {best['trial_id']} of a DELRec sweep: {METRIC}={best[METRIC]:.4f}\n"
              f"# python run_delrec.py --model=<model> --dataset=<dataset> --config_files={path}\n")
    path.write_text(header + yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return path


def plot_sweep(table: pd.DataFrame, params: list[str], path: Path, valid_metric: str) -> Path:
    """A self-contained HTML plot: the validation score of each trial against each parameter."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    done = table.dropna(subset=[METRIC])
    fig = make_subplots(rows=1, cols=len(params), shared_yaxes=True, subplot_titles=params)
    for col, param in enumerate(params, start=1):
        fig.add_trace(go.Scatter(
            x=done[param].astype(str) if done[param].dtype == object else done[param], y=done[METRIC],
            mode="markers", text=done["trial_id"] + " (" + done["status"] + ")", showlegend=False,
            marker={"size": 10, "color": done["status"].eq("PRUNED").map({True: "grey", False: "royalblue"})},
        ), row=1, col=col)
    fig.update_yaxes(title_text=f"{METRIC} ({valid_metric}, validation)", row=1, col=1)
    fig.update_layout(title=f"DELRec sweep: {len(table)} trials ({(table['status'] == 'ERROR').sum()} failed, "
                            f"grey = pruned by ASHA)")
    fig.write_html(path, include_plotlyjs=True)
    return path
