"""Stage-1 examples: Recommendation Pattern Simulating (RPS) and Temporal Analysis (TA).

Both are built from *training-split* prefixes and the teacher's predictions on them only, so
no validation or test interaction can reach stage 1.

* RPS: a history, and candidates = the teacher's top-k for it plus random items; the target
  is the teacher's top-1 (or, for listwise distillation, the teacher's score distribution
  over the candidates).
* TA: an in-context demonstration (history A..; the teacher's prediction N after the hidden
  item M; the answer "M is C"), then a query on a later part of the same history ending in a
  hidden item X, with the teacher's prediction after X; the target is X among X + random items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recbole_delrec.data.candidates import CandidateSampler
from recbole_delrec.teacher import teacher_rank

CHUNK = 512  # histories ranked by the teacher at once (bounds the score matrix in memory)


@dataclass
class RPSExample:
    user: int
    history: list[int]
    candidates: list[int]
    target: int  # index of the teacher's top-1 in candidates
    teacher_scores: list[float]  # the teacher's scores of the candidates (for KL)


@dataclass
class TAExample:
    user: int
    demo_history: list[int]
    demo_prediction: int
    demo_answer: int
    query_history: list[int]
    query_prediction: int
    candidates: list[int]
    target: int  # index of the hidden item X in candidates


def rps_examples(
    teacher, histories: list[list[int]], users: list[int], sampler: CandidateSampler,
    top_k: int, rng: np.random.Generator,
) -> list[RPSExample]:
    """One RPS example per (user, training history)."""
    examples = []
    for start in range(0, len(histories), CHUNK):
        chunk = slice(start, start + CHUNK)
        examples += _rps_chunk(teacher, histories[chunk], users[chunk], sampler, top_k, rng)
    return examples


def _rps_chunk(teacher, histories, users, sampler, top_k, rng) -> list[RPSExample]:
    top, scores = teacher_rank(teacher, histories, top_k)
    examples = []
    for user, history, row_top, row_scores in zip(users, histories, top, scores):
        fill = sampler.negatives(user, row_top[0], np.asarray(history + row_top), rng)
        candidates = row_top + fill[: sampler.n_candidates - len(row_top)].tolist()
        order = rng.permutation(len(candidates))
        shuffled = [candidates[i] for i in order]
        examples.append(RPSExample(
            user, history, shuffled, int(np.flatnonzero(order == 0)[0]),
            row_scores.gather(0, torch.as_tensor(shuffled)).tolist(),
        ))
    return examples


def ta_examples(
    teacher, sequences: list[list[int]], users: list[int], sampler: CandidateSampler,
    demo_length: int, query_length: int, rng: np.random.Generator,
) -> list[TAExample]:
    """One TA example per training sequence long enough for a demonstration and a query."""
    need = demo_length + query_length + 2
    kept = [(u, s) for u, s in zip(users, sequences) if len(s) >= need]
    if not kept:
        return []
    m_index = [len(s) - query_length - 2 for _, s in kept]
    demo_top, _ = teacher_rank(teacher, [s[: m + 1] for (_, s), m in zip(kept, m_index)], 1)
    query_top, _ = teacher_rank(teacher, [s for _, s in kept], 1)
    examples = []
    for (user, seq), m, demo_pred, query_pred in zip(kept, m_index, demo_top, query_top):
        hidden = seq[-1]
        fill = sampler.negatives(user, hidden, np.asarray(seq), rng)
        candidates = [hidden] + fill.tolist()
        order = rng.permutation(len(candidates))
        examples.append(TAExample(
            user, seq[max(0, m - demo_length) : m], demo_pred[0], seq[m],
            seq[m + 1 : -1][-query_length:], query_pred[0],
            [candidates[i] for i in order], int(np.flatnonzero(order == 0)[0]),
        ))
    return examples
