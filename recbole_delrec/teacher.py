"""The teacher: a conventional RecBole sequential model whose pattern DELRec distils.

Any RecBole sequential model works by name (``teacher_model``).  It is trained with RecBole's
own ``Trainer`` on the training split only (early stopping on the validation split, full
ranking), or loaded from a RecBole checkpoint (``teacher_checkpoint``).  A trained teacher is
cached under ``checkpoint_dir`` (:mod:`recbole_delrec.runs.cache`: its whole RecBole config and
the training split make the key) and reused by the next run with the same data and settings
instead of being retrained.  Any other RecBole sequential model (a baseline) is trained and
cached the same way through ``model_name``/``settings``.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Mapping
from logging import getLogger
from pathlib import Path

import torch
from recbole.config import Config
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader
from recbole.data.interaction import Interaction
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import get_model, get_trainer, init_seed, set_color

from recbole_delrec.config import isolated_config
from recbole_delrec.runs.artifacts import file_identity, load_tensors, save_tensors
from recbole_delrec.runs.cache import artifact_key, artifact_path, load_or_make, split_fingerprint

GENERAL_KEYS = ("seed", "reproducibility", "use_gpu", "gpu_id", "state", "show_progress",
                "worker", "checkpoint_dir")
#: Settings that do not change the trained teacher (left out of its cache key).
NOT_SHAPING = {"state", "show_progress", "gpu_id", "device", "checkpoint_dir", "worker", "use_gpu"}
TEACHER_DEFAULTS = {
    "train_neg_sample_args": None,
    "loss_type": "CE",
    "metrics": ["Hit", "NDCG", "MRR"],
    "topk": [10],
    "valid_metric": "NDCG@10",
}


def teacher_class(name: str) -> type[SequentialRecommender]:
    """The RecBole model class called ``name``; a clear error if it is no sequential model."""
    try:
        cls = get_model(name)
    except (ValueError, AttributeError, ImportError):  # RecBole imports optional libraries while looking
        cls = None
    if cls is None or not issubclass(cls, SequentialRecommender):
        raise ValueError(
            f"teacher_model '{name}' is not a RecBole sequential model: use one such as "
            f"SASRec, GRU4Rec, Caser, NARM, STAMP, BERT4Rec or NextItNet."
        )
    return cls


def teacher_config(config: Config, model_name: str | None = None, settings: Mapping | None = None) -> Config:
    """The RecBole config of a model trained like the teacher: DELRec's data settings plus ``settings``.

    ``model_name``/``settings`` default to ``teacher_model``/``teacher_config``; a baseline
    passes its own and is trained on the same split, the same way.
    """
    name = model_name or config["teacher_model"]
    teacher_class(name)
    return isolated_config(name, config["dataset"], teacher_values(config, settings))


def teacher_values(config: Config, settings: Mapping | None = None) -> dict:
    """The explicit values of :func:`teacher_config`: every value of its RecBole config that is
    not RecBole's own default for the model."""
    values = {k: config[k] for k in GENERAL_KEYS}
    values.update({k: config[k] for k in config.parameters["Dataset"] if k in config})
    values["data_path"] = os.path.dirname(os.path.normpath(config["data_path"]))
    values["eval_args"] = {**config["eval_args"], "mode": "full"}
    values.update(TEACHER_DEFAULTS)
    values.update((config["teacher_config"] if settings is None else settings) or {})
    return values


def teacher_file(config: Config, tconfig: Config, dataset) -> Path:
    """Where a model trained like the teacher is cached: its whole RecBole config (less what
    does not shape it) and the training split make the key."""
    values = {k: v for k, v in tconfig.final_config_dict.items() if k not in NOT_SHAPING}
    key = artifact_key("teacher", values, split_fingerprint(dataset))
    return artifact_path(config["checkpoint_dir"], "teacher", (config["dataset"], tconfig["model"]), key)


def teacher_identity(config: Config) -> dict:
    """The teacher an artefact is distilled from, for that artefact's key, read from DELRec's
    config alone: the model, the data set and the explicit values of its config (RecBole's
    defaults for the model fill in the rest), less what does not shape it; and, when loaded
    from one, the ``teacher_checkpoint`` file (the same weights under other settings are
    another teacher).  The training split is not here: the teacher trains on the artefact's
    own split, which the artefact's key holds."""
    checkpoint = config["teacher_checkpoint"]
    values = {k: v for k, v in teacher_values(config).items() if k not in NOT_SHAPING}
    return {"model": config["teacher_model"], "dataset": config["dataset"], "values": values,
            "checkpoint": file_identity(checkpoint) if checkpoint else None}


