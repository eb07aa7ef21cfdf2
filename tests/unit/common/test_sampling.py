"""even_spread: the deterministic subsets the evaluator's test-split sample and the trainer's val cap take."""

from __future__ import annotations

import pytest

from meshai_common.sampling import even_spread


def test_a_subset_is_spread_over_the_whole_list_from_its_first_item():
    assert even_spread(list(range(10)), 4) == [0, 2, 5, 7]
    assert even_spread(list(range(98)), 32)[-1] >= 90  # the tail of an ordered split is represented


@pytest.mark.parametrize("n", [0, -1, 10, 11])
def test_no_cap_or_a_cap_past_the_end_keeps_everything(n):
    assert even_spread(list("abcdefghij"), n) == list("abcdefghij")


def test_the_same_subset_every_time_and_no_repeats():
    items = [f"q{i}" for i in range(293)]
    first = even_spread(items, 40)
    assert first == even_spread(items, 40)
    assert len(first) == len(set(first)) == 40
