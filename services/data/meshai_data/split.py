"""De-duplication and the train/val/test split.

Near-duplicates (same `near_dup_key` of the question) are removed first, the earliest kept, so callers list
the most trusted sources first. The split then keeps every template group (one phrasing of one intent, with
its typo and slot variants) in a single split, per intent, so val/test only hold phrasings train never saw.
Deterministic for a seed; about 80/10/10 of each intent that has at least three groups (smaller intents go
to train whole: a test item there would be a copy of a train item's phrasing).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable

from meshai_data.normalize import near_dup_key
from meshai_data.normalize import stable_hash as _h
from meshai_data.synth import Example

SPLITS = ("train", "val", "test")
RATIOS = {"val": 0.1, "test": 0.1}


def dedupe(examples: Iterable[Example], exclude: Collection[str] = ()) -> tuple[list[Example], int, int]:
    """Drop near-duplicate questions (first wins), then questions whose key is in `exclude`.

    Returns (kept, duplicates removed, excluded keys hit).
    """
    seen: set[str] = set()
    kept, removed, excluded = [], 0, 0
    for ex in examples:
        key = near_dup_key(ex.question)
        if not key or key in seen:
            removed += 1
            continue
        seen.add(key)
        if key in exclude:
            excluded += 1
            continue
        kept.append(ex)
    return kept, removed, excluded


def split(examples: list[Example], seed: int) -> dict[str, list[Example]]:
    """Assign whole template groups to train/val/test, intent by intent; each split interleaved by intent."""
    by_intent: dict[str, dict[str, list[Example]]] = defaultdict(lambda: defaultdict(list))
    for ex in examples:
        by_intent[ex.intent][ex.group].append(ex)
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for intent in sorted(by_intent):
        groups = by_intent[intent]
        order = sorted(groups, key=lambda g: (_h(seed, "split", intent, g), g))
        if len(order) < 3:
            for g in order:
                out["train"].extend(groups[g])
            continue
        # Systematic sampling: lay the groups on a circle in proportion to their size, turn it by a seeded
        # offset, and send the groups whose midpoint falls in the first 10 % to test, the next 10 % to val.
        # Each example has a 10 % chance to be in test whatever the group sizes, so the ratio holds for big
        # intents and, on average, for small ones.
        total = sum(len(groups[g]) for g in order)
        offset = (_h(seed, "offset", intent) % 1_000_000) / 1_000_000
        cum = 0
        dest_of = {}
        for g in order:
            pos = ((cum + len(groups[g]) / 2) / total + offset) % 1.0
            cum += len(groups[g])
            dest_of[g] = "test" if pos < RATIOS["test"] else "val" if pos < RATIOS["test"] + RATIOS["val"] else "train"
        if all(d != "train" for d in dest_of.values()):
            dest_of[max(order, key=lambda g: len(groups[g]))] = "train"  # every intent keeps a phrasing in train
        for g in order:
            out[dest_of[g]].extend(groups[g])
    return {name: interleave(items, seed) for name, items in out.items()}


def interleave(examples: list[Example], seed: int) -> list[Example]:
    """Order so any prefix holds every intent in proportion: a trainer that stops early still saw them all."""
    by_intent: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_intent[ex.intent].append(ex)
    keyed = []
    for intent, items in by_intent.items():
        items.sort(key=lambda e: _h(seed, "order", e.group, e.question))
        n = len(items)
        for rank, ex in enumerate(items):
            keyed.append(((rank + 0.5) / n, _h(seed, "tie", intent), ex))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [k[2] for k in keyed]
