"""Synthetic pairs: grounded in the catalog, terse, within budget, never inventing a command."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from meshai_common.meshmaster import load_facts, unknown_slash_words
from meshai_common.prompts import parse_meshmaster_prompt
from meshai_data.synth import (
    FAKE_COMMANDS,
    SynthError,
    check_answer,
    generate,
    intent_weights,
    wrap_meshmaster,
)


@pytest.fixture(scope="module")
def pool():
    return generate(42, mailbox_names=["zeta"], locked_boxes=["zeta"])


def test_every_answer_is_short_real_and_labelled(pool):
    assert len(pool) > 5000
    for ex in pool:
        assert ex.question.strip() and ex.intent and ex.group.startswith(ex.intent.split(":")[0])
        assert len(ex.answer.encode()) <= 320
        assert unknown_slash_words(ex.answer) == [], ex
    sizes = [len(ex.answer.encode()) for ex in pool]
    assert sum(sizes) / len(sizes) < 160  # terse: the embedded model is tiny


def test_covers_the_public_suite_intents(pool):
    intents = Counter(ex.intent for ex in pool)
    needed = ["nodes", "relay", "mail_check", "mail_send", "optout", "find", "log", "report", "games", "onboard",
              "node_signal", "help", "fake_command"] + [f"fact:{t}" for t in ("snr", "ack", "chunks", "roles",
                                                                             "poor_signal")]
    for intent in needed:
        assert intents[intent] >= 10, intent
        assert intent_weights()[intent] >= 4


def test_commands_first_and_correct_usage(pool):
    by_intent = {}
    for ex in pool:
        by_intent.setdefault(ex.intent, set()).add(ex.answer)
    assert all(a.startswith("Send /nodes") for a in by_intent["nodes"])
    assert all("/optout" in a for a in by_intent["optout"])
    assert all(re.search(r"/m \S+ <message>", a) for a in by_intent["mail_send"])
    assert all(a.startswith("Send /c") for a in by_intent["mail_check"])
    assert all("/find" in a for a in by_intent["find"]) and all("/log" in a for a in by_intent["log"])
    assert all("/report" in a for a in by_intent["report"]) and all("/onboard" in a for a in by_intent["onboard"])


def test_relay_by_shortname_without_any_command(pool):
    relays = [ex for ex in pool if ex.intent == "relay"]
    named = [ex for ex in relays if "bob" in ex.question.split()]
    assert named
    for ex in named:
        assert "'bob " in ex.answer and "/" not in ex.answer
    assert all("/" not in ex.answer for ex in relays)


@pytest.mark.parametrize("fake", ["relay", "deletemesh", "superrelay", "hint"])
def test_fake_commands_are_refused_and_point_to_help(pool, fake):
    refusals = [ex for ex in pool if ex.intent == "fake_command" and f"/{fake}" in ex.question.split("?")[0]
                and re.search(rf"/{fake}\b", ex.question)]
    assert len(refusals) >= 8
    for ex in refusals:
        assert ex.answer.startswith(f"There is no {fake} command.")
        assert "/help" in ex.answer and f"/{fake}" not in ex.answer


def test_fake_list_holds_no_real_command():
    from meshai_common.meshmaster import is_known_command

    assert not [f for f in FAKE_COMMANDS if is_known_command(f)]


def test_technical_answers_come_from_the_facts_file(pool):
    facts = {item.answer for t in load_facts().topics.values() for item in t.items}
    tech = {ex.answer for ex in pool if ex.intent.startswith("fact:")}
    assert tech == facts
    chunk = " ".join(ex.answer for ex in pool if ex.intent == "fact:chunks")
    assert "160" in chunk
    assert any("20 s" in ex.answer for ex in pool if ex.intent == "fact:ack")


def test_mailbox_names_ground_mail_examples_without_bodies(pool):
    zeta = [ex for ex in pool if "zeta" in ex.question]
    assert zeta and all(ex.source == "mailboxes" for ex in zeta)
    assert any(ex.answer.startswith("Send /m zeta <message>") for ex in zeta)
    assert any(ex.answer.startswith("Send /c zeta <PIN>") for ex in zeta)  # the box is locked


def test_typos_never_touch_slot_values_or_commands(pool):
    for ex in pool:
        if ex.intent == "relay":
            m = re.search(r"DM me '(\S+)", ex.answer)
            if m and m.group(1) != "<shortname>":
                assert m.group(1) in ex.question
        if ex.intent == "explain":
            assert ex.answer.split(":")[0] in ex.question


def test_deterministic_per_seed():
    a, b, c = generate(7), generate(7), generate(8)
    assert a == b
    assert [e.question for e in a] != [e.question for e in c]


def test_check_answer_rejects_generator_bugs():
    assert check_answer("Send /nodes.") == "Send /nodes."
    with pytest.raises(SynthError, match="/relay"):
        check_answer("Use /relay bob hi.")
    with pytest.raises(SynthError, match="over 320"):
        check_answer("x" * 321)
    with pytest.raises(SynthError, match="empty"):
        check_answer("  ")


def test_about_a_fifth_wrapped_in_the_meshmaster_prompt(pool):
    sample = pool[:3000]
    wrapped = wrap_meshmaster(sample, seed=42)
    shaped = [ex for ex in wrapped if ex.user]
    assert 0.15 < len(shaped) / len(sample) < 0.25
    for ex in shaped:
        parsed = parse_meshmaster_prompt(ex.user)
        assert parsed is not None and parsed.question == ex.question.strip()
    assert wrap_meshmaster(sample, seed=42) == wrapped
