"""De-duplication and the group-aware split: nothing in val/test is seen in train."""

from __future__ import annotations

from collections import Counter

from meshai_data.normalize import near_dup_key
from meshai_data.split import dedupe, split
from meshai_data.synth import Example, generate


def _ex(q, intent="i", group="g"):
    return Example(q, "Send /help.", intent, group)


def test_near_duplicates_removed_first_wins():
    items = [_ex("How do I see the nodes?", group="a"), _ex("how do i see nodes", group="b"),
             _ex("hey, how do I see the nodes please!!", group="c"), _ex("how do I see all nodes", group="d"),
             _ex("   ", group="e")]
    kept, removed, _ = dedupe(items)
    assert [e.group for e in kept] == ["a", "d"] and removed == 3
    assert near_dup_key("Question: What's SNR?\nAnswer:") == near_dup_key("whats snr")


def test_groups_and_questions_never_cross_splits():
    pool, _, _ = dedupe(generate(3))
    parts = split(pool, seed=3)
    assert sum(map(len, parts.values())) == len(pool)
    owner = {}
    for name, items in parts.items():
        for ex in items:
            assert owner.setdefault(ex.group, name) == name
    keys = {name: {near_dup_key(e.question) for e in items} for name, items in parts.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]


def test_ratio_and_every_intent_trained():
    pool, _, _ = dedupe(generate(5))
    parts = split(pool, seed=5)
    n = len(pool)
    assert abs(len(parts["train"]) / n - 0.8) < 0.03
    assert abs(len(parts["val"]) / n - 0.1) < 0.03 and abs(len(parts["test"]) / n - 0.1) < 0.03
    assert set(Counter(e.intent for e in parts["train"])) == {e.intent for e in pool}


def test_deterministic_for_a_seed_and_seed_sensitive():
    pool, _, _ = dedupe(generate(1))
    a, b, c = split(pool, 11), split(pool, 11), split(pool, 12)
    assert a == b
    assert {e.group for e in a["test"]} != {e.group for e in c["test"]}


def test_train_is_interleaved_by_intent():
    pool, _, _ = dedupe(generate(1))
    train = split(pool, 1)["train"]
    head = Counter(e.intent for e in train[: len(train) // 10])
    assert len(head) >= 0.9 * len({e.intent for e in train})  # a tenth of the file already covers the intents


def test_small_intents_stay_in_train():
    items = [_ex(f"question {i}", intent="tiny", group=f"g{i % 2}") for i in range(6)]
    assert len(split(items, 0)["train"]) == 6
