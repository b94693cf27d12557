"""Candidate sets: the true item plus negatives the user has never interacted with.

RecBole's sequential sampler only excludes the target, so its negatives can be history items
or repeats, and they are redrawn at every evaluation.  DELRec lists candidates in a prompt,
so here the negatives are uniform over items outside the user's known history, without
repeats, and evaluation candidates are a pure function of ``(seed, phase, user)``: the same
in every evaluation of a run, for DELRec and for the teacher alike.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data.dataset import Dataset

PHASES = {"train": 0, "valid": 1, "test": 2, "stage1": 3}


def candidates_per_prompt(config) -> int:
    """How many candidates every prompt lists, the target included: the one place that decides."""
    return config["n_candidates"]


class CandidateSampler:
    """Draws ``n_candidates - 1`` negatives per (user, target) outside the user's history."""

    def __init__(self, history: sp.csr_matrix, n_items: int, n_candidates: int, seed: int) -> None:
        if not 2 <= n_candidates <= n_items - 1:
            raise ValueError(
                f"n_candidates={n_candidates} must be between 2 and the catalogue size "
                f"({n_items - 1} items): lower `n_candidates`."
            )
        self.history = history
        self.n_items = n_items
        self.n_candidates = n_candidates
        self.seed = seed

    @classmethod
    def from_dataset(cls, dataset: Dataset, n_candidates: int, seed: int) -> "CandidateSampler":
        """User-by-item history from every prefix and target in ``dataset``."""
        feat = dataset.inter_feat
        lists = feat[dataset.item_id_list_field].numpy()
        users = feat[dataset.uid_field].numpy()
        rows = np.concatenate([np.repeat(users, lists.shape[1]), users])
        cols = np.concatenate([lists.reshape(-1), feat[dataset.iid_field].numpy()])
        keep = cols > 0
        matrix = sp.csr_matrix(
            (np.ones(keep.sum(), dtype=np.bool_), (rows[keep], cols[keep])),
            shape=(dataset.user_num, dataset.item_num),
        )
        return cls(matrix, dataset.item_num, n_candidates, seed)

    def known(self, user: int, history: np.ndarray) -> np.ndarray:
        """Items the user is known to have: the stored history plus this row's history."""
        stored = self.history.indices[self.history.indptr[user] : self.history.indptr[user + 1]]
        return np.union1d(stored, history[history > 0])

    def negatives(self, user: int, target: int, history: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``n_candidates - 1`` distinct items, none of them the target or a known item.

        If the user knows nearly the whole catalogue, known items (never the target) fill up.
        """
        need = self.n_candidates - 1
        banned = np.union1d(self.known(user, history), [0, target])
        pool_size = self.n_items - len(banned)
        if pool_size < need:
            pool = np.setdiff1d(np.arange(1, self.n_items), [target])
            return rng.choice(pool, need, replace=False)
        picked: list[int] = []
        seen = set(banned.tolist())
        while len(picked) < need:
            for item in rng.integers(1, self.n_items, size=2 * need).tolist():
                if item not in seen and len(picked) < need:
                    seen.add(item)
                    picked.append(item)
        return np.asarray(picked, dtype=np.int64)

    def rng(self, phase: str, user: int) -> np.random.Generator:
        """The generator of one user's evaluation candidates: fixed for the whole run."""
        return np.random.default_rng([self.seed, PHASES[phase], int(user)])

    def candidates(
        self,
        users: torch.Tensor,
        targets: torch.Tensor,
        histories: torch.Tensor,
        phase: str,
        rng: np.random.Generator | None = None,
    ) -> torch.Tensor:
        """``(B, n_candidates)`` item ids, the target in column 0.

        With ``rng`` (training) negatives are fresh draws; without it they are the user's
        fixed evaluation candidates of ``phase``.
        """
        rows = []
        for user, target, history in zip(users.tolist(), targets.tolist(), histories.cpu().numpy()):
            gen = rng if rng is not None else self.rng(phase, user)
            rows.append(np.concatenate([[target], self.negatives(user, target, history, gen)]))
        return torch.as_tensor(np.stack(rows), dtype=torch.long)
