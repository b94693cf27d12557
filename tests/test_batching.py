"""Length-bucketed batches: every example once, random order, much less padding."""

import numpy as np
import pytest

from recbole_delrec.delrec.distill.batching import bucketed_batches, padding_share


def _lengths(n: int = 1000) -> list[int]:
    return np.random.default_rng(7).integers(370, 500, n).tolist()


def test_every_example_lands_in_exactly_one_batch_of_at_most_the_batch_size():
    batches = bucketed_batches(_lengths(), 16, 50, np.random.default_rng(0))
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(1000))
    assert max(len(b) for b in batches) == 16 and len(batches) == 63


def test_bucketing_removes_most_padding_and_window_one_is_a_plain_shuffle():
    lengths = _lengths()
    plain = bucketed_batches(lengths, 16, 1, np.random.default_rng(0))
    bucketed = bucketed_batches(lengths, 16, 50, np.random.default_rng(0))
    assert [i for b in plain for i in b] == np.random.default_rng(0).permutation(1000).tolist()
    assert padding_share(lengths, plain) > 0.1
    assert padding_share(lengths, bucketed) < 0.02


def test_batches_are_reproducible_by_seed_and_differ_between_epochs():
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    first = bucketed_batches(_lengths(), 16, 50, rng_a)
    assert first == bucketed_batches(_lengths(), 16, 50, rng_b)
    assert bucketed_batches(_lengths(), 16, 50, rng_a) != first


def test_a_zero_window_is_refused():
    with pytest.raises(ValueError, match="bucket window"):
        bucketed_batches([1, 2], 16, 0, np.random.default_rng(0))
