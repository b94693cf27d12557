"""Candidate-order sensitivity and mean-of-orders scoring on the tiny real DELRec."""

import pytest
import torch

from recbole_delrec.data.candidates import CandidateSets
from recbole_delrec.delrec.trainer import DELRecTrainer
from recbole_delrec.evaluation.order import check_orders, order_sensitivity


def test_orders_are_permutations_and_order_zero_is_the_evaluations(tiny_model):
    items = torch.arange(1, 21)
    orders = [tiny_model.prompt_order(items, 5, k) for k in range(4)]
    assert all(sorted(o.tolist()) == items.tolist() for o in orders)
    assert torch.equal(orders[0], tiny_model.prompt_order(items, 5))
    assert len({tuple(o.tolist()) for o in orders}) == 4


def test_order_sensitivity_on_the_tiny_model(tiny_model, tiny_data):
    _, _, _, test = tiny_data
    result = order_sensitivity(tiny_model, test, 3, _drawn(tiny_model))
    users = len(test._dataset)
    assert result["users"] == users and result["orders"] == 3
    assert len(result["position_share"]) == 20 and sum(result["position_share"]) == pytest.approx(1.0)
    assert 0.0 <= result["top1_agreement"] <= 1.0
    assert all(0.0 <= v <= 1.0 for v in result["per_order"]["hit@1"])
    assert result["hit@1"]["std"] >= 0.0 and result["ms_per_user"] > 0


def test_order_zero_matches_recbole_evaluation_and_mean_of_orders(tiny_model, tiny_data):
    config, _, _, test = tiny_data
    trainer = DELRecTrainer(config, tiny_model)
    evaluated = trainer.evaluate(test, load_best_model=False)
    result = order_sensitivity(tiny_model, test, 2, _drawn(tiny_model))
    assert result["evaluation_order"]["hit@1"] == pytest.approx(evaluated["hit@1"], abs=1e-4)
    tiny_model.candidate_orders = 2  # the `candidate_orders: 2` evaluation option
    averaged = trainer.evaluate(test, load_best_model=False)
    assert averaged["hit@1"] == pytest.approx(result["mean_of_orders"]["hit@1"], abs=1e-4)


def test_order_analysis_scores_the_runs_own_candidate_sets(tiny_model, tiny_data):
    """A run's sets need not be the sampler's draw (``candidates_path``): order 0 is what the
    run evaluated on its sets, not on a fresh draw."""
    config, _, _, test = tiny_data
    drawn = _drawn(tiny_model)
    other = CandidateSets(lambda user, target, history, phase: drawn.draw(user, target, history, "valid"))
    trainer = DELRecTrainer(config, tiny_model)
    trainer._candidate_sets = other  # as candidate_sets() would hold a loaded file's sets
    evaluated = trainer.evaluate(test, load_best_model=False)
    result = order_sensitivity(tiny_model, test, 2, other)
    assert result["evaluation_order"] == pytest.approx({m: evaluated[m] for m in ("hit@1", "ndcg@5")}, abs=1e-4)
    fresh = order_sensitivity(tiny_model, test, 2, _drawn(tiny_model))["evaluation_order"]
    assert fresh != pytest.approx(result["evaluation_order"], abs=1e-4)  # the sets differ, and so do the scores


def _drawn(model) -> CandidateSets:
    return CandidateSets.drawn(model.sampler, model.prompt_order)


def test_listed_scores_average_the_seeded_orders(tiny_model, tiny_data):
    """``candidate_orders: 2`` in evaluation: each candidate's mean score over order 0 (as
    listed) and order 1, which lists the same set as ``prompt_order(..., 1)`` does."""
    _, _, _, test = tiny_data
    rows = test._dataset.inter_feat[:3]
    users = rows[tiny_model.USER_ID]
    base = tiny_model.sampler.candidates(users, rows[tiny_model.POS_ITEM_ID], rows[tiny_model.ITEM_SEQ], "test")
    listed = torch.stack([tiny_model.prompt_order(row, int(u)) for row, u in zip(base, users)])
    second = torch.stack([tiny_model.prompt_order(row, int(u), 1) for row, u in zip(base, users)])
    assert torch.equal(torch.stack([tiny_model.listed_in_order(row, int(u), 1) for row, u in zip(listed, users)]),
                       second)
    tiny_model.eval()
    with torch.no_grad():
        one = tiny_model.score_listed(rows, listed)
        other = tiny_model.score_candidates(tiny_model.histories(rows), second)
        tiny_model.candidate_orders = 2
        mean = tiny_model.score_listed(rows, listed)
    realigned = torch.stack([o[[r.tolist().index(c) for c in l.tolist()]] for o, r, l in zip(other, second, listed)])
    assert torch.allclose(mean, (one + realigned) / 2, atol=1e-6)
    assert not torch.allclose(one, realigned)  # the order matters to the model, so the mean is no no-op


@pytest.mark.parametrize("bad", [0, 1, -3, "5", 2.0, True])
def test_fewer_than_two_orders_is_refused(bad):
    with pytest.raises(ValueError, match="candidate_orders"):
        check_orders(bad)
