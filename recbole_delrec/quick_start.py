"""``run_delrec``: RecBole's ``run_recbole`` for DELRec, with the teacher's row beside it.

Same steps and logging as RecBole's quick start (Config -> dataset -> split -> model ->
trainer.fit -> trainer.evaluate), plus what a DELRec user needs at the end: the teacher
evaluated on exactly the same test candidates, both rows printed side by side, the time
of each stage, and a JSON file of the results under ``checkpoint_dir``.
"""

from __future__ import annotations

import sys
import time
from logging import getLogger
from pathlib import Path
from typing import Any

from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_local_time, get_model, get_trainer, init_logger, init_seed, set_color
from tabulate import tabulate

from recbole_delrec.artifacts import save_json


def run_delrec(
    model: str = "DELRec",
    dataset: str = "ml-100k",
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    saved: bool = True,
) -> dict[str, Any]:
    """Train and test DELRec (teacher, stage 2) and test the teacher on the same candidates."""
    start = time.time()
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    data = create_dataset(config)
    logger.info(data)
    train_data, valid_data, test_data = data_preparation(config, data)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    rec_model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(rec_model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, rec_model)

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    if trainer.stage == "1":
        logger.info(set_color("stage 1 result", "yellow") + f": {trainer.stage1_result}")
        return {"stage1_result": trainer.stage1_result, "timings": trainer.timings}
    test_start = time.time()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    with trainer.scoring_with(rec_model.teacher):
        teacher_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    timings = {**trainer.timings, "test_seconds": time.time() - test_start, "total_seconds": time.time() - start}

    table = side_by_side({config["teacher_model"] + " (teacher)": teacher_result, config["model"]: test_result})
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    logger.info(set_color("test, same candidates", "yellow") + "\n" + table)
    logger.info(set_color("time (s)", "yellow") + ": " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "teacher_test_result": teacher_result,
        "stage1_result": trainer.stage1_result,
        "timings": timings,
    }
    _save_result(config, result)
    return result


def side_by_side(rows: dict[str, dict[str, float]]) -> str:
    """A metric table, one row per model, the way RecBole users compare models."""
    metrics = list(next(iter(rows.values())))
    return tabulate(
        [[name] + [values[m] for m in metrics] for name, values in rows.items()],
        headers=["model"] + metrics, floatfmt=".4f",
    )


def _save_result(config: Config, result: dict[str, Any]) -> Path:
    name = f"{config['model']}-{config['dataset']}-{get_local_time()}-result.json"
    path = save_json({"config": dict(config.final_config_dict), **result}, Path(config["checkpoint_dir"]) / name)
    getLogger().info(set_color("Results", "blue") + f": {path}")
    return path
