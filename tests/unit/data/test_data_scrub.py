"""Scrubbing: what identifies people becomes a placeholder, and each kind is counted."""

from __future__ import annotations

import pytest

from meshai_data.scrub import Scrubber, scrub


@pytest.mark.parametrize("text,kind,expected", [
    ("ping !89449aaa now", "node_id", "ping <node_id> now"),
    ("ids !376BE684,!0badc0de", "node_id", "ids <node_id>,<node_id>"),
    ("call +1 555 123 4567", "phone", "call <phone>"),
    ("call (555) 123-4567 pls", "phone", "call <phone> pls"),
    ("cell 555-123-4567.", "phone", "cell <phone>."),
    ("uk +44 20 7946 0958", "phone", "uk <phone>"),
    ("text 5551234567", "phone", "text <phone>"),
    ("mail bob.smith+mesh@example.co.uk today", "email", "mail <email> today"),
    ("I'm at 40.71280, -74.00600", "coords", "I'm at <coords>"),
    ("camp 40.7128° N, 74.0060° W", "coords", "camp <coords>"),
    ("lat: 51.5074 lon: -0.1278 ok", "coords", "<coords> ok"),
    ("my PIN is 4821", "pin", "my PIN is <pin>"),
    ("pin: 0042", "pin", "pin: <pin>"),
    ("/c camp 4821 water", "pin", "/c camp <pin> water"),
    ("/checkmail ops 99881", "pin", "/checkmail ops <pin>"),
])
def test_each_kind(text, kind, expected):
    out, counts = scrub(text)
    assert out == expected
    assert counts[kind] >= 1 and sum(counts.values()) == counts[kind]


@pytest.mark.parametrize("text", [
    "US band is 902-928 MHz (915)", "SNR -7.5 dB, RSSI -118 dBm", "2025-09-20 08:37:04 UTC",
    "hop limit 3, max 7", "Send /nodes or /c camp", "chunks of 160 bytes, 5 s apart", "/alarm 6:30am daily",
    "node 40.7 is not a place", "version 2.5.11", "Send /m <mailbox> <message>",
])
def test_no_false_positives(text):
    out, counts = scrub(text)
    assert out == text and not counts


def test_known_names_and_running_totals():
    s = Scrubber(["NWBC", "Bob", "!89449aaa", "xy"])  # ids and 2-letter names are not name-scrubbed
    assert s("NWBC said hi to Bob at !89449aaa") == "<name> said hi to <name> at <node_id>"
    assert s("NWBCX and bob stay") == "NWBCX and bob stay"  # whole words, exact case
    assert s("xy call 555-123-4567") == "xy call <phone>"
    assert s.counts() == {"email": 0, "coords": 0, "phone": 1, "node_id": 1, "pin": 0, "name": 2}
