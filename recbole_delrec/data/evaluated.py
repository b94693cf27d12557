"""Which users the evaluation scores: every one, or a sample of at most ``eval_max_users``.

Scoring a user costs LLM forwards over the prompt and every candidate's title (SmolLM2 on a
2-core CPU: ~0.7-1.6 s a user), so a catalogue of 10,000 users would test for hours.
``eval_max_users`` keeps a sample of users in the validation and test splits, as
``train_max_prefixes`` bounds training. The sample does not depend on ``seed`` (a fixed
generator), so runs of several seeds score the same users and their outcomes pair user by
user. The training split, and so the teacher's and stage 1's data, is untouched.
"""

from __future__ import annotations

from logging import getLogger

import numpy as np
import torch

#: The generator of the users' sample: fixed, so every seed and row of a table scores the same users.
SAMPLE_SEED = 0


def evaluated_splits(splits: list, cap: int | None) -> list:
    """``[train, valid, test]`` with valid and test cut to ``cap`` users (all when ``cap`` is
    ``None`` or no smaller than their users); other split lists are returned as they are."""
    if not cap or len(splits) != 3:
        return splits
    train, valid, test = splits
    uid = test.uid_field
    users = np.union1d(valid.inter_feat[uid].numpy(), test.inter_feat[uid].numpy())
    if len(users) <= cap:
        return splits
    keep = np.random.default_rng(SAMPLE_SEED).choice(users, cap, replace=False)
    cut = [split.copy(split.inter_feat[torch.as_tensor(np.flatnonzero(np.isin(split.inter_feat[uid].numpy(), keep)))])
           for split in (valid, test)]
    getLogger().warning(
        f"Evaluation: {cap:,} of {len(users):,} users are validated and tested (eval_max_users: {cap}, a sample that "
        f"is the same for every seed): the metrics estimate the whole set's. `eval_max_users: ~` evaluates every user."
    )
    return [train, *cut]
