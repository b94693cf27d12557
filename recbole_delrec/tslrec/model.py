"""TSLRec as a RecBole sequential model ("A Practice-Friendly Two-Stage LLM-Enhanced
Paradigm in Sequential Recommendation", Liu et al.).

``TSLRec`` is what RecBole instantiates for ``model: TSLRec``.  It builds the RecBole
sequential model named by ``backbone`` (SASRec, GRU4Rec, Caser, NARM, ...) and delegates
``calculate_loss``/``predict``/``full_sort_predict`` to it, so training and full-ranking
evaluation are RecBole's own.  What changes is how the backbone represents items:

* ``tslrec_variant: base``: the plain backbone;
* ``tslrec_variant: ci``: the backbone's item embedding plus a learned embedding of the
  item's pre-grouping cluster (:class:`~recbole_delrec.tslrec.gated.GroupedItemEmbedding`);
* ``tslrec_variant: tslrec``: a learned gate mixes the backbone's randomly initialised item
  embedding with the projected, frozen knowledge-enhanced embedding that the LLM produced
  (:class:`~recbole_delrec.tslrec.gated.GatedItemEmbedding`).

Groups and knowledge come from the teacher and the LLM, which the trainer
(:class:`~recbole_delrec.tslrec.trainer.TSLRecTrainer`) runs first; it then calls
:meth:`TSLRec.attach_groups` / :meth:`TSLRec.attach_knowledge`, which swap the backbone's
``item_embedding`` module.  The LLM is never part of this model: checkpoints hold the
backbone, the gate and the frozen knowledge table only.
"""

from __future__ import annotations

import os

import torch
from recbole.config import Config
from recbole.data.interaction import Interaction
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType, ModelType
from torch import nn

from recbole_delrec import options
from recbole_delrec.config import isolated_config
from recbole_delrec.data import checks
from recbole_delrec.llm.loading import check_llm_path
from recbole_delrec.teacher import GENERAL_KEYS, teacher_class
from recbole_delrec.tslrec.gated import GatedItemEmbedding, GroupedItemEmbedding
from recbole_delrec.tslrec.sft import instruction, tslrec_template

VARIANTS = ("base", "ci", "tslrec")
#: Keys of TSLRec's own configuration that the backbone's RecBole config inherits.
SHARED_KEYS = ("eval_args", "loss_type", "train_neg_sample_args", "metrics", "topk", "valid_metric")
#: User-given keys that are TSLRec's, not the backbone's.
OWN_KEYS = ("model", "dataset", "backbone", "backbone_config", "config_files")
#: Settings that must be whole numbers of at least 1.
COUNTS = ("n_groups", "kmeans_iterations", "sft_batch_size", "augment_batch_size")


def backbone_class(name: str) -> type[SequentialRecommender]:
    """The RecBole sequential model called ``name``, with an error that names ``backbone``."""
    try:
        return teacher_class(name)
    except ValueError:
        raise ValueError(
            f"backbone '{name}' is not a RecBole sequential model: use one such as SASRec, "
            f"GRU4Rec, Caser, NARM, STAMP or NextItNet."
        ) from None


def backbone_config(config: Config) -> Config:
    """The backbone's own RecBole config.

    Its model defaults come from RecBole's YAML for that model; the data settings, the
    loss and the evaluation protocol are TSLRec's; then every value the user gave (YAML
    files, ``config_dict``, command line: ``--hidden_size=64`` reaches the backbone), and
    last ``backbone_config``.  The variants of one run therefore share one backbone setup.
    """
    name = config["backbone"]
    backbone_class(name)
    values = {k: config[k] for k in GENERAL_KEYS}
    values.update({k: config[k] for k in config.parameters["Dataset"] if k in config})
    values["data_path"] = os.path.dirname(os.path.normpath(config["data_path"]))
    values.update({k: config[k] for k in SHARED_KEYS})
    negatives = config["train_neg_sample_args"]  # RecBole's expanded form; "none" must go back to None
    if not negatives or negatives.get("distribution") == "none":
        values["train_neg_sample_args"] = None
    user = getattr(config, "external_config_dict", {}) or {}
    values.update({k: v for k, v in user.items() if k not in OWN_KEYS and k != "data_path"})
    values.update(config["backbone_config"] or {})
    return isolated_config(name, config["dataset"], values)


