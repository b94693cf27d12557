"""``TSLRecTrainer``: RecBole's Trainer, running teacher -> grouping -> SFT -> augmentation
-> backbone training.

``fit`` prepares the item representation of the chosen ``tslrec_variant`` and then runs
RecBole's own epoch loop on the backbone (full-ranking validation, early stopping):

* ``base``: nothing to prepare;
* ``ci``: the teacher (trained on the training split, or reused from ``checkpoint_dir``),
  k-means over its item embeddings, the group embedding attached;
* ``tslrec``: the knowledge-enhanced item embeddings, loaded from their artefact when a
  previous run (with any backbone) made them with the same settings, else made now:
  teacher -> groups -> user targets -> SFT of the LLM -> augmentation -> artefact.

The global seed is set again before the backbone's new modules are made and trained, so a
run that reuses the artefact trains exactly like the run that made it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from recbole.trainer import Trainer
from recbole.utils import init_seed, set_color

from recbole_delrec.llm.loading import load_backbone
from recbole_delrec.llm.sources import resolve
from recbole_delrec.runs.artifacts import load_tensors, save_tensors
from recbole_delrec.runs.cache import artifact_key, artifact_path, llm_identity, load_or_make, split_fingerprint
from recbole_delrec.teacher import load_or_train_teacher, teacher_identity
from recbole_delrec.tslrec.grouping import item_groups, item_table, preference_targets, user_sequences
from recbole_delrec.tslrec.sft import PreferenceLLM, augment, tokenizer_corpus, train_sft, tslrec_template

#: Settings the knowledge step reads that shape the knowledge-enhanced embeddings.
SHAPING = ("seed", "reproducibility", "teacher_model", "n_groups", "kmeans_iterations", "sft_epochs",
           "sft_batch_size", "sft_learning_rate", "sft_history_length", "lora", "llm_path", "llm_gguf_file",
           "scratch_llm")
#: Settings the knowledge step reads that do not change it, and why.
NOT_SHAPING = {
    "knowledge_path": "a file to load instead: it is the artefact, not an input of it",
    "llm_dtype": "in the key as the LLM's identity, resolved on this device (auto: bf16 or fp32); the scratch T5 ignores it",
    "checkpoint_dir": "where artefacts are kept",
    "prompt_template_dir": "where the template is read: its text is in the key",
    "domain": "which template is read: its text is in the key",
    "augment_batch_size": "how many items go through the encoder at once, not what it computes",
    "device": "where it runs; the same computation",
}


class TSLRecTrainer(Trainer):
    """Trainer for :class:`~recbole_delrec.tslrec.model.TSLRec`."""

    def __init__(self, config, model) -> None:
        super().__init__(config, model)
        self.timings: dict[str, float] = {}
        self.llm_calls = {"sft": 0, "augment": 0}
        self.knowledge_info: dict[str, Any] = {}

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if self.model.variant != "base" and not self.model.attached:
            self._prepare(train_data, valid_data)
            self.optimizer = self._build_optimizer()  # the new modules' parameters too
        start = time.time()
        result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        self.timings["backbone_seconds"] = time.time() - start
        return result

    # ------------------------------------------------------------------ preparation
    def _prepare(self, train_data, valid_data) -> None:
        config, dataset = self.config, train_data._dataset
        if self.model.variant == "ci":
            groups = self._groups(train_data, valid_data)
            init_seed(config["seed"], config["reproducibility"])
            self.model.attach_groups(groups)
            return
        meta = knowledge_meta(config, dataset)
        knowledge = load_or_make(knowledge_file(config, meta), lambda p: self._load_knowledge(p, dataset.item_num),
                                 lambda p: self._make_and_save_knowledge(p, meta, train_data, valid_data))
        init_seed(config["seed"], config["reproducibility"])
        self.model.attach_knowledge(knowledge["embeddings"])

    def _load_knowledge(self, path: Path, n_items: int) -> dict[str, Any]:
        knowledge = load_knowledge(path, n_items)
        self.knowledge_info = {"path": str(path), "reused": True, **knowledge["sft"]}
        self.logger.info(set_color("TSLRec", "green") + f": reusing knowledge-enhanced embeddings {path}")
        return knowledge

    def _make_and_save_knowledge(self, path: Path, meta: dict[str, Any], train_data, valid_data) -> dict[str, Any]:
        if self.config["knowledge_path"]:
            raise FileNotFoundError(f"knowledge_path '{path}' does not exist.")
        knowledge = {**self._make_knowledge(train_data, valid_data), "meta": meta}
        save_tensors(knowledge, path)
        self.knowledge_info = {"path": str(path), "reused": False, **knowledge["sft"]}
        self.logger.info(set_color("TSLRec", "green") + f": saved knowledge-enhanced embeddings {path}")
        return knowledge

    def _groups(self, train_data, valid_data) -> torch.Tensor:
        """The teacher's item table clustered into ``n_groups`` latent categories."""
        start = time.time()
        teacher = load_or_train_teacher(self.config, train_data, valid_data)
        self.timings["teacher_seconds"] = time.time() - start
        start = time.time()
        self._teacher_items = item_table(teacher, train_data._dataset.item_num)
        groups = item_groups(self._teacher_items, self.config["n_groups"], self.config["seed"],
                             self.config["kmeans_iterations"])
        self.timings["grouping_seconds"] = time.time() - start
        return groups

    def _make_knowledge(self, train_data, valid_data) -> dict[str, Any]:
        """Teacher -> groups -> targets -> SFT -> augmentation (the LLM's whole job)."""
        config, dataset = self.config, train_data._dataset
        groups = self._groups(train_data, valid_data)
        n_groups = config["n_groups"]
        sequences = user_sequences(dataset)
        targets = preference_targets(sequences, groups, n_groups)
        users = sorted(targets)
        history = config["sft_history_length"]
        inputs = [sequences[u][-history:] if history else sequences[u] for u in users]
        init_seed(config["seed"], config["reproducibility"])
        template = tslrec_template(config)
        backbone = load_backbone(config, tokenizer_corpus(template, n_groups))
        llm = PreferenceLLM(backbone, self._teacher_items, n_groups, template, config["lora"]).to(self.device)
        del backbone
        self.logger.info(
            set_color("TSLRec", "green") + f": SFT of {llm.source} on {len(users)} users' preference "
            f"distributions over {n_groups} groups ({config['sft_epochs']} epochs)"
        )
        start = time.time()
        sft = train_sft(llm, inputs, torch.stack([targets[u] for u in users]), config["sft_epochs"],
                        config["sft_batch_size"], config["sft_learning_rate"], config["seed"])
        self.timings["sft_seconds"] = time.time() - start
        start = time.time()
        embeddings, distributions = augment(llm, dataset.item_num, config["augment_batch_size"])
        self.timings["augment_seconds"] = time.time() - start
        self.llm_calls = dict(llm.calls)
        return {
            "embeddings": embeddings,
            "distributions": distributions,
            "groups": groups,
            "sft": {**sft, "llm_calls": dict(llm.calls), "n_users": len(users)},
        }


