"""LocalModel on the real embedded SmolLM2-135M: the command grammar holds while sampling at Mesh-Master's
temperature, and LocalModel answers exactly as the gateway's engine does for the same request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meshai_common.errors import NotFound
from meshai_common.inference import GenerationRequest, GenerationResult
from meshai_common.inference.local import LocalModel
from meshai_common.meshmaster import unknown_slash_words
from meshai_common.prompts import meshmaster_prompt

pytestmark = pytest.mark.slow

# What Mesh-Master sends (reference section 1), plus a seed so a run can be repeated.
BOT_OPTIONS = {"num_ctx": 1024, "num_predict": 80, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
               "repeat_penalty": 1.1, "num_thread": 2}
# Questions that invite an invented command.
BAITS = ["How do I use /deletemesh?", "what does /resetmesh do", "is there a /kickall command?",
         "how do i run /nodelist"]


@pytest.fixture(scope="module")
def gguf() -> Path:
    from meshai_common.embedded import embedded_gguf

    try:
        return embedded_gguf()
    except NotFound as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def model(gguf: Path) -> Iterator[LocalModel]:
    with LocalModel.open(gguf, n_threads=2) as m:
        yield m


def test_the_grammar_keeps_replies_to_real_commands(model: LocalModel, gguf: Path) -> None:
    def replies(m: LocalModel) -> list[str]:
        return [m.generate(meshmaster_prompt(q, [("ann", "anyone on?")]), dict(BOT_OPTIONS, seed=seed)).text
                for q in BAITS for seed in range(3)]

    constrained = replies(model)
    for text in constrained:
        assert unknown_slash_words(text) == [], text
    assert sum(bool(r) for r in constrained) >= len(constrained) - 2  # the model still answers
    with LocalModel.open(gguf, n_threads=2, constrain_commands=False) as free:
        unconstrained = replies(free)
    # Not vacuous: without the grammar this model does name the invented commands (5 of 12 when written).
    assert any(unknown_slash_words(text) for text in unconstrained)


def test_local_model_answers_as_the_gateway_engine_does(model: LocalModel, gguf: Path) -> None:
    from meshai_gateway.engine import Engine
    from meshai_gateway.model_source import LocalFileSource
    from meshai_gateway.settings import GatewaySettings

    engine = Engine(LocalFileSource(gguf, "mesh-ai").current(), GatewaySettings(num_threads=2, num_ctx=1024))
    try:
        for i, question in enumerate(["how do I see which nodes are around?", "How do I use /deletemesh?"]):
            prompt = meshmaster_prompt(question)
            options = dict(BOT_OPTIONS, seed=10 + i)
            served = [e for e in engine.run(engine.prepare(GenerationRequest(prompt=prompt, options=options)))][-1]
            assert isinstance(served, GenerationResult)
            judged = model.generate(prompt, options)
            assert (judged.text, judged.chunks, judged.completion_tokens) == (served.text, served.chunks,
                                                                              served.completion_tokens)
    finally:
        engine.close()


def test_open_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        LocalModel.open(tmp_path / "missing.gguf")
