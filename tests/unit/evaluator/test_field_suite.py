"""The field suite: its shape, its coverage of the catalog, and a scorer that only a right answer passes."""

from __future__ import annotations

import difflib
import re

import pytest

from meshai_common.meshmaster import load_catalog
from meshai_evaluator.scoring import judge, score
from meshai_evaluator.suite import load_suite, questions
from meshai_testing import right_suite_answer

FIELD = load_suite("field")
PUBLIC = load_suite("public")
ITEMS = questions(FIELD)
CATALOG = load_catalog()

# A right, short answer to every technical item, worded as a person would.
TECH = {
    "snr_meaning": "SNR is signal-to-noise ratio, in dB. Higher is better.",
    "snr_unit": "SNR is in dB (decibels); higher means a cleaner signal.",
    "snr_floor": "LoRa still decodes below 0 dB, down to about -20 dB SNR.",
    "snr_negative_ctx": "-14 is fine: negative SNR is normal on LoRa, it decodes down to about -20 dB.",
    "snr_good": "Yes, +9 dB is a solid link; anything above 0 dB is good.",
    "rssi_meaning": "RSSI is received signal strength in dBm. Closer to 0 is stronger; -120 dBm is very weak.",
    "rssi_weak_ctx": "-121 dBm is very weak, right at the edge. Check SNR and raise the antenna.",
    "rssi_vs_snr": "RSSI is raw signal strength in dBm; SNR is how far it sits above the noise, in dB.",
    "rssi_unit": "RSSI is measured in dBm (received power).",
    "hop_default": "The hop limit defaults to 3, max 7. Each relay lowers it by one.",
    "hop_max": "Max hop limit is 7; the default is 3.",
    "hop_what": "A hop is one rebroadcast by a node. Each relay lowers the hop limit by one.",
    "hop_seven_ctx": "Keep the default 3 unless messages die early. 7 is the max but every hop costs airtime.",
    "hop_zero": "At 0 the message stops: no node rebroadcasts it further.",
    "roles_list": "CLIENT (normal), CLIENT_MUTE (never rebroadcasts), ROUTER and REPEATER (always rebroadcast).",
    "client_mute_role": "CLIENT_MUTE sends and receives but never rebroadcasts. Use it next to a better node.",
    "second_radio_role_ctx": "Make the desk one CLIENT_MUTE so only the roof node rebroadcasts.",
    "router_handheld": "No. ROUTER is for high, fixed nodes that always rebroadcast; a handheld stays CLIENT.",
    "repeater_role": "A REPEATER always rebroadcasts, as fixed infrastructure; a CLIENT is a normal node.",
    "band_us": "The US uses 902-928 MHz, the 915 MHz band.",
    "band_eu": "Germany is in the EU: use the 868 MHz band.",
    "band_compare": "US: 915 MHz (902-928). EU: 868 MHz.",
    "lora_what": "LoRa is long-range, low-power radio using chirp spread spectrum.",
    "chunk_bytes": "Replies go out in 160-byte chunks.",
    "payload_max": "One Meshtastic text holds about 200-237 bytes; Mesh-Master chunks at 160.",
    "reply_split_ctx": "Replies are cut into 160-byte chunks, each one radio message, sent about 5 s apart.",
    "max_chunks_sent": "At most 5 chunks are sent; the rest is silently dropped.",
    "chunk_gap": "About 5 seconds between chunks.",
    "ack_wait": "A DM waits about 20 s for an ACK in the relay path, then retries.",
    "ack_relay_ctx": "About 20 seconds for the ACK, then it retries.",
    "ack_what": "An ACK confirms delivery. No ACK after about 20 s and the DM is resent.",
    "poor_signal_valley": "Raise the antenna, get line of sight, check SNR/RSSI, and add a router up high.",
    "range_handheld": "Height wins: raise the antenna, get line of sight, add a well-placed router.",
    "mailbox_cap": "A mailbox holds 10 messages.",
    "nodes_window": "/nodes lists nodes heard in the last 24h, newest first.",
    "mail_search_hits": "A mail search with /c shows at most 5 hits.",
    "onboard_steps": "The /onboard tour has 9 steps.",
    "elapsed_suffix": "That's the elapsed seconds: how long the answer took.",
}


def right_answer(area: str, item: dict) -> str:
    return right_suite_answer(area, item, TECH)


def overall_for(reply: str) -> dict:
    return score([{"area": a, "item": i, "reply": reply} for a, i in ITEMS])


# -- shape and coverage ----------------------------------------------------------------------------------------

def test_field_suite_size_and_unique_ids():
    assert len(ITEMS) >= 150
    assert len(FIELD["hallucination"]) >= 25
    assert len(FIELD["technical"]) >= 30
    ids = [item["id"] for _, item in ITEMS]
    assert len(ids) == len(set(ids))


