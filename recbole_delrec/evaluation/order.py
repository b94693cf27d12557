"""Candidate-order sensitivity: does DELRec's answer depend on where a candidate is listed?

The LLM reads the candidates in prompt order, so a position bias (favouring the first or the
last listed item) would show as scores that move with the order.  :func:`order_sensitivity`
re-scores every test user's candidates (the run's own sets, as evaluated) under ``orders``
seeded orders (``DELRec.listed_in_order(listed, user, k)``; order 0 is the evaluation's own) and reports Hit@1 and
NDCG@5 per order (mean and std across orders), how often two orders agree on the top-1 item,
the share of top-1 picks at each listed position (flat = no bias; compare with 1/C, with a
chi-square test of uniformity), the metrics of the mean score over the orders (the
``candidate_orders`` evaluation option) and the scoring cost per user.

The candidates are the run's test candidate sets (``candidates_path`` when given, else the
sampler's fixed draw), also for a full-ranking run.
"""

from __future__ import annotations

import time
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from recbole_delrec.data.candidates import CandidateSets
from recbole_delrec.delrec.model import realigned
from recbole_delrec.evaluation.outcomes import outcome
from recbole_delrec.evaluation.scoring import user_rows
from recbole_delrec.evaluation.summary import ORDER_FILE
from recbole_delrec.runs.artifacts import save_json

METRICS = ("hit@1", "ndcg@5")


def check_orders(orders: Any) -> int:
    """``orders`` as an integer >= 2, or an error saying why (one order has nothing to compare)."""
    if isinstance(orders, bool) or not isinstance(orders, int) or orders < 2:
        raise ValueError(f"--candidate_orders={orders!r}: give an integer >= 2 (orders to compare), e.g. 5.")
    return orders


@torch.no_grad()
def order_sensitivity(model, test_data, orders: int, candidate_sets: CandidateSets) -> dict[str, Any]:
    """Scores of every test user's candidates in ``candidate_sets`` (the run's, see
    :meth:`DELRecTrainer.candidate_sets`) under ``orders`` orders, summarised (see module doc)."""
    check_orders(orders)
    model.eval()
    ranks, top_items, top_positions, mean_ranks = [], [], [], []
    seconds = 0.0
    for batch in test_data:
        rows = user_rows(batch)[0]
        users, targets = rows[model.USER_ID], rows[model.POS_ITEM_ID]
        candidates = candidate_sets.rows("test", users, targets, rows[model.ITEM_SEQ])  # evaluation order
        histories = model.histories(rows)
        start = time.perf_counter()
        listed = [candidates] + [torch.stack([model.listed_in_order(c, u, k) for c, u in zip(candidates, users.tolist())])
                                 for k in range(1, orders)]
        scores = [model.score_candidates(histories, order).float().cpu() for order in listed]
        seconds += time.perf_counter() - start
        ranks.append(torch.stack([_target_rank(s, o, targets) for s, o in zip(scores, listed)], 1))
        picks = [s.argmax(1) for s in scores]
        top_positions.append(torch.stack(picks, 1))
        top_items.append(torch.stack([o.gather(1, p[:, None])[:, 0] for o, p in zip(listed, picks)], 1))
        mean_ranks.append(_target_rank(_mean_by_item(scores, listed, candidates), candidates, targets))
    return _summary(torch.cat(ranks).numpy(), torch.cat(top_items).numpy(), torch.cat(top_positions).numpy(),
                    torch.cat(mean_ranks).numpy(), seconds, model.sampler.n_candidates)


def _target_rank(scores: torch.Tensor, listed: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each row's target among its candidates (ties counted in its favour)."""
    target_scores = scores.gather(1, (listed == targets[:, None].cpu()).float().argmax(1, keepdim=True))
    return (scores > target_scores).sum(1) + 1


def _mean_by_item(scores: list[torch.Tensor], listed: list[torch.Tensor], candidates: torch.Tensor) -> torch.Tensor:
    """Each candidate's mean score over the orders, in ``candidates``' column order."""
    return sum(realigned(s, order, candidates) for s, order in zip(scores, listed)) / len(scores)


def _summary(ranks, top_items, top_positions, mean_ranks, seconds: float, n_candidates: int) -> dict[str, Any]:
    users, orders = ranks.shape
    per_order = {m: [float(outcome(ranks[:, k], m).mean()) for k in range(orders)] for m in METRICS}
    agreement = np.mean([(top_items[:, i] == top_items[:, j]).mean() for i, j in combinations(range(orders), 2)])
    counts = np.bincount(top_positions.reshape(-1), minlength=n_candidates)
    share = counts / counts.sum()
    summary = {
        "orders": orders, "users": users, "n_candidates": n_candidates,
        "per_order": per_order,
        **{m: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1))} for m, v in per_order.items()},
        "top1_agreement": float(agreement),
        "position_share": share.tolist(), "uniform_share": 1 / n_candidates,
        "position_chi2_pvalue": float(stats.chisquare(counts).pvalue),
        "evaluation_order": {m: per_order[m][0] for m in METRICS},
        "mean_of_orders": {m: float(outcome(mean_ranks, m).mean()) for m in METRICS},
        "ms_per_user": 1000 * seconds / users, "ms_per_user_per_order": 1000 * seconds / users / orders,
    }
    summary["records"] = {
        "top1_agreement": summary["top1_agreement"],
        "first_position_share": float(share[0]), "mean_of_orders.hit@1": summary["mean_of_orders"]["hit@1"],
        "ms_per_user": summary["ms_per_user"], "position_chi2_pvalue": summary["position_chi2_pvalue"],
        **{f"{m}.{k}": summary[m][k] for m in METRICS for k in ("mean", "std")},
    }
    return summary


def analyse_run(run_dir: str | Path, orders: int, model: str = "DELRec", dataset: str = "ml-100k",
                config_file_list: list[str] | None = None) -> dict[str, Any]:
    """Order sensitivity of a finished run, saved as ``order.json`` in its folder."""
    from recbole_delrec.delrec.quick_start import load_run

    check_orders(orders)
    started = load_run(run_dir, model, dataset, config_file_list)
    started.trainer.load_checkpoint(started.trainer.saved_model_file)
    test_data = started.test_data
    result = order_sensitivity(started.model, test_data, orders, started.trainer.candidate_sets(test_data._dataset))
    save_json(result, Path(run_dir) / ORDER_FILE)
    return result


def order_table(result: dict[str, Any]) -> str:
    """A few lines a user reads after ``--candidate_orders``."""
    share = result["position_share"]
    return "\n".join([
        f"{result['orders']} candidate orders x {result['users']} users ({result['n_candidates']} candidates):",
        *(f"  {m}: {result[m]['mean']:.4f} ± {result[m]['std']:.4f} (std across orders); evaluation order "
          f"{result['evaluation_order'][m]:.4f}; mean score over orders {result['mean_of_orders'][m]:.4f}"
          for m in METRICS),
        f"  top-1 agreement between two orders: {result['top1_agreement']:.3f}",
        f"  top-1 at listed position 1: {share[0]:.3f}, last: {share[-1]:.3f}, flat would be {result['uniform_share']:.3f} "
        f"(chi-square p = {result['position_chi2_pvalue']:.3g})",
        f"  cost: {result['ms_per_user_per_order']:.1f} ms per user per order, {result['ms_per_user']:.1f} ms per user "
        f"for the mean of {result['orders']} orders",
    ])
