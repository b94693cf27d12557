"""One function scores any RecBole model (DELRec, the teacher, a baseline) on an evaluation split.

Sampled modes (``uniN``): each user's fixed candidate set (:class:`CandidateSets`, prompt
order) is scored, and the scores are spread into a ``(users, n_items)`` matrix that is
``-inf`` outside the set.  ``full``: the model's ``full_sort_predict`` over the catalogue
(DELRec's re-ranks the teacher's top ``rerank_k``).  Either way RecBole's own collector and
evaluator compute the metric dict from that matrix, and the per-user outcome (the target's
rank, the top-1 item) is read from the very same matrix with the same ``torch.topk``, so
metrics recomputed from the outcomes are RecBole's exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.data.interaction import Interaction
from recbole.evaluator import Collector, Evaluator
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import set_color
from tqdm import tqdm

from recbole_delrec.data.candidates import CandidateSets
from recbole_delrec.data.fields import item_seq_field


@dataclass
class Scored:
    """One model evaluated on one split: RecBole's metric dict and each user's outcome."""

    result: dict[str, float]
    users: np.ndarray  # internal user ids, in evaluation order
    targets: np.ndarray
    ranks: np.ndarray  # 1-based rank of the target (among the candidates, or the catalogue)
    top1: np.ndarray  # the model's best item per user
    candidates: list[np.ndarray] = field(default_factory=list)  # per user, prompt order ([] in full mode)


def candidate_scores(model: SequentialRecommender, rows: Interaction, candidates: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` scores of each row's candidates, for any RecBole sequential model.

    A model that lists candidates in a prompt (DELRec: ``score_listed``) scores each row in
    the order given, which is the saved prompt order; any other model scores one
    ``(user, history, candidate)`` row per candidate with its ``predict``.
    """
    listed = getattr(model, "score_listed", None)
    if listed is not None:
        return listed(rows.to(model.device), candidates)
    expanded = rows.repeat_interleave(candidates.shape[1])
    expanded.update(Interaction({model.POS_ITEM_ID: candidates.reshape(-1)}))
    return model.predict(expanded.to(model.device)).view(candidates.shape)


def user_rows(batch) -> tuple[Interaction, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One row per user of a RecBole evaluation batch: (rows, positive_u, positive_i, history_index).

    RecBole's sampled loader repeats each user's row once per negative it drew; DELRec
    ignores those negatives (it scores its own clean candidates) and keeps the first row.
    """
    interaction, index, positive_u, positive_i = batch
    if index is None or isinstance(index, tuple):  # full ranking: already one row per user
        return interaction, positive_u, positive_i, index
    firsts = torch.as_tensor(np.r_[0, np.nonzero(np.diff(index.numpy()))[0] + 1])
    return interaction[firsts], positive_u, positive_i, None


def score_matrix(
    model: SequentialRecommender, rows: Interaction, n_items: int, candidates: torch.Tensor | None,
    history_index=None,
) -> torch.Tensor:
    """``(B, n_items)`` scores: the candidates' (``-inf`` elsewhere), or the catalogue's if ``None``."""
    if candidates is None:  # RecBole's full-sort evaluation
        scores = model.full_sort_predict(rows.to(model.device)).view(-1, n_items).float()
        scores[:, 0] = -np.inf
        if history_index is not None:
            scores[history_index] = -np.inf
        return scores
    scores = candidate_scores(model, rows, candidates).float()
    full = torch.full((len(candidates), n_items), -np.inf, device=scores.device)
    return full.scatter_(1, candidates.to(scores.device), scores)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, max_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's target rank and top-1 item, as RecBole's collector sees them.

    Within ``max_k`` the rank is the position in ``torch.topk`` (RecBole's call, so ties
    break alike); beyond it, 1 + the items scored strictly higher (at least ``max_k + 1``).
    """
    _, top = torch.topk(scores, max_k, dim=-1)
    targets = targets.to(scores.device)
    found = top == targets[:, None]
    target_scores = scores.gather(1, targets[:, None])
    beyond = ((scores > target_scores).sum(1) + 1).clamp(min=max_k + 1)
    ranks = torch.where(found.any(1), found.float().argmax(1) + 1, beyond)
    return ranks.cpu().numpy(), top[:, 0].cpu().numpy()


@torch.no_grad()
def score(
    model: SequentialRecommender,
    eval_data,
    candidate_sets: CandidateSets | None,
    collector: Collector,
    evaluator: Evaluator,
    topk: list[int],
    show_progress: bool = False,
) -> Scored:
    """Evaluate ``model`` on ``eval_data``: RecBole's metric dict and every user's outcome.

    ``candidate_sets`` gives the sampled modes' sets (prompt order); a
    :class:`FullSortEvalDataLoader` (``mode: full``) ranks the whole catalogue instead.
    """
    model.eval()
    full = isinstance(eval_data, FullSortEvalDataLoader)
    phase = eval_data._sampler.phase if eval_data._sampler is not None else "test"
    dataset = eval_data._dataset
    n_items = dataset.item_num
    parts: dict[str, list] = {"users": [], "targets": [], "ranks": [], "top1": [], "candidates": []}
    batches = tqdm(eval_data, total=len(eval_data), ncols=100, desc=set_color("Evaluate   ", "pink")) if show_progress else eval_data
    for batch in batches:
        rows, positive_u, positive_i, history_index = user_rows(batch)
        users = rows[dataset.uid_field]
        candidates = None if full else candidate_sets.rows(phase, users, rows[dataset.iid_field], rows[item_seq_field(dataset)])
        scores = score_matrix(model, rows, n_items, candidates, history_index)
        collector.eval_batch_collect(scores, rows, positive_u, positive_i)
        ranks, top1 = target_ranks(scores[positive_u], positive_i, max(topk))
        parts["users"].append(users[positive_u.cpu()].numpy())
        parts["targets"].append(positive_i.cpu().numpy())
        parts["ranks"].append(ranks)
        parts["top1"].append(top1)
        parts["candidates"] += [] if candidates is None else list(candidates[positive_u.cpu()].numpy())
    collector.model_collect(model)
    result = evaluator.evaluate(collector.get_data_struct())
    arrays = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in parts.items() if k != "candidates"}
    return Scored(dict(result), candidates=parts["candidates"], **arrays)
