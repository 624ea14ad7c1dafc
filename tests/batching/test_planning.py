"""Batch planning: every index once, longest first, within the padded-token budget."""

from __future__ import annotations

import itertools
import random

import pytest

from conan_rag.batching.planning import padded_cost, plan_batches


def test_plan_covers_every_index_once_within_budget() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(1, 512) for _ in range(1000)]
    batches = plan_batches(lengths, token_budget=8192, max_batch_size=64)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    for batch in batches:
        assert len(batch) <= 64
        assert len(batch) * max(lengths[i] for i in batch) <= 8192
    # length-sorted: each batch's longest text is no longer than the previous batch's shortest
    for prev, nxt in itertools.pairwise(batches):
        assert max(lengths[i] for i in nxt) <= min(lengths[i] for i in prev)


def test_sorted_plan_pads_far_less_than_fixed_batches() -> None:
    rng = random.Random(1)
    lengths = [rng.choice([8, 16, 300, 500]) for _ in range(512)]
    planned = padded_cost(lengths, plan_batches(lengths, token_budget=16384))
    fixed = padded_cost(lengths, [list(range(i, i + 32)) for i in range(0, 512, 32)])
    assert planned < 0.7 * fixed
    assert planned >= sum(lengths)


def test_short_texts_share_big_batches_and_long_ones_go_alone() -> None:
    batches = plan_batches([4] * 100 + [600], token_budget=512, max_batch_size=1000)
    assert batches[0] == [100]  # longer than the budget: a batch of its own
    assert all(len(b) == 100 for b in batches[1:])


def test_bad_budget_is_an_error() -> None:
    with pytest.raises(ValueError, match="token_budget"):
        plan_batches([1, 2], token_budget=0)
    assert plan_batches([], token_budget=10) == []
