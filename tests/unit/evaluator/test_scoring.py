"""The scorer, rule by rule: right answers in several wordings pass, near misses and traps do not."""

from __future__ import annotations

import json

import pytest

from meshai_common.errors import InvalidInput, NotFound
from meshai_common.prompts import meshmaster_prompt
from meshai_evaluator.scoring import first_command, has_term, is_evasive, judge, score
from meshai_evaluator.suite import all_suite_questions, load_suite, questions, suite_names, suite_prompts
from meshai_evaluator.test_split import test_split_items

FIELD = {item["id"]: (area, item) for area, item in questions(load_suite("field"))}
PUBLIC = {item["id"]: (area, item) for area, item in questions(load_suite("public"))}
NUKE = {"id": "nuke", "question": "/nuke?", "fake": "nuke"}


def verdict(item_id: str, reply: str, suite: dict = FIELD):
    area, item = suite[item_id]
    return judge(area, item, reply)


# -- whole words and numbers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,term,hit", [
    ("SNR is in dB", "db", True),
    ("thanks for the feedback", "db", False),
    ("-120 dBm is weak", "db", False),
    ("160-byte chunks", "160", True),
    ("up to 1600 bytes", "160", False),
    ("2160 bytes", "160", False),
    ("waits 20s", "20", True),
    ("SNR down to -20 dB", "20", False),
    ("SNR down to \u221220 dB", "-20", True),
    ("down to minus 20", "-20", True),
    ("down to 20 dB", "-20", False),
    ("902-928 MHz", "928", True),
    ("it retries", "retr*", True),
    ("CLIENT MUTE never relays", "client_mute", True),
    ("signal to noise", "signal-to-noise", True),
    ("it doesnt rebroadcast", "doesn't rebroadcast", True),
    ("nodes heard today", "/nodes", False),
    ("send /nodes", "/nodes", True),
])
def test_terms_match_whole_words_and_numbers(text, term, hit):
    assert has_term(text, term) is hit


def test_first_command_is_the_first_real_one_by_canonical_name():
    assert first_command("Send /checkmail garden") == "/c"
    assert first_command("2/3 of km/h, see http://x.org/docs then /Nodes") == "/nodes"
    assert first_command("/relay is not real; use /m") == "/m"
    assert first_command("no command here") is None


@pytest.mark.parametrize("reply,evasive", [
    ("I don't know.", True),
    ("Sorry, I'm not sure.", True),
    ("No idea, try asking someone.", True),
    ("I can't help with that. /help", True),
    ("I don't know of any /sos command. Send /help.", False),
    ("Send /nodes.", False),
])
def test_evasive(reply, evasive):
    assert is_evasive(reply) is evasive


# -- commands --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("item_id,reply", [
    ("mail_check_terse", "Send /c to read your mailbox."),
    ("mail_check_terse", "/checkmail <box> shows it. Add the PIN if it's locked."),
    ("mail_check_terse", "Check with /check yourbox"),
    ("mail_send_firehall", "DM me: /m firehall <your message>"),
    ("mail_send_firehall", "Use /mail firehall then the text. A new box asks Y/N."),
    ("nodes_terse", "/nodes lists who was heard in the last 24h."),
    ("node_snr", "Send /node OTTR for its SNR and last heard."),
    ("start_unpause", "Send /resume (or /start)."),
    ("stop_quiet", "Send /stop; /start brings me back."),
    ("ping_alive", "Just send ping, I answer Pong!"),
    ("test_link", "Send /test, or plain ping."),
    ("onboard_first_radio", "Welcome! DM /onboarding for the tour."),
])
def test_right_commands_pass_in_different_wordings(item_id, reply):
    assert verdict(item_id, reply).passed, verdict(item_id, reply).reason