def load_or_train_teacher(
    config: Config, train_data, valid_data, model_name: str | None = None, settings: Mapping | None = None
) -> SequentialRecommender:
    """The frozen teacher (or a baseline trained like it): loaded, reused from cache, or trained now.

    ``teacher_checkpoint`` is the teacher's only (``model_name`` None); every other model
    is trained on the training split once and reused from ``checkpoint_dir`` afterwards.
    """
    tconfig = teacher_config(config, model_name, settings)
    dataset = train_data._dataset
    init_seed(tconfig["seed"], tconfig["reproducibility"])
    model = teacher_class(tconfig["model"])(tconfig, dataset).to(tconfig["device"])
    if model_name is None and config["teacher_checkpoint"]:
        _load_recbole_checkpoint(model, config["teacher_checkpoint"], config["trust_teacher_checkpoint"])
    else:
        cache = teacher_file(config, tconfig, dataset)
        load_or_make(cache, lambda path: _load_cached(model, tconfig, path),
                     lambda path: _train_and_save(model, tconfig, path, train_data, valid_data))
    model.eval()
    model.requires_grad_(False)
    return model


def _load_cached(model: SequentialRecommender, tconfig: Config, path: Path) -> None:
    model.load_state_dict(load_tensors(path, tconfig["device"])["state_dict"])
    getLogger().info(set_color("Teacher", "green") + f": reusing {path}")


def _train_and_save(model: SequentialRecommender, tconfig: Config, path: Path, train_data, valid_data) -> None:
    _train(model, tconfig, train_data, valid_data)
    save_tensors({"state_dict": model.state_dict(), "model": tconfig["model"]}, path)
    getLogger().info(set_color("Teacher", "green") + f": saved {path}")


@torch.no_grad()
def teacher_rank(
    teacher: SequentialRecommender, histories: list[list[int]], k: int
) -> tuple[list[list[int]], torch.Tensor]:
    """The teacher's top-``k`` next items for each history (history items excluded).

    Returns the top-k item ids per history and the ``(B, n_items)`` score matrix (CPU).
    """
    width = teacher.max_seq_length
    seqs = torch.zeros(len(histories), width, dtype=torch.long)
    lengths = torch.zeros(len(histories), dtype=torch.long)
    for row, history in enumerate(histories):
        recent = history[-width:]
        seqs[row, : len(recent)] = torch.as_tensor(recent)
        lengths[row] = len(recent)
    batch = Interaction({teacher.ITEM_SEQ: seqs, teacher.ITEM_SEQ_LEN: lengths}).to(teacher.device)
    scores = teacher.full_sort_predict(batch).float().cpu()
    scores[:, 0] = -torch.inf
    for row, history in enumerate(histories):
        scores[row, history] = -torch.inf
    return scores.topk(k, dim=1).indices.tolist(), scores


def _train(model: SequentialRecommender, tconfig: Config, train_data, valid_data) -> None:
    """RecBole's own Trainer on the training split, early stopping on validation.

    RecBole saves the best epoch as ``<model>-<time>.pth`` in ``checkpoint_dir``; here that
    file goes to a temporary folder, removed once its weights are back in the model, so
    ``checkpoint_dir`` holds the cached teacher only (written by the caller).
    """
    logger = getLogger()
    logger.info(set_color("Teacher", "green") + f": training {tconfig['model']} on the training split")
    train = TrainDataLoader(tconfig, train_data._dataset, None, shuffle=True)
    valid = FullSortEvalDataLoader(tconfig, valid_data._dataset, None, shuffle=False)
    trainer = get_trainer(tconfig["MODEL_TYPE"], tconfig["model"])(tconfig, model)
    with tempfile.TemporaryDirectory(prefix="recbole-delrec-teacher-") as folder:
        trainer.saved_model_file = os.path.join(folder, os.path.basename(trainer.saved_model_file))
        trainer.fit(train, valid, saved=True, show_progress=tconfig["show_progress"])
        checkpoint = torch.load(trainer.saved_model_file, map_location=tconfig["device"], weights_only=True)
    model.load_state_dict(checkpoint["state_dict"])


def _load_recbole_checkpoint(model: SequentialRecommender, path: str, trusted: bool) -> None:
    """Weights from a RecBole checkpoint file (safe load: RecBole's own classes only)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"teacher_checkpoint '{path}' does not exist.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"teacher_checkpoint '{path}' holds pickled objects (RecBole < this plugin saves its "
            f"whole Config) and is not loaded blindly. If you made this file yourself, set "
            f"`trust_teacher_checkpoint: True` to load it anyway."
        ) from err
    state = checkpoint.get("state_dict", checkpoint)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"teacher_checkpoint '{path}' does not fit teacher_model '{type(model).__name__}' on "
            f"this data set (other model, sizes or item count): {err}"
        ) from err
    getLogger().info(set_color("Teacher", "green") + f": loaded {path}")
