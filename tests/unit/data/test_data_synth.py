"""Synthetic pairs: grounded in the catalog, terse, within budget, never inventing a command."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from datatest_helpers import assert_intent_weights

from meshai_common.meshmaster import load_facts, load_intents, load_phrasing, unknown_slash_words
from meshai_common.prompts import parse_meshmaster_prompt
from meshai_data.synth import (
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


def test_covers_every_intent_and_weighs_them_alike(pool):
    intents = Counter(ex.intent for ex in pool)
    every = [i.id for i in load_intents()] + [f"fact:{t}" for t in load_facts().topics]
    for intent in every:
        assert intents[intent] >= 8, intent
    weights = intent_weights()
    # every command intent alike but where intents.yaml gives a reason, every fact topic alike
    assert_intent_weights({i.id: weights[i.id] for i in load_intents()})
    assert len({weights[f"fact:{t}"] for t in load_facts().topics}) == 1
    assert intents["fake_command"] >= 200


def test_commands_first_and_correct_usage(pool):
    by_intent = {}
    for ex in pool:
        by_intent.setdefault(ex.intent, set()).add(ex.answer)
    assert all(a.startswith("Send /nodes") for a in by_intent["nodes"])
    assert all("/optout" in a for a in by_intent["optout"])
    assert all(re.match(r"Send /m \S+ \S", a) for a in by_intent["mail_send"])
    assert all(a.startswith("Send /c") for a in by_intent["mail_check"])
    assert all("/find" in a for a in by_intent["find"]) and all("/log" in a for a in by_intent["log"])
    assert all("/report" in a for a in by_intent["report"]) and all("/onboard" in a for a in by_intent["onboard"])


@pytest.mark.parametrize("name", ["ray", "K7AB", "RV01"])
def test_relay_by_shortname_without_any_command(pool, name):
    relays = [ex for ex in pool if ex.intent == "relay"]
    named = [ex for ex in relays if re.search(rf"\b{name}\b", ex.question)]
    assert named
    for ex in named:
        assert f"'{name} " in ex.answer and "/" not in ex.answer
    assert all("/" not in ex.answer for ex in relays)


@pytest.mark.parametrize("fake", ["relay", "nuke", "hint", "inbox"])
def test_fake_commands_are_refused_and_point_to_help(pool, fake):
    refusals = [ex for ex in pool if ex.intent == "fake_command" and re.search(rf"/{fake}\b", ex.question)]
    assert len(refusals) >= 8
    for ex in refusals:
        assert ex.answer.startswith(f"{fake} is not a command.")
        assert "/help" in ex.answer and f"/{fake}" not in ex.answer


def test_listed_fake_words_are_many_with_few_asks_each(pool):
    listed = [f.fake for f in load_phrasing().fake_commands if f.from_word_list]
    per_word = Counter()
    for ex in pool:
        if ex.intent == "fake_command":
            word = re.match(r"(\w+) is not a command\.", ex.answer)
            assert word, ex.answer
            per_word[word.group(1)] += 1
            assert not re.search(rf"/{word.group(1)}\b", ex.answer) and re.search(rf"\b{word.group(1)}\b", ex.question.lower())
    counts = [per_word[w] for w in listed]
    frames = len(load_phrasing().fake_asks)
    assert min(counts) >= 1 and max(counts) < frames  # a few asks per listed word, not the whole frame list
    assert sum(counts) > len(listed) * 2


def test_fake_list_holds_no_real_command():
    from meshai_common.meshmaster import is_known_command

    fakes = [f.fake for f in load_phrasing().fake_commands]
    assert len(fakes) >= 40 and not [f for f in fakes if is_known_command(f)]


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
                assert m.group(1) in ex.question or m.group(1) in " ".join(ex.history)
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


def test_most_turns_shaped_like_meshmaster_with_varied_bot_texts(pool):
    sample = pool[::3]
    wrapped = wrap_meshmaster(sample, seed=42)
    shaped = [ex for ex in wrapped if ex.user]
    assert 0.7 <= len(shaped) / len(sample) < 0.85
    systems, with_history = Counter(), 0
    for ex in shaped:
        parsed = parse_meshmaster_prompt(ex.user)
        assert parsed is not None and parsed.question == ex.question.strip()
        systems[parsed.system] += 1
        with_history += bool(parsed.context)
    assert len(systems) >= 6 and 0.1 < systems[""] / len(shaped) < 0.4  # several operators, some send none
    assert 0.5 < with_history / len(shaped) < 0.9
    assert wrap_meshmaster(sample, seed=42) == wrapped


def test_questions_that_refer_to_their_history_carry_it(pool):
    referring = [ex for ex in pool if ex.history]
    assert len({ex.intent for ex in referring}) >= 5
    for ex in wrap_meshmaster(referring, seed=42):
        parsed = parse_meshmaster_prompt(ex.user)
        assert parsed is not None and parsed.context[-len(ex.history):] == ex.history
    relays = [ex for ex in referring if ex.intent == "relay"]
    assert relays
    for ex in relays:  # "how do i send him one" after "K7AB: anyone seen ray?": the name comes from the history
        name = re.search(r"DM me '(\S+)", ex.answer).group(1)
        assert name in ex.history[0] and name not in ex.question.split()


def test_real_traffic_styles(pool):
    questions = [ex.question for ex in pool]
    lower = sum(q == q.lower() for q in questions) / len(questions)
    assert lower > 0.45
    shorthand = re.compile(r"\b(u|ur|pls|msg|chk|rn|tmrw|2|4|wx|thx)\b")
    assert sum(bool(shorthand.search(q)) for q in questions) / len(questions) > 0.1
    short = [q for q in questions if len(q.split()) <= 3]
    assert len(short) > 500 and "nodes?" in {q.lower() for q in short}
    typos = sum(ex.typo for ex in pool) / len(pool)
    assert typos < 0.5  # one misspelled copy per phrasing at most by default


def test_contrast_pairs_name_the_right_command(pool):
    answers = {ex.question.lower().rstrip("?"): ex.answer for ex in pool if ":c" in ex.group and not ex.typo}
    assert answers["search my notes"].startswith("Send /find")
    assert answers["read my private notes"].startswith("Send /checklog")
    assert answers["read my mailbox"].startswith("Send /c")
    assert answers["read public reports"].startswith("Send /checkreport")
    assert answers["stop relays to me"].startswith("Send /optout")
    assert answers["stop ur replies"].startswith("Send /stop")