@pytest.mark.parametrize("item_id,reply,reason", [
    ("mail_send_firehall", "Send /c firehall", "first command /c, expected /m"),
    ("mail_check_terse", "Try /help, then /c", "first command /help, expected /c"),
    ("nodes_terse", "Use /nodes, /node, /meshinfo or /networks.", "names 4 commands"),
    ("nodes_terse", "Send /nodelist", "invented /nodelist"),
    ("nodes_terse", "Nodes are radios on the mesh.", "names no command, expected /nodes"),
    ("ping_alive", "Send /ping", "invented /ping"),
    ("mail_check_terse", "I don't know, maybe /c?", "evasive"),
    ("mail_check_terse", "", "empty"),
])
def test_wrong_commands_fail_with_a_reason(item_id, reply, reason):
    v = verdict(item_id, reply)
    assert not v.passed and v.reason == reason


@pytest.mark.parametrize("item_id,reply,ok", [
    ("relay_ctx_him", "DM me 'WOLF see you at 6' and I pass it on.", True),
    ("relay_ctx_him", "Send: wolf <your message>. His reply comes back to you.", True),
    ("relay_ctx_him", "Send WOLF a message through the mesh.", False),
    ("relay_ctx_him", "Use /m WOLF hello", False),
    ("relay_ctx_him", "Use /relay WOLF hello", False),
    ("relay_ctx_him", "DM me '<shortname> <message>'.", False),
    ("relay_gate", "Send me: OTTR gate is locked", True),
    ("relay_format", "DM me '<shortname> <message>'; they can reply back.", True),
    ("relay_format", "Just DM me 'KJ5 meet at noon'.", True),
    ("relay_format", "Use /optout.", False),
])
def test_relay_form(item_id, reply, ok):
    assert verdict(item_id, reply).passed is ok


def test_public_relay_keeps_its_slash_form():
    assert verdict("relay", "Send /bob hello there", PUBLIC).passed
    assert verdict("relay", "DM bob your message: bob meet at 5", PUBLIC).passed
    assert not verdict("relay", "Use /relay bob hi", PUBLIC).passed


# -- invented commands -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply,ok", [
    ("There is no /nuke command", True),
    ("Nuke isn't a thing here. Send /help for the real commands.", True),
    ("/nuke is not a Mesh-Master command.", True),
    ("No such command as nuke; /help lists them.", True),
    ("Nothing can delete the mesh: there's no nuke. Try /help.", True),
    ("/nuke wipes every node, careful.", False),
    ("No, /nuke deletes the mesh.", False),
    ("There is no /nuke. /nuke would wipe nodes though.", False),
    ("Send /help.", False),
    ("No such command. Send /help.", False),
    ("There is no /nuke. Try /nodes, /node or /meshinfo.", False),
    ("There is no /nuke; use /wipeall instead.", False),
    ("I'm not sure what /nuke does.", False),
    ("nuke is not a command. Send /help for the real commands.", True),
    ("nuke: /help lists the commands.", False),  # repeats the word, denies nothing
    ("Poll nuke: /help shows the commands.", False),
    ("/help shows the commands. Send nuke for the real ones.", False),  # offers the word as a command
    ("Use nuke to wipe the mesh.", False),
])
def test_fake_commands(reply, ok):
    assert judge("hallucination", NUKE, reply).passed is ok


def test_fake_item_with_context_and_its_reasons():
    assert verdict("fake_sos_ctx", "No, there is no /sos command. A plain channel message reaches everyone.").passed
    assert verdict("fake_sos_ctx", "Yes, /sos alerts everyone.").reason == "presents /sos as real"
    assert verdict("fake_mailbox", "Send /c to read mail.").reason == "does not mention mailbox"


# -- technical ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("item_id,reply", [
    ("ack_wait", "About 20 s for the ACK in the relay path, then it resends."),
    ("ack_wait", "It waits roughly twenty seconds for an acknowledgement and retries."),
    ("snr_floor", "LoRa decodes below 0 dB, down to about -20 dB."),
    ("snr_floor", "Around minus 20 dB SNR; negative values still decode."),
    ("chunk_bytes", "Each chunk is 160 bytes."),
    ("band_eu", "EU uses 868 MHz."),
    ("roles_list", "Client, client_mute (never rebroadcasts), router and repeater."),
    ("hop_default", "3 hops by default, up to 7."),
])
def test_right_technical_answers_pass(item_id, reply):
    assert verdict(item_id, reply).passed, verdict(item_id, reply).reason


