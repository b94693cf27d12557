"""``run_tslrec``: one backbone, three item representations, one split, one table.

Like RecBole's ``run_recbole`` (Config -> dataset -> split -> model -> trainer.fit ->
trainer.evaluate), but the data set is loaded and split once and the backbone is trained
three times on it, with everything else equal (seed, batch order, backbone settings):

* ``base``: the plain backbone;
* ``ci``: plus a learned embedding of each item's pre-grouping cluster;
* ``tslrec``: plus the gated, knowledge-enhanced embedding from the LLM.

The rows are printed side by side with RecBole's metric names and saved as JSON under
``checkpoint_dir``.  The knowledge-enhanced embeddings (and the teacher) are artefacts: a
second run, with this backbone or another, reuses them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from logging import getLogger
from pathlib import Path
from typing import Any

from recbole.config import Config
from recbole.utils import get_local_time, init_seed, set_color

from recbole_delrec.config import check_config_files
from recbole_delrec.runs.artifacts import save_json
from recbole_delrec.tslrec.model import VARIANTS, TSLRec
from recbole_delrec.registry import register
from recbole_delrec.runs.startup import prepare_data
from recbole_delrec.runs.tables import side_by_side
from recbole_delrec.tslrec.trainer import TSLRecTrainer

ROW_NAMES = {"base": "{}", "ci": "{} + CI", "tslrec": "{} + TSLRec"}


def run_tslrec(
    dataset: str = "ml-100k",
    backbone: str = "SASRec",
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    variants: Sequence[str] = VARIANTS,
    saved: bool = True,
) -> dict[str, Any]:
    """Train and test ``backbone`` as ``base``, ``ci`` and ``tslrec`` on the same split.

    Returns one RecBole test-result dict per variant (keys ``base``/``ci``/``tslrec``), and
    ``llm_seconds_per_epoch``: the time of one SFT epoch, LLM forward and backward only
    (from the artefact when the knowledge was reused; ``None`` without the tslrec variant).
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants {list(variants)} must be a non-empty selection of {list(VARIANTS)}.")
    start = time.time()
    register()
    check_config_files(config_file_list)
    config = Config(model="TSLRec", dataset=dataset, config_file_list=config_file_list,
                    config_dict={**(config_dict or {}), "backbone": backbone})
    train_data, valid_data, test_data = prepare_data(config)
    logger = getLogger()

    name = config["backbone"]
    out: dict[str, Any] = {"valid": {}, "timings": {}, "llm_seconds_per_epoch": None,
                           "llm_calls": {"sft": 0, "augment": 0}, "knowledge": None}
    for variant in variants:
        config["tslrec_variant"] = variant
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        train_data.generator.manual_seed(config["seed"])  # the same batch order for every variant
        model = TSLRec(config, train_data._dataset).to(config["device"])
        logger.info(model)
        trainer = TSLRecTrainer(config, model)
        trainer.saved_model_file = str(
            Path(config["checkpoint_dir"]) / f"TSLRec-{name}-{variant}-{get_local_time()}.pth"
        )
        _, best_valid = trainer.fit(train_data, valid_data, saved=saved, show_progress=config["show_progress"])
        test_start = time.time()
        out[variant] = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
        out["valid"][variant] = best_valid
        out["timings"][variant] = {**trainer.timings, "test_seconds": time.time() - test_start}
        if variant == "tslrec":
            out["knowledge"] = trainer.knowledge_info
            out["llm_calls"] = trainer.llm_calls
            out["llm_seconds_per_epoch"] = trainer.knowledge_info.get("llm_seconds_per_epoch")
    out["timings"]["total_seconds"] = time.time() - start

    table = side_by_side({ROW_NAMES[v].format(name): out[v] for v in variants})
    out["table"] = table
    logger.info(set_color(f"test, {config['dataset']}, full ranking", "yellow") + "\n" + table)
    print(table)
    if out["llm_seconds_per_epoch"] is not None:
        reused = " (from the reused artefact)" if out["knowledge"].get("reused") else ""
        logger.info(set_color("SFT", "yellow") + f": {out['llm_seconds_per_epoch']:.2f} s of LLM per epoch{reused}")
    path = save_json({"config": dict(config.final_config_dict), **out},
                     Path(config["checkpoint_dir"]) / f"TSLRec-{name}-{config['dataset']}-{get_local_time()}-result.json")
    logger.info(set_color("Results", "blue") + f": {path}")
    return out


