"""The generation core on a scripted token backend: grounding hook, command grammar on radio replies, the
unfinished-command cleanup, Modelfile defaults and the radio budget (no model weights)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from meshai_common.errors import InvalidInput, Unavailable
from meshai_common.inference import (
    ChatMessage,
    CoreSettings,
    DecodeProgress,
    GenerationCore,
    GenerationRequest,
    GenerationResult,
    PreparedRequest,
    TextDelta,
)
from meshai_common.inference.command_grammar import catalog_command_grammar
from meshai_common.inference.core import resolve_grounder
from meshai_common.meshmaster import unknown_slash_words
from meshai_common.modelfile import Modelfile
from meshai_common.prompts import DEFAULT_SYSTEM_PROMPT, meshmaster_prompt


class Replay:
    """A token backend that replays pieces; records prompts and prepared requests."""

    n_ctx = 256
    bos_text = eos_text = ""
    chat_template_source = None
    metadata: dict[str, str] = {}

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.prompts: list[str] = []
        self.generated: list[PreparedRequest] = []

    def tokenize(self, text: str) -> list[int]:
        self.prompts.append(text)
        return list(range(len(text.split()) + 1))

    def check_format(self, spec) -> None:
        if spec != "json" and "type" not in spec:
            raise InvalidInput("format: unusable JSON schema")

    def pieces(self, prep: PreparedRequest, cancel: threading.Event, progress: DecodeProgress) -> Iterator[str]:
        self.generated.append(prep)
        for piece in self.script:
            progress.first_ns = progress.first_ns or time.perf_counter_ns()
            progress.n_out += 1
            yield piece
            if progress.n_out >= prep.max_tokens:
                progress.reason = "length"
                return
        progress.reason = "stop"

    def close(self) -> None:
        pass


def generate(core: GenerationCore, req: GenerationRequest) -> tuple[str, GenerationResult]:
    events = list(core.run(core.prepare(req)))
    result = events[-1]
    assert isinstance(result, GenerationResult)
    streamed = "".join(e.text for e in events[:-1] if isinstance(e, TextDelta))
    return streamed + result.tail, result


def grounded(text: str) -> str:
    return text.replace("Question:", "Context:\ncatalog: /nodes lists nodes\n\nQuestion:")


def test_grounder_rewrites_only_plain_prompts() -> None:
    backend = Replay(["ok"])
    core = GenerationCore(backend, grounder=grounded)
    prompt = meshmaster_prompt("how do I see nodes?")
    core.prepare(GenerationRequest(prompt=prompt))
    assert "catalog: /nodes lists nodes" in backend.prompts[-1]
    assert backend.prompts[-1].startswith(f"System: {DEFAULT_SYSTEM_PROMPT}\n\nUser: ")
    core.prepare(GenerationRequest(prompt=prompt, system="Be brief."))  # a system field is still a plain prompt
    assert "catalog:" in backend.prompts[-1]
    for req in (GenerationRequest(prompt=prompt, raw=True),
                GenerationRequest(prompt=prompt, template="{{ .Prompt }}"),
                GenerationRequest(messages=(ChatMessage("user", prompt),))):
        core.prepare(req)
        assert "catalog:" not in backend.prompts[-1], req
    GenerationCore(backend).prepare(GenerationRequest(prompt=prompt))
    assert "catalog:" not in backend.prompts[-1]  # no grounder, no grounding


def test_grounding_spec_off_means_no_grounder() -> None:
    for spec in (None, "", "off", " OFF "):
        assert resolve_grounder(spec) is None


def test_radio_replies_carry_the_command_grammar() -> None:
    core = GenerationCore(Replay(["ok"]))
    assert core.prepare(GenerationRequest(prompt="hi")).command_grammar == catalog_command_grammar()
    assert core.prepare(GenerationRequest(prompt="hi", raw=True)).command_grammar is not None
    assert core.prepare(GenerationRequest(prompt="hi", options={"max_chunks": 0})).command_grammar is None
    assert core.prepare(GenerationRequest(prompt="hi", format="json")).command_grammar is None
    off = GenerationCore(Replay(["ok"]), settings=CoreSettings(constrain_commands=False))
    assert off.prepare(GenerationRequest(prompt="hi")).command_grammar is None
    with pytest.raises(InvalidInput, match="format"):
        core.prepare(GenerationRequest(prompt="hi", format={"no": "type"}))


@pytest.mark.parametrize("script,expected", [
    (["Use", " /nod"], "Use"),  # cut off by the token limit in the middle of /nodes
    (["Use", " /nodes"], "Use /nodes"),
    (["Use", " /c"], "Use /c"),  # a complete short command
    (["Speed", " km/h"], "Speed km/h"),
    (["Try", " it:", " /che"], "Try it:"),
])
def test_an_unfinished_command_is_dropped_from_a_cut_reply(script: list[str], expected: str) -> None:
    core = GenerationCore(Replay(script + [" more"]))
    text, result = generate(core, GenerationRequest(prompt="hi", options={"num_predict": len(script)}))
    assert text == result.text == expected and result.done_reason == "length"
    assert unknown_slash_words(result.text) == []
    assert result.chunks == ([expected] if expected else [])
    unconstrained = GenerationCore(Replay(script + [" more"]), settings=CoreSettings(constrain_commands=False))
    _, raw = generate(unconstrained, GenerationRequest(prompt="hi", options={"num_predict": len(script)}))
    assert raw.text == "".join(script).strip()  # without the grammar the text is left as generated


@pytest.mark.parametrize("script", [
    ["/", "sos", " is not a command.", " Send /help."],
    ["/sos is", " not a command.", " Send /help."],
    ["/s", "os", " is", " not a command. Send", " /", "help."],
])
def test_an_echoed_unknown_word_reaches_the_user_without_its_slash(script: list[str]) -> None:
    core = GenerationCore(Replay(script))
    prep = core.prepare(GenerationRequest(prompt=meshmaster_prompt("/sos?")))
    assert prep.echo == ("sos",) and 'echo ::= "sos"' in (prep.command_grammar or "")
    events = list(core.run(prep))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    result = events[-1]
    assert isinstance(result, GenerationResult)
    assert "".join(deltas) + result.tail == result.text == "sos is not a command. Send /help."
    assert not any(d.endswith("/") or d.endswith("/s") for d in deltas)  # a slash is never sent ahead of its word
    assert unknown_slash_words(result.text) == []
    plain = GenerationCore(Replay(script))  # a prompt without the word: nothing to echo, text as generated
    assert plain.prepare(GenerationRequest(prompt="hi")).echo == ()


@pytest.mark.parametrize("reply,expected", [
    ("/sos/ x", "/sos/ x"),  # not a slash word (a path): left alone
    ("km/sos", "km/sos"),  # glued: not a slash word
    ("/sosx now", "/sosx now"),  # another word (the grammar forbids it; the filter does not guess)
    ("see /SOS.", "see SOS."),
    ("(/sos)", "(sos)"),
])
def test_echo_slashes_drop_only_the_slash_of_an_echo_word(reply: str, expected: str) -> None:
    from meshai_common.inference.core import EchoSlashes

    for cut in range(len(reply) + 1):  # the same text whatever the pieces
        echo = EchoSlashes(("sos",))
        assert echo.feed(reply[:cut]) + echo.feed(reply[cut:]) + echo.flush() == expected, cut


@pytest.mark.parametrize("line,opening", [
    ("sos is not a command; /help lists the commands", "sos is not a command"),
    ("relay: no command; DM me 'KJ5 <message>'; their next plain DM comes back to you", "DM me 'KJ5"),
    ("fact: A mailbox keeps at most 10 messages. Read it with /c <mailbox>.", "A mailbox keeps"),
])
def test_a_grounded_reply_opens_as_its_grounding_line_says(line: str, opening: str) -> None:
    core = GenerationCore(Replay(["ok"]), grounder=lambda text: text.replace(
        "Question:", f"Context:\n{line}\n\nQuestion:"))
    prep = core.prepare(GenerationRequest(prompt=meshmaster_prompt("/sos?")))
    assert (prep.command_grammar or "").startswith(f"root ::= {json.dumps(opening)} glued")


def test_only_a_grounded_prompt_is_made_to_open_some_way() -> None:
    def unknown_line(text: str) -> str:
        return text.replace("Question:", "Context:\nsos is not a command; /help lists the commands\n\nQuestion:")

    assert GenerationCore(Replay(["ok"]), grounder=grounded).prepare(
        GenerationRequest(prompt=meshmaster_prompt("/sos?"))).command_grammar.startswith("root ::= free")
    ungrounded = GenerationCore(Replay(["ok"]))  # a plain model's prompt carries no grounding line to follow
    assert ungrounded.prepare(GenerationRequest(prompt=unknown_line(meshmaster_prompt("/sos?")))).command_grammar \
        .startswith("root ::= free")


def test_modelfile_defaults_budget_and_system() -> None:
    mf = Modelfile(system="Be brief.", parameters={"temperature": 0.2, "max_chunks": 1, "chunk_bytes": 40})
    backend = Replay(["word "] * 60)
    core = GenerationCore(backend, mf, CoreSettings(reply_suffix=" (9s)"))
    prep = core.prepare(GenerationRequest(prompt="hi", options={"temperature": 0.9}))
    assert prep.params.temperature == 0.9 and prep.budget.max_chunks == 1 and prep.budget.chunk_bytes == 40
    assert backend.prompts[-1] == "System: Be brief.\n\nUser: hi\n\nAssistant:"
    text, result = generate(core, GenerationRequest(prompt="hi"))
    assert text == result.text and result.budget_stop and len((result.text + " (9s)").encode()) <= 40
    with pytest.raises(InvalidInput, match="max_chunks"):
        core.prepare(GenerationRequest(prompt="hi", options={"max_chunks": -1}))


def test_local_model_options_are_read_as_the_gateway_reads_them() -> None:
    from meshai_common.inference.local import request_options

    got = request_options({"num_predict": 80.0, "temperature": 0, "stop": "END", "seed": None, "num_thread": 2})
    assert got == {"num_predict": 80, "temperature": 0, "stop": ["END"], "num_thread": 2}
    assert request_options({"stop": ["a", "", "b"]})["stop"] == ["a", "b"]
    for bad in ({"top_k": "40"}, {"num_predict": 1.5}, {"temperature": True}, {"stop": [1]}):
        with pytest.raises(InvalidInput, match=f"options.{next(iter(bad))}"):
            request_options(bad)


GROUNDING_ASKS = ("Question: how do i see who is around\nAnswer:", "Question: does /teleport work\nAnswer:",
                  "Question: let OTTR know the gate is locked\nAnswer:")


def test_a_model_is_grounded_as_its_version_grounds_and_an_unknown_version_is_refused() -> None:
    from meshai_common.grounding import VERSIONS, ground_prompt

    asks = GROUNDING_ASKS
    for prompt in asks:
        for version in [v for v in VERSIONS if not VERSIONS[v].semantic]:  # semantic ones: the slow tier
            assert resolve_grounder(version)(prompt) == ground_prompt(prompt, version=version)
    # catalog-v4 names an unknown word as the reply must write it; older versions keep its slash
    assert "not a command: teleport;" in resolve_grounder("catalog-v4")(asks[1])
    assert "not a command: /teleport;" in resolve_grounder("catalog-v3")(asks[1])
    # catalog-v5 puts the node a relay question names into the DM form
    assert "DM me 'OTTR <message>'" in resolve_grounder("catalog-v5")(asks[2])
    assert "DM me '<shortname> <message>'" in resolve_grounder("catalog-v4")(asks[2])
    with pytest.raises(Unavailable, match=r"grounding=catalog-v0: unknown grounding version 'catalog-v0'; known: "):
        resolve_grounder("catalog-v0")


@pytest.mark.slow
def test_a_semantic_version_grounds_as_its_version_grounds() -> None:
    from meshai_common.grounding import GROUNDING_VERSION, VERSIONS, ground_prompt

    assert VERSIONS[GROUNDING_VERSION].semantic
    for prompt in GROUNDING_ASKS:
        assert resolve_grounder(GROUNDING_VERSION)(prompt) == ground_prompt(prompt)
    # catalog-v6 writes catalog-v5's lines (only the ranking differs); catalog-v7 opens an unknown word's line
    # with the word, as the reply opens
    assert "DM me 'OTTR <message>'" in resolve_grounder(GROUNDING_VERSION)(GROUNDING_ASKS[2])
    assert "not a command: teleport;" in resolve_grounder("catalog-v6")(GROUNDING_ASKS[1])
    assert "\nteleport is not a command; /help lists" in resolve_grounder("catalog-v7")(GROUNDING_ASKS[1])