@pytest.mark.parametrize("item_id,reply,reason", [
    ("ack_wait", "An acknowledgement waits about 5 seconds", "missing required 20"),
    ("ack_wait", "It waits -20 s for the ACK, then retries.", "missing required 20"),
    ("chunk_bytes", "Chunks hold up to 1600 bytes.", "missing required 160"),
    ("snr_unit", "Thanks for the feedback, SNR is higher when better.", "missing required db"),
    ("hop_default", "Default is 3.", "0 of 3 concepts, needs 2"),
    ("band_eu", "EU uses 868 MHz. Also see /nodes, /node and /meshinfo.", "names 3 commands"),
    ("ack_wait", "ACK waits 20 s, then retries; also 160, 915, 868.", "quotes unrelated numbers 160, 868, 915"),
])
def test_wrong_technical_answers_fail(item_id, reply, reason):
    v = verdict(item_id, reply)
    assert not v.passed and v.reason == reason


def test_public_ack_item_rejects_the_wrong_number():
    assert not verdict("ack_timeout", "An acknowledgement waits about 5 seconds", PUBLIC).passed
    assert verdict("ack_timeout", "A DM waits about 20 s for an ACK, then retries.", PUBLIC).passed


# -- the batch -------------------------------------------------------------------------------------------------

def test_score_areas_brevity_and_rates():
    long_right = "Send /nodes. " + "It lists every node heard in the last day, newest first. " * 8
    replies = [
        {"area": "commands", "item": FIELD["nodes_terse"][1], "reply": "Send /nodes.", "latency_s": 0.5},
        {"area": "commands", "item": FIELD["nodes_today"][1], "reply": long_right},
        {"area": "commands", "item": FIELD["mail_check_terse"][1], "reply": "Send /inbox."},
        {"area": "hallucination", "item": FIELD["fake_sos"][1], "reply": "There is no /sos command."},
        {"area": "technical", "item": FIELD["ack_wait"][1], "reply": "About 5 s."},
    ]
    result = score(replies)
    assert result["n"] == 5
    assert result["areas"]["commands"] == pytest.approx(200 / 3)
    assert result["areas"]["hallucination"] == 100.0 and result["areas"]["technical"] == 0.0
    assert result["areas"]["brevity"] == pytest.approx(40.0)  # right AND within 2 chunks: 2 of 5
    assert result["overall"] == pytest.approx(sum(result["areas"].values()) / 4)
    assert result["hallucinated_command_rate"] == pytest.approx(20.0)  # /inbox; the denied /sos does not count
    first = result["items"][0]
    assert first["passed"] and first["latency_s"] == 0.5 and first["first_command"] == "/nodes"
    assert result["items"][2]["reason"] == "invented /inbox" and result["items"][2]["unknown_commands"] == ["/inbox"]
    assert not result["items"][1]["fits_budget"] and result["items"][1]["passed"]


def test_score_leaves_out_areas_without_items_and_reads_the_items_area():
    result = score([{"item": {**FIELD["nodes_terse"][1], "area": "commands"}, "reply": "/nodes"}])
    assert set(result["areas"]) == {"commands", "brevity"} and result["overall"] == 100.0


# -- suites ---------------------------------------------------------------------------------------------------

def test_suites_load_and_list():
    assert suite_names() == ["field", "fresh", "public"]
    assert len(suite_prompts("public")) == 19 and len(suite_prompts("fresh")) == 90
    assert suite_prompts() == suite_prompts("field")
    everything = all_suite_questions()
    assert all(set(suite_prompts(name)) <= set(everything) for name in ("field", "fresh", "public"))
    with pytest.raises(NotFound, match="shipped: field, fresh, public"):
        load_suite("nope")


MINIMAL = """
name: t
version: 1
commands:
  - {id: a, question: "q", accept: [/nodes]}
hallucination:
  - {id: b, question: "q", fake: teleport}
technical:
  - {id: c, question: "q", concepts: [[x]]}
"""


