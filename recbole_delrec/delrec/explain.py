"""``explain``: what DELRec saw and decided for one user, beside what the teacher decided.

For the user's test case it shows the exact recommendation prompt (the soft prompt as a
marker), then the user's test candidates (the run's own sets) ranked by DELRec with their scores, next to
the teacher's ranking of the same candidates.  This is the interpretability the paper
claims: the prompt is text a person can read, and the two rankings can be compared item by
item.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from recbole.data.interaction import Interaction
from tabulate import tabulate

from recbole_delrec.data.candidates import CandidateSets
from recbole_delrec.evaluation.scoring import candidate_scores


@dataclass
class Explanation:
    user: str
    prompt: str
    target: int
    delrec: list[tuple[int, float]]  # (item id, score), best first
    teacher: list[tuple[int, float]]

    def table(self, titles) -> str:
        rows = []
        for rank, ((d_item, d_score), (t_item, t_score)) in enumerate(zip(self.delrec, self.teacher), 1):
            mark = lambda item: " *" if item == self.target else ""  # noqa: E731
            rows.append([rank, titles[d_item] + mark(d_item), f"{d_score:.3f}", titles[t_item] + mark(t_item), f"{t_score:.3f}"])
        return tabulate(rows, headers=["rank", "DELRec", "score", "teacher", "score"])

    def render(self, titles) -> str:
        return (f"User {self.user}: prompt\n{self.prompt}\n\nCandidates (* = the true next item)\n"
                f"{self.table(titles)}")


def user_row(test_data, user_token: str) -> Interaction:
    """The test row of one user, by the user's original id from the atomic file."""
    dataset = test_data._dataset
    try:
        user = dataset.token2id(dataset.uid_field, str(user_token))
    except ValueError as err:
        raise ValueError(f"explain: user '{user_token}' is not in data set '{dataset.dataset_name}'.") from err
    rows = torch.nonzero(dataset.inter_feat[dataset.uid_field] == user).flatten()
    if len(rows) == 0:
        raise ValueError(f"explain: user '{user_token}' has no test interaction.")
    return dataset.inter_feat[rows[-1:]]


@torch.no_grad()
def explain(model, test_data, user_token: str, candidate_sets: CandidateSets) -> Explanation:
    """DELRec's and the teacher's ranking of the user's test candidates in ``candidate_sets``
    (the run's, as evaluated), each scored by the one scoring function of the evaluation."""
    row = user_row(test_data, user_token)
    shown = candidate_sets.rows("test", row[model.USER_ID], row[model.POS_ITEM_ID], row[model.ITEM_SEQ])
    history = model.histories(row)[0]
    prompt = model.prompts["lsr"].render(model.item_text.titles, history=history, candidates=shown[0].tolist())
    model.eval()
    return Explanation(
        str(user_token), prompt, int(row[model.POS_ITEM_ID][0]),
        _ranked(shown[0], candidate_scores(model, row, shown)[0]),
        _ranked(shown[0], candidate_scores(model.teacher, row, shown)[0]),
    )


def _ranked(items: torch.Tensor, scores: torch.Tensor) -> list[tuple[int, float]]:
    order = torch.argsort(scores.cpu(), descending=True)
    return [(int(items[i]), float(scores[i])) for i in order]
