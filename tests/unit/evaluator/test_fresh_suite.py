"""The fresh suite (the check that is never tuned on): real commands, fakes that no training list holds,
questions near none of the other suites', and a scorer that a right answer passes and a fixed one does not."""

from __future__ import annotations

import difflib
import re

import pytest

from meshai_common.meshmaster import load_catalog
from meshai_common.meshmaster.intents import load_phrasing
from meshai_evaluator.scoring import score
from meshai_evaluator.suite import load_suite, questions
from meshai_testing import right_suite_answer

FRESH = load_suite("fresh")
ITEMS = questions(FRESH)
CATALOG = load_catalog()

TECH = {
    "snr_negative": "-12 is fine: negative SNR is normal on LoRa, it decodes down to about -20 dB.",
    "snr_what": "SNR is the signal-to-noise ratio.",
    "rssi_strong": "Yes, -60 dBm is strong; closer to 0 is stronger.",
    "hops_default": "The hop limit defaults to 3 hops.",
    "hops_max": "The hop limit goes up to 7 hops.",
    "role_client": "A handheld stays CLIENT.",
    "role_router": "ROUTER always rebroadcasts: use it only on a high, fixed node.",
    "band_us": "The US uses the 915 MHz band (902-928 MHz).",
    "band_uk": "The UK uses the 868 MHz band.",
    "chunk_size": "Each chunk is 160 bytes.",
    "chunk_count": "At most 5 chunks; the rest is dropped.",
    "lora_what": "LoRa means long range: low-power radio with chirp spread spectrum.",
    "range_tips": "Raise the antenna higher and get line of sight.",
    "mailbox_size": "A mailbox holds 10 messages.",
}


def right_answer(area: str, item: dict) -> str:
    return right_suite_answer(area, item, TECH)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9/ ]+", " ", text.lower()).split())


def test_shape_real_commands_and_fakes_no_training_list_holds():
    assert (len(FRESH["commands"]), len(FRESH["hallucination"]), len(FRESH["technical"])) == (61, 15, 14)
    assert set(TECH) == {i["id"] for i in FRESH["technical"]}
    for item in FRESH["commands"]:
        for name in item.get("accept", ()):
            assert CATALOG.get(name) is not None or name in CATALOG.plain_words, (item["id"], name)
    trained = {f.fake for f in load_phrasing().fake_commands}
    for item in FRESH["hallucination"]:
        assert CATALOG.get(item["fake"]) is None and item["fake"] not in trained, item["id"]


def test_no_fresh_question_is_near_one_of_another_suite():
    others = [_norm(i["question"]) for name in ("field", "public") for _, i in questions(load_suite(name))]
    for _, item in ITEMS:
        q = _norm(item["question"])
        close = [o for o in others if difflib.SequenceMatcher(None, q, o).ratio() >= 0.8]
        assert not close, (item["id"], close)


def test_a_right_short_answer_passes_every_item():
    result = score([{"area": a, "item": i, "reply": right_answer(a, i)} for a, i in ITEMS])
    assert [(d["id"], d["reason"]) for d in result["items"] if not d["passed"]] == []
    assert result["overall"] == 100.0


@pytest.mark.parametrize("reply", [
    "Send /nodes /c /m /help /find /log /games. SNR signal-to-noise ratio dB; RSSI dBm strong good; hop 3 max 7; "
    "CLIENT ROUTER rebroadcast high fixed; 915 868 MHz; 160 bytes chunk 5; long range antenna higher; 10 messages",
    "I don't know.",
    "Send /help.",
    "No such command. Send /help.",
])
def test_one_fixed_reply_for_everything_scores_low(reply):
    result = score([{"area": a, "item": i, "reply": reply} for a, i in ITEMS])
    assert result["overall"] <= 25, (reply, result["areas"])