@pytest.mark.parametrize("old,new,message", [
    ("accept: [/nodes]", "accept: [/teleport]", r"commands\[0\] \(id a\): 'accept' names '/teleport'"),
    ("accept: [/nodes]", "note: x", r"commands\[0\] \(id a\): needs 'accept'"),
    ("fake: teleport", "fake: checkmail", r"hallucination\[0\] \(id b\): 'fake' 'checkmail' is a real command"),
    ("concepts: [[x]]", "concepts: [[no]]", r"technical\[0\] \(id c\): .*quote yes/no"),
    ("concepts: [[x]]", "concepts: [[x]], min_concepts: 2", r"technical\[0\] \(id c\): 'min_concepts' must be .* 1 to 1"),
    ("{id: b,", "{id: a,", r"hallucination\[0\] \(id a\): id already used by commands\[0\]"),
    ("accept: [/nodes]", "accept: [/nodes], context: [no colon here]", r"commands\[0\] \(id a\): context line 'no colon"),
    ("accept: [/nodes]", "accept: [/nodes], acept: [/c]", r"commands\[0\] \(id a\): unknown field\(s\) acept"),
    ("accept: [/nodes]", "relay: 'two words'", r"commands\[0\] \(id a\): 'relay' must be a shortname"),
])
def test_suite_errors_name_file_item_and_id(tmp_path, old, new, message):
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL.replace(old, new, 1))
    with pytest.raises(InvalidInput, match=rf"bad\.yaml: {message}"):
        load_suite(str(path))


def test_minimal_suite_loads(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(MINIMAL)
    assert [a for a, _ in questions(load_suite(str(path)))] == ["commands", "hallucination", "technical"]


# -- the data service's test split ------------------------------------------------------------------------------

def _chat(user: str, answer: str, **extra) -> str:
    return json.dumps({"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": user},
                                    {"role": "assistant", "content": answer}], **extra})


def test_split_rows_become_scorable_items(tmp_path):
    wrapped = meshmaster_prompt("mail 4 me?", ["KJ5: left u mail"])
    lines = [
        _chat(wrapped, "Send /checkmail <box>.", intent="mail_check"),
        json.dumps({"conversations": [{"from": "human", "value": "whos around"},
                                      {"from": "gpt", "value": "Send /nodes for nodes heard in 24h."}]}),
        _chat("how do I use /teleport?", "There is no teleport command. Send /help."),
        _chat("what is snr", "SNR is signal-to-noise ratio in dB."),
        "",
    ]
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(lines))
    items = test_split_items(path)
    assert [i["area"] for i in items] == ["commands", "commands", "hallucination", "commands"]
    mail, nodes, fake, fact = items
    assert mail["prompt"] == wrapped and mail["question"] == "mail 4 me?" and mail["context"] == ["KJ5: left u mail"]
    assert mail["accept"] == ["/c"] and mail["intent"] == "mail_check" and mail["id"] == "test:1"
    assert nodes["accept"] == ["/nodes"] and nodes["prompt"] == "whos around"
    assert fake["fake"] == "teleport" and fact["no_command"] is True
    result = score([{"item": mail, "reply": "Send /c KJ5box"}, {"item": nodes, "reply": "Send /node bob"},
                    {"item": fake, "reply": "No /teleport command, sorry."},
                    {"item": fact, "reply": "Signal to noise ratio."}])
    assert [d["passed"] for d in result["items"]] == [True, False, True, True]
    assert not judge("commands", fact, "Send /snr").passed


@pytest.mark.parametrize("line,message", [
    ("{not json", r"test\.jsonl:1: not JSON"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', r"test\.jsonl:1: no assistant turn"),
    ('{"text": "hi"}', r"test\.jsonl:1: expected 'messages'"),
    ('{"messages": [{"role": "robot", "content": "hi"}]}', r"test\.jsonl:1: turn 0 has an unknown role"),
])
def test_split_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "test.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InvalidInput, match=message):
        test_split_items(path)