def knowledge_meta(config, dataset) -> dict[str, Any]:
    """What a knowledge artefact belongs to: its file's label and its key (the teacher it
    groups with, the template, the LLM, the training split and the ``SHAPING`` settings)."""
    values = {**{k: config[k] for k in SHAPING}, "teacher": teacher_identity(config)}
    key = artifact_key("tslrec-knowledge", values, split_fingerprint(dataset), {"tslrec": tslrec_template(config)},
                       llm_identity(config))
    return {"dataset": config["dataset"], "teacher": config["teacher_model"],
            "llm": resolve(config["llm_path"], config["llm_gguf_file"]).name, "n_items": dataset.item_num, "key": key}


def knowledge_file(config, meta: dict[str, Any]) -> Path:
    """``knowledge_path``, or the artefact named for data set, teacher, LLM and key (``meta``:
    :func:`knowledge_meta`)."""
    if config["knowledge_path"]:
        return Path(config["knowledge_path"])
    return artifact_path(config["checkpoint_dir"], "tslrec-knowledge", (meta["dataset"], meta["teacher"], meta["llm"]),
                         meta["key"])


def load_knowledge(path: str | Path, n_items: int) -> dict[str, Any]:
    """A saved knowledge artefact (weights-only load), checked against the catalogue size."""
    knowledge = load_tensors(path)
    embeddings = knowledge.get("embeddings")
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2 or embeddings.shape[0] != n_items:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else None
        raise ValueError(
            f"'{path}' holds knowledge embeddings of shape {shape}, this data set has {n_items} "
            f"item ids: it was made for another data set or filtering."
        )
    knowledge.setdefault("sft", {})
    return knowledge
