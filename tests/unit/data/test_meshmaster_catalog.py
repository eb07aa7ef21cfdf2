"""The command catalog and the slash-word check every stage relies on (the hallucination detector)."""

from __future__ import annotations

import pytest

from meshai_common.errors import ConfigError
from meshai_common.meshmaster import (
    is_known_command,
    load_catalog,
    load_facts,
    slash_words,
    unknown_slash_words,
)
from meshai_common.meshmaster.catalog import _parse_catalog

# Section 3 of the Mesh-Master reference, every name and alias.
REFERENCE_COMMANDS = """
/about /help /menu /motd /meshinfo /meshtastic /weather /whereami /test
/onboard /onboarding /onboardme
/ai /bot /data /system /vibe /aisettings /reset /chathistory /save /recall /exit
/stop /start /resume /continue /unmute
/nodes /node /networks /optout /optin
/m /mail /c /check /checkmail /emailhelp /wipe /snooze
/log /checklog /checklogs /readlog /readlogs /report /checkreport /checkreports /readreport /readreports /find /database
/web /search /websearch /wiki /wikipedia /offline /offlinewiki /wikioffline /drudge /bible /biblehelp
/games /blackjack /yahtzee /hangman /wordle /adventure /wordladder /rps /coinflip /cipher /quizbattle /morse
/masterquiz /meshtasticquiz /trivia /quiz /bibletrivia /disastertrivia /mathquiz /electricalquiz
/jokes /chucknorris /blond /yomomma
/alarm /timer /stopwatch
/admin /changemotd /changeprompt /showprompt /printprompt /showmodel /selectmodel /reboot /channels /dm /autoping
/status /whatsoff /aliases /allcommands
""".split()  # noqa: SIM905 - readable as the reference table lists them


def test_catalog_has_every_reference_command_and_nothing_else():
    cat = load_catalog()
    assert isinstance(cat.version, int) and cat.version >= 1
    assert cat.names == frozenset(REFERENCE_COMMANDS)
    for c in cat.commands:
        assert c.usage.startswith(c.name) and c.description and c.area


def test_aliases_resolve_to_their_command():
    cat = load_catalog()
    assert cat.get("/checkmail").name == "/c"
    assert cat.get("MAIL").name == "/m"
    assert cat.get("/quiz").name == "/trivia"
    assert cat.get("/offlinewiki").usage == "/offline wiki <topic>"
    assert cat.get("/relay") is None
    assert set(cat.plain_words) == {"ping", "blacklistme", "unblock"}


@pytest.mark.parametrize("word", ["/relay", "/deletemesh", "/superrelay", "/hint", "/ping", "/joke", "relay"])
def test_invented_commands_are_unknown(word):
    assert not is_known_command(word)


@pytest.mark.parametrize("word", ["/nodes", "nodes", "/NODES", "/checkmail", "/c", "/m", "/offline"])
def test_real_commands_are_known(word):
    assert is_known_command(word)


@pytest.mark.parametrize("text", [
    "2/3 of the nodes", "speed 40 km/h", "and/or", "w/o power", "24/7 net", "1/2 mile",
    "see https://meshtastic.org/docs/about and http://x.org/relay", "meshtastic.org/docs", "~/notes/relay",
    "/dev/ttyUSB0", "</b>", "a/b/c", "TCP/IP", "/24h window", "SNR/RSSI", "", "no slash at all", "-/relay",
])
def test_not_commands(text):
    assert slash_words(text) == []
    assert unknown_slash_words(text) == []


@pytest.mark.parametrize("text,expected", [
    ("/nodes", ["/nodes"]),
    ("Send /nodes, then /node bob.", ["/nodes", "/node"]),
    ("(/help) `/c` \"/m\" '/log'", ["/help", "/c", "/m", "/log"]),
    ("first line\n/Menu", ["/Menu"]),
    ("**/games** and /stopwatch start/stop/status", ["/games", "/stopwatch"]),
    ("/vibe [status|set <name>|reset]", ["/vibe"]),
    ("use /relay now", ["/relay"]),
    ("/m2 is odd", ["/m2"]),
])
def test_slash_words_found_at_word_start(text, expected):
    assert slash_words(text) == expected


def test_unknown_slash_words_reports_inventions_once_in_order():
    text = "Try /relay bob hi, or /deletemesh. /RELAY again; /nodes and /checkmail are real."
    assert unknown_slash_words(text) == ["/relay", "/deletemesh"]
    assert unknown_slash_words("Send /help.") == []
    assert unknown_slash_words("There is no deletemesh command. Send /help.") == []
    assert unknown_slash_words("/bob hi", extra_known=["bob"]) == []


def test_facts_load_and_answers_use_only_real_commands():
    facts = load_facts()
    assert {"snr", "ack", "chunks", "roles", "poor_signal", "hops", "rssi", "bands", "lora"} <= set(facts.topics)
    for topic in facts.topics.values():
        assert topic.concepts, topic.id
        for item in topic.items:
            assert item.asks and unknown_slash_words(item.answer) == []
            assert len(item.answer.encode()) <= 160


def test_bad_catalog_is_a_config_error_naming_the_entry(tmp_path):
    bad = tmp_path / "commands.yaml"
    bad.write_text("version: 1\ncommands:\n  - {name: /a, area: x, usage: /a, description: d}\n"
                   "  - {name: /b, aliases: [/a], area: x, usage: /b, description: d}\n")
    with pytest.raises(ConfigError, match=r"commands\[1\].*/a is already defined"):
        _parse_catalog(bad)
    bad.write_text("commands: []\n")
    with pytest.raises(ConfigError, match="version"):
        _parse_catalog(bad)
