"""The command grammar, run by llama.cpp's own grammar engine on strings, character by character.

A vocabulary-only load of the embedded SmolLM2 GGUF (under a second, no weights) gives llama.cpp the tokens
it needs; a string is accepted when every one of its characters passes the grammar sampler in turn and the
end of generation is then allowed, exactly the checks llama.cpp makes while sampling.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator

import pytest

from meshai_common.inference.command_grammar import catalog_command_grammar, command_grammar
from meshai_common.meshmaster import load_catalog, unknown_slash_words

NAMES = sorted(n.lstrip("/") for n in load_catalog().names)
GLUE = set(string.ascii_letters + string.digits + "_\\.:~<@#-")


class GrammarProbe:
    """Feeds strings to a llama.cpp grammar sampler built from GBNF on a real vocabulary."""

    def __init__(self, llama, gbnf: str) -> None:
        from llama_cpp import llama_cpp as C

        self.C, self.llama, self.gbnf = C, llama, gbnf.encode()
        self.vocab = llama._model.vocab
        self.eos = llama.token_eos()
        self.cell = (C.llama_token_data * 1)()
        self.array = C.llama_token_data_array(data=self.cell, size=1, selected=-1, sorted=False)

    def _allows(self, sampler, token: int) -> bool:
        import ctypes

        self.cell[0].id, self.cell[0].logit, self.cell[0].p = token, 1.0, 0.0
        self.C.llama_sampler_apply(sampler, ctypes.byref(self.array))
        return self.cell[0].logit != float("-inf")

    def accepts(self, text: str) -> bool:
        C = self.C
        sampler = C.llama_sampler_init_grammar(self.vocab, self.gbnf, b"root")
        assert sampler, "llama.cpp could not parse the grammar"
        try:
            for ch in text:
                for token in self.llama.tokenize(ch.encode(), add_bos=False, special=False):
                    if not self._allows(sampler, token):
                        return False
                    C.llama_sampler_accept(sampler, token)
            return self._allows(sampler, self.eos)  # the reply may end here
        finally:
            C.llama_sampler_free(sampler)


@pytest.fixture(scope="module")
def probe() -> Iterator[GrammarProbe]:
    from llama_cpp import Llama

    from meshai_common.embedded import embedded_gguf

    llama = Llama(model_path=str(embedded_gguf()), vocab_only=True, verbose=False)
    yield GrammarProbe(llama, catalog_command_grammar())
    llama.close()


def reference(text: str) -> bool:
    """The language command_grammar.py documents, as a plain automaton (states free, glued, slash, named)."""
    state, i = "free", 0
    while i < len(text):
        ch = text[i]
        if state == "slash" and ch.isascii() and ch.isalpha():
            j = i
            while j < len(text) and text[j].isascii() and (text[j].isalnum() or text[j] == "_"):
                j += 1
            if text[i:j] not in NAMES:
                return False
            state, i = "named", j
            continue
        if ch == "/":  # a word-start slash, or one glued to what came before
            state = "slash" if state == "free" else "glued"
        elif ch in GLUE:
            state = "glued"
        else:
            state = "free"
        i += 1
    return True


def test_every_catalog_name_and_alias_is_accepted(probe: GrammarProbe) -> None:
    assert len(NAMES) > 50
    for name in NAMES:
        for text in (f"/{name}", f"Use /{name} to do it.", f"(/{name}), then /{name}\n", f"/{name}/"):
            assert probe.accepts(text), text


@pytest.mark.parametrize("text", [
    "/deletemesh", "Use /deletemesh now.", "Send /nodesx", "/Nodes", "/nod", "try /c2", "é/deletemesh",
    "Type /mail_x", "ok /", "ok /n",
])
def test_invented_or_unfinished_commands_cannot_be_produced(probe: GrammarProbe, text: str) -> None:
    if text == "ok /":  # a bare slash at the end is fine: no command is named
        assert probe.accepts(text)
        return
    assert not probe.accepts(text)


@pytest.mark.parametrize("text", [
    "there is no deletemesh command", "bob meet at 5", "Speed: 40 km/h, and/or w/o a 24/7 link.",
    "see http://x.org/deletemesh or ~/notes and </b>", "a-/x", "x@/y", "1/2 of the / mesh", "/ ", "/2", "//x",
    "Use /nodes, /c or /weather.", "é and ü / ok", "C:\\/x", "#/tag",
])
def test_free_text_stays_possible(probe: GrammarProbe, text: str) -> None:
    assert probe.accepts(text)
    assert unknown_slash_words(text) == []


def test_the_word_start_rule_agrees_with_the_catalog_check(probe: GrammarProbe) -> None:
    """For every printable ASCII character before "/deletemesh": the catalog check calls it a command
    exactly when the grammar forbids it (the character does not glue the slash to a word)."""
    for ch in string.printable:
        if ch == "/":
            continue
        text = f"{ch}/deletemesh"
        flagged = bool(unknown_slash_words(text))
        assert flagged == (ch not in GLUE), repr(text)
        assert probe.accepts(text) == (not flagged), repr(text)


def test_random_texts_llama_cpp_matches_the_reference_and_accepted_means_clean(probe: GrammarProbe) -> None:
    pieces = ["/", " /", " /", "(/", " ", "km", "h", "nodes", "node", "c", "check", "mail", "deletemesh", "N", "2",
              "_", ".", ":", "-", "é", "\n", ")", ",", "~", "<", "@", "#", "\\", "x", "weather", "!"]
    rng = random.Random(7)
    accepted = rejected = 0
    for _ in range(1000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 7)))
        ok = probe.accepts(text)
        assert ok == reference(text), repr(text)
        if ok:
            accepted += 1
            assert unknown_slash_words(text) == [], repr(text)
        else:
            rejected += 1
    assert accepted > 300 and rejected > 50  # both sides were exercised


def test_grammar_builder_checks_names() -> None:
    assert 'command ::= "a" | "b_2"' in command_grammar(["/B_2", "a", "/a"])
    with pytest.raises(ValueError, match="not '/'"):
        command_grammar(["/dé"])
    with pytest.raises(ValueError, match="no command names"):
        command_grammar([])


def test_a_grounded_reply_may_name_only_the_commands_put_in_front_of_the_model(probe: GrammarProbe) -> None:
    from meshai_common.grounding import ground_prompt
    from meshai_common.inference.command_grammar import grounded_command_grammar, grounded_command_names
    from meshai_common.prompts import meshmaster_prompt

    prompt = ground_prompt(meshmaster_prompt("who is on the mesh right now", ["ZED: anyone up?"]))
    names = set(grounded_command_names(prompt))
    assert {"/nodes", "/help", "/menu"} <= names
    assert "/blackjack" not in names and "/alarm" not in names
    mail = grounded_command_names("cmd /c [mailbox] [PIN] [search]: read a mailbox")
    assert {"/c", "/check", "/checkmail"} <= set(mail)  # every alias of a retrieved command
    grounded = GrammarProbe(probe.llama, grounded_command_grammar(prompt))
    assert grounded.accepts("Send /nodes to list them, or /help.")
    assert not grounded.accepts("Send /blackjack to play.")  # real, but not what was retrieved
    assert not grounded.accepts("Send /deletemesh")


def test_a_reply_may_echo_the_prompts_own_unknown_word_and_nothing_else(probe: GrammarProbe) -> None:
    from meshai_common.inference.command_grammar import echo_words

    assert echo_words("tried /SOS and /nodes, then km/h and /sos again") == ("SOS", "sos")
    assert echo_words("how do I see nodes? /nodes") == ()
    echoing = GrammarProbe(probe.llama, command_grammar(load_catalog().names, echo_words("what does /sos do?")))
    assert echoing.accepts("/sos is not a command. Send /help for the real commands.")
    assert echoing.accepts("Use /nodes.")
    assert not echoing.accepts("/sosx is not a command")  # a longer word is still invented
    assert not echoing.accepts("/deletemesh")
    assert not probe.accepts("/sos is not a command.")  # without the prompt's word: forbidden as before
    with pytest.raises(ValueError, match="echo word"):
        command_grammar(["/nodes"], ["dé"])
    assert "echo ::=" not in command_grammar(["/nodes"], ["NODES"])  # a real name is a command, not an echo


def test_a_reply_may_be_made_to_open_with_given_words(probe: GrammarProbe) -> None:
    opening = command_grammar(load_catalog().names, ("sos",), opening="sos is not a command")
    assert opening.startswith('root ::= "sos is not a command" glued')
    opened = GrammarProbe(probe.llama, opening)
    assert opened.accepts("sos is not a command. Send /help for the real commands.")
    assert opened.accepts("sos is not a command")
    assert not opened.accepts("Send /help for the real commands.")
    assert not opened.accepts("sos is not a command. Try /deletemesh")
    # grounding's other openings: quotes and "<" pass through GBNF's string escapes
    for words, reply in (("DM me 'KJ5", "DM me 'KJ5 road is out'. I relay it to KJ5."),
                         ("No command needed: DM me '<shortname> <message", "No command needed: DM me "
                          "'<shortname> <message>'."), ('"CLIENT: normal', '"CLIENT: normal, rebroadcasts."')):
        quoted = GrammarProbe(probe.llama, command_grammar(load_catalog().names, opening=words))
        assert quoted.accepts(reply) and not quoted.accepts("Send /menu " + reply)
    for bad in ("sos /x", "two\nlines", "ends with a dot."):
        with pytest.raises(ValueError, match="opening"):
            command_grammar(["/nodes"], opening=bad)