def test_every_catalog_command_is_an_accepted_answer_somewhere():
    accepted = {CATALOG.get(a).name for item in FIELD["commands"] for a in item.get("accept", ()) if CATALOG.get(a)}
    assert {c.name for c in CATALOG.commands} - accepted == set()


def test_accepts_are_real_and_fakes_are_not():
    for item in FIELD["commands"]:
        for name in item.get("accept", ()):
            assert CATALOG.get(name) is not None or name in CATALOG.plain_words, (item["id"], name)
    fakes = [item["fake"] for item in FIELD["hallucination"]]
    assert not [f for f in fakes if CATALOG.get(f) is not None or f in CATALOG.plain_words]
    assert {"deletemesh", "superrelay", "relay"}.isdisjoint(fakes)


def test_relay_plain_word_and_context_items_are_there():
    cmds = FIELD["commands"]
    assert sum(bool(i.get("relay")) for i in cmds) >= 5
    assert {w for i in cmds for w in i.get("accept", ()) if w in CATALOG.plain_words} == set(CATALOG.plain_words)
    with_context = [i for _, i in ITEMS if i.get("context")]
    assert len(with_context) >= 15
    assert {a for a, i in ITEMS if i.get("context")} == {"commands", "hallucination", "technical"}


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9/ ]+", " ", text.lower()).split())


def test_no_field_question_is_near_a_public_one():
    public = [_norm(i["question"]) for _, i in questions(PUBLIC)]
    for _, item in ITEMS:
        q = _norm(item["question"])
        close = [p for p in public if difflib.SequenceMatcher(None, q, p).ratio() >= 0.8]
        assert not close, (item["id"], close)


# -- a right answer passes, a wrong one does not -----------------------------------------------------------

def test_a_right_short_answer_passes_every_item():
    result = score([{"area": a, "item": i, "reply": right_answer(a, i)} for a, i in ITEMS])
    failed = [(d["id"], d["reason"]) for d in result["items"] if not d["passed"]]
    assert failed == []
    assert result["overall"] == 100.0 and result["hallucinated_command_rate"] == 0.0


def test_the_right_answer_to_another_command_fails():
    cmds = [i for i in FIELD["commands"] if i.get("accept") and CATALOG.get(i["accept"][0])]
    wrong = 0
    for item, other in zip(cmds, cmds[1:] + cmds[:1], strict=True):
        if not set(map(lambda a: CATALOG.get(a).name, other["accept"][:1])) & {
                CATALOG.get(a).name for a in item["accept"] if CATALOG.get(a)}:
            wrong += 1
            assert not judge("commands", item, right_answer("commands", other)).passed, (item["id"], other["id"])
    assert wrong > 80


@pytest.mark.parametrize("reply", [
    # a fixed reply listing many commands and every concept keyword
    "Send /nodes /c /m /help /find /log /report /games. SNR signal-to-noise dB higher better; RSSI dBm -120 weak; "
    "hop 3 max 7; CLIENT ROUTER REPEATER CLIENT_MUTE; 915 868 MHz; 160 bytes chunk; ack 20 s retry; antenna",
    # the same keywords without a command, and every number the suite asks about
    "SNR signal-to-noise dB higher better. RSSI dBm -120 weak, -20. Hop limit 3 max 7, relay. CLIENT ROUTER "
    "REPEATER CLIENT_MUTE never rebroadcasts. 915 868 MHz. 160 bytes chunk 5 s. ACK 20 s retry. 10, 24h, 9, 200-237.",
    "I don't know.",
    "Not sure, sorry.",
    "I can't help with that.",
    "Send /help.",
    "No such command. Send /help.",
])
def test_one_fixed_reply_for_everything_scores_low(reply):
    result = overall_for(reply)
    assert result["overall"] <= 25, (reply, result["areas"])


def test_a_keyword_and_number_soup_passes_no_technical_item():
    soup = ("SNR signal-to-noise dB higher better. RSSI dBm -120 weak, -20. Hop limit 3 max 7, relay. CLIENT ROUTER "
            "REPEATER CLIENT_MUTE never rebroadcasts. 915 868 MHz. 160 bytes chunk 5 s. ACK 20 s retry. 10, 24h, 9.")
    assert overall_for(soup)["areas"]["technical"] <= 10


def test_listing_every_fake_word_passes_no_fake_item():
    words = ", ".join(item["fake"] for item in FIELD["hallucination"])
    result = overall_for(f"There are no commands called {words}. Send /help.")
    assert result["areas"]["hallucination"] == 0.0


def test_empty_and_evasive_replies_earn_nothing_anywhere():
    for reply in ("", "   ", "I don't know."):
        result = overall_for(reply)
        assert result["overall"] == 0.0 and set(result["areas"].values()) == {0.0}
        assert {d["reason"] for d in result["items"]} == {"empty" if not reply.strip() else "evasive"}
