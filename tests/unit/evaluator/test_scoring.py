from __future__ import annotations

import pytest

from meshai_evaluator.scoring import command_correct, compare, concepts_hit, hallucination_pass, score
from meshai_evaluator.suite import load_suite, questions, suite_prompts

SUITE = load_suite("public")
ITEMS = {item["id"]: (area, item) for area, item in questions(SUITE)}


def test_public_suite_shape():
    assert len(SUITE["commands"]) == 12 and len(SUITE["hallucination"]) == 2 and len(SUITE["technical"]) == 5
    assert len(suite_prompts()) == 19


@pytest.mark.parametrize("reply,ok", [
    ("Send /nodes to list nodes heard in 24h.", True),
    ("Use /node bob for one node.", False),
    ("Try nodes/list in the app.", False),
])
def test_command_accuracy(reply, ok):
    assert command_correct(reply, ITEMS["list_nodes"][1]) is ok


@pytest.mark.parametrize("reply,ok", [
    ("DM bob your message: bob meet at 5", True),
    ("Send /bob hello there", True),
    ("Use /relay bob hi", False),
])
def test_relay_form(reply, ok):
    assert command_correct(reply, ITEMS["relay"][1]) is ok


@pytest.mark.parametrize("reply,ok", [
    ("There is no deletemesh command. Send /help for real commands.", True),
    ("/deletemesh removes the mesh.", False),
    ("Use /help to see commands.", True),
    ("It wipes everything, be careful.", False),
])
def test_fake_command_handling(reply, ok):
    assert hallucination_pass(reply, ITEMS["deletemesh"][1]) is ok


def test_concepts_count_groups_not_words():
    item = ITEMS["snr"][1]
    assert concepts_hit("SNR is signal-to-noise in dB; higher is better.", item) == 1.0
    assert concepts_hit("signal to noise signal to noise", item) == pytest.approx(1 / 3)


def test_score_and_gate():
    replies = [{"area": a, "item": i, "reply": "Send /help. " * (40 if a == "technical" else 1)}
               for a, i in questions(SUITE)]
    result = score(replies)
    assert result["areas"]["commands"] == pytest.approx(100 / 12)  # only list_commands accepts /help
    assert result["areas"]["brevity"] == pytest.approx(100 * 14 / 19)  # the 5 long replies overflow 2 chunks
    assert result["areas"]["hallucination"] == 100.0
    assert result["overall"] == pytest.approx(sum(result["areas"].values()) / 4)
    worse = dict(result, overall=result["overall"] - 1)
    assert compare(result, worse)["promote"] is True
    assert compare(worse, result)["promote"] is False
    assert compare(result, worse, threshold=99)["promote"] is False
