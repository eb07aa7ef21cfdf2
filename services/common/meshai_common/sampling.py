"""Deterministic subsets: the same items every run, spread over the whole list rather than its head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def even_spread(items: Sequence[T], n: int) -> list[T]:
    """At most `n` of `items`, evenly spaced from the first (all of them when n <= 0 or n >= len(items)).
    A split written in order (by intent, by source) keeps its mix."""
    if n <= 0 or n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]
