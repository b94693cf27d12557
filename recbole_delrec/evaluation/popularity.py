"""Popularity: each candidate scored by its interactions in the training split.

The floor every recommender must clear, scored like any other row (``baselines: [Pop]``) on
the run's own candidate sets, with per-user records.  RecBole's ``Pop`` is a general model
trained by a counting epoch; this one reads the counts the records use
(:func:`~recbole_delrec.evaluation.records.training_counts`) straight from the training split,
so it needs no training and no cache.
"""

from __future__ import annotations

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType, ModelType
from torch import nn

from recbole_delrec.evaluation.records import training_counts

NAME = "Pop"


class Popularity(SequentialRecommender):
    """Scores an item by its interactions in the training split."""

    input_type = InputType.POINTWISE
    type = ModelType.SEQUENTIAL

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.register_buffer("counts", torch.as_tensor(training_counts(dataset)[1], dtype=torch.float32))
        self.unused = nn.Parameter(torch.zeros(1))  # RecBole's code expects a model with a parameter

    def calculate_loss(self, interaction):
        raise NotImplementedError("Popularity is counted, not trained.")

    def predict(self, interaction) -> torch.Tensor:
        return self.counts[interaction[self.POS_ITEM_ID]]

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.counts.repeat(len(interaction), 1)  # a real copy: evaluation writes into it