class TSLRec(SequentialRecommender):
    """A RecBole sequential backbone whose item embedding TSLRec enriches."""

    input_type = InputType.POINTWISE
    type = ModelType.SEQUENTIAL
    skip_flops = True  # the item module is swapped after construction; RecBole's probe would trace the bare one

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.variant = str(config["tslrec_variant"])
        if self.variant not in VARIANTS:
            raise ValueError(f"tslrec_variant '{self.variant}' is not one of {', '.join(VARIANTS)}.")
        self.n_groups = int(config["n_groups"])
        self.backbone_name = config["backbone"]
        bconfig = backbone_config(config)
        if bconfig["transform"] != config["transform"]:
            raise ValueError(
                f"backbone '{self.backbone_name}' needs RecBole's batch transform '{bconfig['transform']}', "
                f"and TSLRec's data loaders use '{config['transform']}': set `transform: "
                f"{bconfig['transform']}` (and that transform's settings) in the TSLRec config."
            )
        self.backbone = backbone_class(self.backbone_name)(bconfig, dataset)
        if not isinstance(getattr(self.backbone, "item_embedding", None), nn.Embedding):
            raise ValueError(
                f"backbone '{self.backbone_name}' keeps no `item_embedding` nn.Embedding for TSLRec "
                f"to enrich: use SASRec, GRU4Rec, Caser, NARM, STAMP or NextItNet."
            )

    @classmethod
    def check_config(cls, config) -> None:
        """Before RecBole reads the data (:mod:`recbole_delrec.data.checks`): each setting alone
        (:mod:`recbole_delrec.options`), time order, backbone, instruction template and LLM, each
        of which would otherwise fail only after the teacher trained (or not at all)."""
        options.recbole_settings(config)
        options.whole(config, COUNTS)
        options.whole(config, ("sft_epochs",), least=0)
        options.whole(config, ("sft_history_length",), optional=True)
        options.number(config, ("sft_learning_rate",), 0)
        options.one_of(config, {"tslrec_variant": VARIANTS})
        checks.sequences_ordered(config)
        backbone_class(config["backbone"])
        instruction(tslrec_template(config), int(config["n_groups"]))
        check_llm_path(config["llm_path"], config["llm_gguf_file"], config["checkpoint_dir"])

    # ------------------------------------------------------------------ item representation
    @property
    def item_embedding(self) -> nn.Module:
        """The backbone's item module (an ``nn.Embedding`` or one of ours)."""
        return self.backbone.item_embedding

    @property
    def attached(self) -> bool:
        return not isinstance(self.backbone.item_embedding, nn.Embedding)

    def attach_groups(self, groups: torch.Tensor) -> None:
        """The *CI* variant: add a learned embedding of each item's group."""
        self._swap(GroupedItemEmbedding(self.backbone.item_embedding, groups, self.n_groups))

    def attach_knowledge(self, knowledge: torch.Tensor) -> None:
        """TSLRec: gate the backbone's item embedding with the knowledge-enhanced table."""
        self._swap(GatedItemEmbedding(self.backbone.item_embedding, knowledge))

    def _swap(self, module: nn.Module) -> None:
        if self.attached:
            raise RuntimeError("TSLRec's item embedding is already enriched.")
        self.backbone.item_embedding = module.to(self.device)

    # ------------------------------------------------------------------ RecBole API
    def forward(self, *args, **kwargs) -> torch.Tensor:
        """The backbone's own ``forward`` (its signature differs between models)."""
        return self.backbone(*args, **kwargs)

    def calculate_loss(self, interaction: Interaction) -> torch.Tensor:
        return self.backbone.calculate_loss(interaction)

    def predict(self, interaction: Interaction) -> torch.Tensor:
        return self.backbone.predict(interaction)

    def full_sort_predict(self, interaction: Interaction) -> torch.Tensor:
        return self.backbone.full_sort_predict(interaction)
