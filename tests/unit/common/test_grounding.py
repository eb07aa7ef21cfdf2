"""Grounding: retrieval over the command catalog, facts and question bank, and the Context block it fills."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meshai_common.grounding import (
    CONTEXT_BUDGET_TOKENS,
    GROUNDING_VERSION,
    Hit,
    context_lines,
    estimate_tokens,
    ground_prompt,
    retrieve,
    with_context,
)
from meshai_common.meshmaster import load_catalog, unknown_slash_words
from meshai_common.prompts import meshmaster_prompt, parse_meshmaster_prompt, question_of


def keys(question: str, k: int = 4) -> list[str]:
    return [h.key for h in retrieve(question, k)]


def keys_with(question: str, history: list[str]) -> list[str]:
    return [h.key for h in retrieve(question, 4, history)]


def test_version_is_a_plain_label():
    assert GROUNDING_VERSION and " " not in GROUNDING_VERSION


def test_with_context_keeps_bot_text_and_history_and_adds_lines():
    prompt = meshmaster_prompt("any new mail?", [("RV01", "heading out"), ("JEN", "copy")], bot_system="Be brief.")
    lines = ["cmd /c [mailbox]: read a mailbox", "fact: something short"]
    out = with_context(prompt, lines)
    parsed = parse_meshmaster_prompt(out)
    assert parsed is not None
    assert parsed.system == "Be brief."
    assert parsed.context == ("RV01: heading out", "JEN: copy", *lines)
    assert parsed.question == "any new mail?"
    assert out.startswith("Be brief.\n\nContext:\nRV01: heading out\nJEN: copy\n") and out.endswith("\nAnswer:")


@pytest.mark.parametrize("system", ["Operator prompt.", ""])
def test_with_context_creates_the_block_when_absent(system):
    prompt = meshmaster_prompt("radio check", bot_system=system)
    out = with_context(prompt, ["cmd /test: echo test"])
    parsed = parse_meshmaster_prompt(out)
    assert parsed is not None
    assert (parsed.system, parsed.context, parsed.question) == (system, ("cmd /test: echo test",), "radio check")
    assert out == meshmaster_prompt("radio check", ["cmd /test: echo test"], bot_system=system)


def test_with_context_leaves_unusual_bot_bytes_untouched():
    prompt = "Line one.\n  indented line two  \n\nContext:\nA:  spaced  \n\nQuestion:   odd spacing ?  \nAnswer: "
    out = with_context(prompt, ["cmd /help: help"])
    assert out == prompt.replace("A:  spaced  \n", "A:  spaced  \ncmd /help: help\n")


def test_bare_text_becomes_a_prompt_without_bot_text():
    out = with_context("how do i reach kim", ["relay: no command"])
    assert out == "Context:\nrelay: no command\n\nQuestion: how do i reach kim\nAnswer:"
    assert question_of(out) == "how do i reach kim"
    assert with_context("how do i reach kim", []) == "how do i reach kim"


def test_grounding_twice_changes_nothing():
    once = ground_prompt(meshmaster_prompt("whos around tonight", [("BASE", "copy that")]))
    assert ground_prompt(once) == once
    bare = ground_prompt("list every station u can hear")
    assert ground_prompt(bare) == bare


def test_ground_prompt_ranks_the_question_above_the_history():
    prompt = meshmaster_prompt("whos around tonight", [("BASE", "what is snr"), ("K7AB", "anyone copy")])
    parsed = parse_meshmaster_prompt(ground_prompt(prompt))
    assert parsed is not None
    assert parsed.context[:2] == ("BASE: what is snr", "K7AB: anyone copy")
    assert parsed.context[2] == "cmd /nodes: nodes heard in the last 24h, newest first"


def test_a_question_leaning_on_history_borrows_its_words():
    history = ["BASE: copy", "K7AB: wordle is fun"]
    assert "/wordle" not in keys("how do i do that")
    assert keys_with("how do i do that", history)[0] == "/wordle"
    assert keys_with("how do i see all nodes", history)[0] == "/nodes"
    assert "/wordle" not in keys_with("how do i do that", ["K7AB: wordle is fun", "BASE: copy", "JEN: ok"])


def test_unknown_slash_word_in_recent_history_is_flagged():
    hits = retrieve("does that even work", 4, ["TWR2: just send /nuke lol"])
    assert (hits[0].kind, hits[0].key) == ("unknown", "/nuke")
    old = ["TWR2: just send /nuke lol", "BASE: copy", "JEN: ok", "MIA: 73"]
    assert all(h.kind != "unknown" for h in retrieve("does that even work", 4, old))


def test_a_command_named_without_its_slash():
    assert [h.key for h in retrieve("the whois cmd is broken")][:1] == ["/whois"]
    assert retrieve("the whois cmd is broken")[0].kind == "unknown"
    assert keys("what does the weather command do")[0] == "/weather"
    assert all(h.kind != "unknown" for h in retrieve("list cmd aliases") + retrieve("the right command to read mail"))


@pytest.mark.parametrize("question", ["who is on the mesh", "whos on rn?", "show me every node u hear",
                                      "list of stations heard today pls"])
def test_nodes_questions_find_nodes(question):
    assert "/nodes" in keys(question)


@pytest.mark.parametrize("question", ["how do i leave mail for the ops team", "send a letter to box camp",
                                      "drop a msg in the family mailbox"])
def test_mail_sending_finds_m(question):
    assert "/m" in keys(question)


@pytest.mark.parametrize("question", ["tell bob i'm late", "let alice know we r at camp", "ping sam to call me"])
def test_relay_like_questions_get_a_relay_hit(question):
    hits = retrieve(question)
    relay = [h for h in hits if h.kind == "relay"]
    assert relay and relay[0].key == "relay"
    assert "<shortname> <message>" in relay[0].line and not unknown_slash_words(relay[0].line)


def test_unknown_slash_word_comes_first_and_points_to_help():
    hits = retrieve("how does /nuke work")
    assert hits[0] == Hit("unknown", "/nuke", hits[0].line, hits[0].score)
    assert "/help" in hits[0].line and "not a command" in hits[0].line
    assert all(h.kind != "unknown" for h in hits[1:])


def test_catalog_v7_opens_an_unknown_words_line_with_the_word_and_grounds_its_own_prompt_once():
    hit = retrieve("how does /nuke work")[0]
    assert context_lines([hit], "catalog-v6") == ["not a command: nuke; /help lists the commands"]
    assert context_lines([hit], "catalog-v7") == ["nuke is not a command; /help lists the commands"]
    prompt = with_context("Question: does /nuke work\nAnswer:", context_lines([hit], "catalog-v7"))
    # the line is grounding's own, not history: asked again, retrieval sees the same question alone
    parsed = parse_meshmaster_prompt(prompt)
    assert parsed is not None and parsed.context == ("nuke is not a command; /help lists the commands",)
    assert retrieve(parsed.question, 4, parsed.context) == retrieve(parsed.question, 4)


def test_the_reply_opening_an_unknown_words_line_dictates():
    from meshai_common.grounding import reply_opening

    hit = retrieve("how does /nuke work")[0]
    v7 = with_context("Question: does /nuke work\nAnswer:", context_lines([hit], "catalog-v7"))
    assert reply_opening(v7) == "nuke is not a command"
    # only catalog-v7's line opens as the reply does; older lines and command lines dictate nothing
    assert reply_opening(with_context("Question: does /nuke work\nAnswer:", context_lines([hit], "catalog-v6"))) == ""
    assert reply_opening(with_context("Question: how do i see nodes\nAnswer:",
                                      context_lines(retrieve("how do i see nodes", 1), "catalog-v7"))) == ""
    history = meshmaster_prompt("is that right", ["KJ5: sos is not a command; /help lists the commands"])
    assert reply_opening(history) == ""  # KJ5's own line, not grounding's
    assert reply_opening("System: be brief\n\nUser: Context:\nsos is not a command; /help lists the commands\n\n"
                         "Question: /sos?\nAnswer:\n\nAssistant:") == "sos is not a command"  # rendered


def test_relay_and_fact_lines_dictate_how_the_reply_opens():
    from meshai_common.grounding import Hit, reply_opening

    relay = Hit("relay", "relay", "", 1.0, name="KJ5")
    assert reply_opening(with_context("Question: tell KJ5 hi\nAnswer:", context_lines([relay], "catalog-v7"))) \
        == "DM me 'KJ5"
    unnamed = retrieve("how do relays work", 1)
    assert unnamed[0].kind == "relay" and not unnamed[0].name
    assert reply_opening(with_context("Question: how do relays work\nAnswer:", context_lines(unnamed))) == ""
    fact = with_context("Question: max bytes in a text\nAnswer:",
                        ["fact: A Meshtastic text holds about 200-237 bytes. Mesh-Master splits replies."])
    assert reply_opening(fact) == "A Meshtastic text"
    # the fact's words up to one with a slash, without trailing punctuation; the first grounding line decides
    assert reply_opening(with_context("Question: q\nAnswer:", ["fact: Height wins. Raise /nodes"])) \
        == "Height wins. Raise"
    assert reply_opening(with_context("Question: q\nAnswer:", ["fact: Raise it, /nodes then"])) == "Raise it"
    assert reply_opening(with_context("Question: q\nAnswer:", ["fact: /nodes lists them"])) == ""
    assert reply_opening(with_context("Question: q\nAnswer:", ["cmd /nodes: nodes heard", "fact: A hop is"])) == ""
    assert reply_opening(meshmaster_prompt("q", ["PETE: fact: it rains"])) == ""  # history, spoken by PETE


def test_named_real_command_is_retrieved_under_its_canonical_name():
    hits = retrieve("what does /checkmail do")
    assert (hits[0].kind, hits[0].key) == ("command", "/c")


def test_facts_are_retrieved_with_their_short_answer():
    hits = retrieve("what does a negative snr mean")
    fact = next(h for h in hits if h.kind == "fact")
    assert fact.key == "snr" and "dB" in fact.line


def test_misspelled_words_still_find_the_command():
    assert "/weather" in keys("whats the wether tomorow")
    assert "/c" in keys("chek my mial")


def test_hits_are_ranked_unique_and_within_k():
    for k in (1, 2, 4, 6):
        hits = retrieve("how do i save a private note about the antenna", k)
        assert 0 < len(hits) <= k
        assert len({h.key for h in hits}) == len(hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert retrieve("", 4) == [] and retrieve("nodes", 0) == []


def test_every_line_names_only_real_commands():
    lines = [h.line for q in ("how does /nuke work", "tell bob hi", "what is snr", "set a timer")
             for h in retrieve(q) if h.kind != "unknown"]
    assert lines and all(not unknown_slash_words(line) for line in lines)
    assert all(h.key in load_catalog().names for h in retrieve("games jokes trivia wordle") if h.kind == "command")


@pytest.mark.parametrize("question", ["what is snr", "tell bob i'm late", "/nuke /deletemesh /superrelay",
                                      "how do i set an alarm for 6:30am daily and a timer", "roles hops snr rssi"])
def test_added_block_stays_within_the_token_budget(question):
    lines = context_lines(retrieve(question, 4))
    assert len(lines) >= 2
    assert sum(estimate_tokens(line + "\n") for line in lines) <= CONTEXT_BUDGET_TOKENS
    assert all(len(line.encode()) <= 160 for line in lines)


def test_every_block_fits_the_budget_by_the_embedded_tokenizer():
    llama_cpp = pytest.importorskip("llama_cpp")
    from meshai_common.embedded import embedded_gguf

    vocab = llama_cpp.Llama(model_path=str(embedded_gguf()), vocab_only=True, verbose=False)
    questions = ["what is snr", "snr vs rssi and hops", "roles?", "how long can a msg be", "set alarm 7am daily",
                 "/nuke /deletemesh", "why did my dm fail", "bad signal help", "tell K7AB meet at 5"]
    for q in questions:
        block = "".join(line + "\n" for line in context_lines(retrieve(q, 4)))
        assert len(vocab.tokenize(block.encode(), add_bos=False, special=False)) <= CONTEXT_BUDGET_TOKENS, q


def test_context_lines_leave_out_what_does_not_fit():
    long = Hit("fact", "x", "fact: " + "word " * 100, 1.0)
    short = Hit("command", "/test", "cmd /test: echo test", 0.5)
    assert context_lines([long, short]) == ["cmd /test: echo test"]
    assert context_lines([short, short]) == ["cmd /test: echo test"]


def test_token_estimate_errs_high_on_symbols_and_capitals():
    assert estimate_tokens("cmd /nodes: nodes heard in the last 24h, newest first") >= 14
    assert estimate_tokens("CLIENT_MUTE ROUTER") > estimate_tokens("client_mute router")


def test_retrieval_is_the_same_in_every_process():
    # Python salts str hashes per process: set and dict order must not leak into rankings or scores.
    code = ("from meshai_common.grounding import retrieve\n"
            "for q in ['chek my mial', 'tell KD7X hi', 'whats a hop', 'play smth', 'wake me 6am']:\n"
            "    print([(h.key, h.score) for h in retrieve(q, 6)])")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(outs) == 1 and outs.pop().count("\n") == 5


def test_retrieval_is_deterministic():
    questions = ["who is on the mesh", "chek my mial", "tell bob hi", "what is a hop", "/nuke"]
    first = [retrieve(q, 6) for q in questions]
    assert [retrieve(q, 6) for q in questions] == first
    assert ground_prompt("whos on") == ground_prompt("whos on")


@pytest.mark.parametrize(("question", "history", "name"), [
    ("let OTTR know the gate is locked", [], "OTTR"),
    ("can u get word to KJ5 the road washed out", [], "KJ5"),
    ("how do i get a msg to walt", ["walt: 73 all"], "walt"),  # a history speaker, as the history writes it
    ("how do i relay a msg, my SNR is bad", [], ""),  # a word the index knows is no node
    ("can u relay for me", ["BRIX: anyone up?"], ""),
    ("relay this to NODES", [], ""),  # a command name
])
def test_a_relay_line_names_the_node_the_question_names(question, history, name):
    from meshai_common.grounding import _index, relay_name

    assert relay_name(_index(), question, history) == name
    if name:
        grounded = ground_prompt(meshmaster_prompt(question, history), version="catalog-v5")
        assert f"DM me '{name} <message>'" in grounded
        assert f"DM me '{name} <message>'" not in ground_prompt(meshmaster_prompt(question, history),
                                                              version="catalog-v4")


@pytest.mark.parametrize(("question", "targets"), [
    ("tell dave back by 6", ["dave"]),
    ("let jen know im running late", ["jen"]),
    ("pass a note to marco pls", ["marco"]),
    ("relay 'at the ridge' to mia", ["mia"]),
    ("can you get word to sam that the road is out", ["sam"]),
    ("send luis back by 6", ["luis"]),
    ("send sos", []),  # "send <word>" needs a message after it
    ("tell me a joke", []),
    ("how do i tell if my node works", []),
    ("message of the day", []),
    ("no ack on my dm yet", []),  # "dm" as a noun
    ("tell everyone hi", []),
])
def test_relay_targets_are_the_word_after_a_verb_of_passing_on(question, targets):
    from meshai_common.grounding.text import relay_targets

    assert relay_targets(question) == targets


@pytest.mark.parametrize(("question", "history", "name"), [
    ("tell dave back by 6", [], "dave"),  # lexical and semantic ranking put /save first before catalog-v8
    ("how do i reach tom thru the mesh", [], "tom"),
    ("can u tell him check ch 2", ["MTN3: need to reach ray"], "ray"),  # who the latest line asks about
    ("can u pass it to them", ["luis: W6QX still at camp?"], "W6QX"),
    ("tell jokes pls", [], ""),  # a word the index knows
    ("how to reach furter", [], ""),  # a misspelling of one
    ("send help now pls", [], ""),  # a command name
])
def test_catalog_v8_names_the_node_after_a_verb_of_passing_on_first(question, history, name):
    hits = retrieve(question, 4, history, relay_verbs=True)
    if name:
        assert (hits[0].kind, hits[0].name) == ("relay", name)
        assert context_lines(hits[:1], "catalog-v8") == [
            f"relay: no command; DM me '{name} <message>'; their next plain DM comes back to you"]
        assert (retrieve(question, 4, history)[0].kind, retrieve(question, 4, history)[0].name) != ("relay", name)
    else:
        assert all(h.kind != "relay" or not h.name for h in hits)


def test_the_relay_opening_follows_the_catalogs_relay_usage(monkeypatch):
    import dataclasses

    import meshai_common.grounding as grounding

    catalog = dataclasses.replace(grounding.load_catalog(), relay_usage="<shortname> your words")
    monkeypatch.setattr(grounding, "load_catalog", lambda: catalog)
    named = with_context("Question: tell KJ5 hi\nAnswer:", [grounding._relay_line("KJ5")])
    assert "DM me 'KJ5 your words'" in named
    assert grounding.reply_opening(named) == "DM me 'KJ5"
    assert grounding.reply_opening(with_context("Question: q\nAnswer:", [grounding._relay_line()])) == ""
