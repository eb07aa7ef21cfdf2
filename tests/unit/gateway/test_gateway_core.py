"""Gateway core without HTTP: model swaps, admission, Modelfile and template handling, prompt preparation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gateway_fakes import FakeSource, Scripted, scripted

from meshai_common.errors import InvalidInput, NotFound, Unavailable
from meshai_common.inference import (
    ChatMessage,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    TextDelta,
)
from meshai_common.inference.template import ChatTemplate, render_go_template
from meshai_common.modelfile import parse_modelfile
from meshai_gateway.engine import Engine
from meshai_gateway.model_manager import ModelManager
from meshai_gateway.model_source import LocalFileSource, check_gguf
from meshai_gateway.scheduler import Overloaded, Scheduler
from meshai_gateway.settings import GatewaySettings

# -- hot swap -------------------------------------------------------------------------------------------


def test_swap_keeps_in_flight_requests_on_the_old_model(tmp_path: Path) -> None:
    source = FakeSource(tmp_path / "m.gguf", version="v1")
    manager = ModelManager(source, GatewaySettings(), factory=scripted(["hi"]))
    first = manager.refresh()
    assert manager.ready and manager.refresh() is first  # same sha: no reload

    held = manager.acquire()  # a request in flight on v1
    source.version = "v2"
    second = manager.refresh()
    assert second is not first and manager.current is second and manager.swaps == 1
    assert not first.closed and not any(b.closed for b in first.backends)  # still in use
    held.release()
    assert first.closed and all(b.closed for b in first.backends)  # unloaded when its last request finished
    assert not second.closed


def test_failed_refresh_keeps_serving_the_current_model(tmp_path: Path) -> None:
    source = FakeSource(tmp_path / "m.gguf")
    manager = ModelManager(source, GatewaySettings(), factory=scripted(["hi"]))
    engine = manager.refresh()
    source.fail = "bucket unreachable"
    with pytest.raises(NotFound):
        manager.refresh()
    assert manager.current is engine and manager.ready


def test_not_ready_reason_and_background_start(tmp_path: Path) -> None:
    source = FakeSource(tmp_path / "m.gguf")
    source.fail = "nothing promoted"
    manager = ModelManager(source, GatewaySettings(), factory=scripted(["hi"]))
    with pytest.raises(Unavailable, match="not loaded"):
        manager.engine()
    manager.start()
    assert not manager.wait_ready(0.3)
    assert "nothing promoted" in manager.reason
    source.fail = None
    manager.refresh()
    assert manager.ready
    manager.stop()
    assert manager.current is None


# -- admission ------------------------------------------------------------------------------------------

async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the event loop until `condition` holds; fail after `timeout` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


def test_scheduler_queues_then_refuses() -> None:
    async def scenario() -> None:
        sched = Scheduler(max_concurrent=1, max_queue=1, queue_timeout_s=5)
        first = await sched.admit()
        waiter = asyncio.ensure_future(sched.admit())
        await eventually(lambda: sched.waiting == 1)
        assert sched.running == 1
        with pytest.raises(Overloaded) as info:
            await sched.admit()
        assert info.value.retry_after_s >= 1
        first.release()
        second = await asyncio.wait_for(waiter, 1)
        assert sched.running == 1 and sched.waiting == 0
        second.release()
        second.release()  # idempotent
        assert sched.running == 0

    asyncio.run(scenario())


def test_scheduler_queue_timeout() -> None:
    async def scenario() -> None:
        sched = Scheduler(max_concurrent=1, max_queue=4, queue_timeout_s=0.05)
        lease = await sched.admit()
        with pytest.raises(Overloaded, match="waited"):
            await sched.admit()
        lease.release()

    asyncio.run(scenario())


# -- engine logic (scripted tokens) ---------------------------------------------------------------------

def _engine(tmp_path: Path, script: list[str], delay_s: float = 0.0, **params) -> Engine:
    from gateway_fakes import Modelfile

    source = FakeSource(tmp_path / "m.gguf", modelfile=Modelfile(parameters=params))
    return Scripted(script, delay_s)(source.current(), GatewaySettings())


def test_run_yields_deltas_then_one_result(tmp_path: Path) -> None:
    engine = _engine(tmp_path, ["  Hello", " world", ".", "  "])
    events = list(engine.run(engine.prepare(GenerationRequest(prompt="hi"))))
    assert isinstance(events[-1], GenerationResult)
    text = "".join(e.text for e in events if isinstance(e, TextDelta)) + events[-1].tail
    assert text == events[-1].text == "Hello world."  # leading/trailing whitespace dropped for the radio


def test_cancel_stops_generation(tmp_path: Path) -> None:
    engine = _engine(tmp_path, ["a "] * 1000)
    cancel = threading.Event()
    prep = engine.prepare(GenerationRequest(prompt="hi", options={"max_chunks": 0}))
    for count, event in enumerate(engine.run(prep, cancel), start=1):
        if count == 3:
            cancel.set()
        if isinstance(event, GenerationResult):
            assert event.done_reason == "cancelled"
            assert event.completion_tokens < 10


def test_model_parameters_are_defaults_requests_override(tmp_path: Path) -> None:
    engine = _engine(tmp_path, ["x"], temperature=0.2, num_predict=30, stop=["END"], max_chunks=1)
    prep = engine.prepare(GenerationRequest(prompt="hi"))
    assert prep.params.temperature == 0.2 and prep.params.stop == ("END",) and prep.max_tokens == 30
    assert prep.budget.max_chunks == 1
    prep = engine.prepare(GenerationRequest(prompt="hi", options={"temperature": 0.9, "max_chunks": 3}))
    assert prep.params.temperature == 0.9 and prep.budget.max_chunks == 3
    assert SamplingParams.merged({}).top_k == 40  # Ollama's defaults


def test_long_prompt_is_truncated_from_the_front(tmp_path: Path) -> None:
    engine = _engine(tmp_path, ["x"])
    prep = engine.prepare(GenerationRequest(prompt="w " * 2000, options={"num_predict": 50}))
    assert prep.truncated and len(prep.tokens) + prep.max_tokens <= engine.n_ctx
    assert prep.max_tokens == 50


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    engine = _engine(tmp_path, ["x"])
    with pytest.raises(InvalidInput, match="format"):
        engine.prepare(GenerationRequest(prompt="hi", format="yaml"))


# -- Modelfile, templates, model files ------------------------------------------------------------------

def test_parse_modelfile() -> None:
    mf = parse_modelfile('FROM ./model.gguf\n# comment\nSYSTEM """You are Mesh-AI.\nBe brief."""\n'
                         'PARAMETER temperature 0.3\nPARAMETER stop "<|im_end|>"\nPARAMETER stop END\n'
                         "PARAMETER num_ctx 1024\nTEMPLATE {{ .Prompt }}\nLICENSE apache\n")
    assert mf.from_ == "./model.gguf"
    assert mf.system == "You are Mesh-AI.\nBe brief."
    assert mf.parameters == {"temperature": 0.3, "stop": ["<|im_end|>", "END"], "num_ctx": 1024}
    assert mf.template == "{{ .Prompt }}"


@pytest.mark.parametrize("text,fragment", [
    ("PARAMETER warp 9", "unknown PARAMETER"),
    ("PARAMETER num_ctx big", "needs an integer"),
    ('SYSTEM """never closed', "unterminated"),
    ("just words", "Modelfile:1: unknown instruction"),
])
def test_bad_modelfile_names_the_line(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        parse_modelfile(text)


def test_go_template_subset() -> None:
    t = "{{- if .System }}<s>{{ .System }}</s>\n{{- end }}\n{{ .Prompt }}{{ if .Response }}!{{ else }}?{{ end }}"
    assert render_go_template(t, {"System": "sys", "Prompt": "p", "Response": ""}) == "<s>sys</s>\np?"
    assert render_go_template(t, {"System": "", "Prompt": "p", "Response": "r"}) == "\np!"
    with pytest.raises(InvalidInput):
        render_go_template("{{ .Messages }}", {})


def test_chat_template_renders_chatml() -> None:
    src = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    out = ChatTemplate(src).render([ChatMessage("system", "s"), ChatMessage("user", "u")])
    assert out == "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(InvalidInput):
        ChatTemplate("{% if %}")


def test_local_source_checks_the_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        LocalFileSource(tmp_path / "missing.gguf").current()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(InvalidInput, match="not a GGUF"):
        check_gguf(bad)
    good = tmp_path / "tiny.gguf"
    good.write_bytes(b"GGUF" + b"\0" * 60)
    (tmp_path / "tiny.gguf.Modelfile").write_text("SYSTEM hi\nPARAMETER max_chunks 3\n")
    info = LocalFileSource(good, "mesh-ai").current()
    assert info.size == 64 and len(info.sha256) == 64
    assert info.system == "hi" and info.parameters == {"max_chunks": 3}


def test_settings_validation() -> None:
    from meshai_common.errors import ConfigError

    with pytest.raises(ConfigError, match="chunk_bytes"):
        GatewaySettings(chunk_bytes=2)
    assert GatewaySettings().with_overrides(max_chunks=0, num_ctx=None).max_chunks == 0


def test_cli_registers_the_gateway_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from meshai_gateway.cli import register

    parser = argparse.ArgumentParser(prog="meshai")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gateway", "--model", str(tmp_path / "x.gguf")])
    assert (args.name, args.host, args.port) == ("mesh-ai", "127.0.0.1", 11434)
    assert args.func(args) == 2  # missing file: exit code 2 and a reason, no server
    assert "does not exist" in capsys.readouterr().err
    args = parser.parse_args(["gateway", "--model", str(tmp_path / "x.gguf"), "--max-chunks", "-3"])
    assert args.func(args) == 2
    assert "max_chunks" in capsys.readouterr().err


def test_streamed_events_come_in_batches_first_piece_at_once(tmp_path: Path) -> None:
    """Tokens reach the event loop in batches (one wake-up and one write per FLUSH_S), the first one alone."""
    from meshai_gateway.metrics import GatewayMetrics
    from meshai_gateway.scheduler import Lease
    from meshai_gateway.service import FLUSH_S, Generation

    engine = _engine(tmp_path, ["w "] * 40, delay_s=0.005)  # 200 tokens/s: several per batch
    prep = engine.prepare(GenerationRequest(prompt="hi", options={"max_chunks": 0}))
    executor = ThreadPoolExecutor(1)

    async def collect() -> list[list[object]]:
        gen = Generation(engine, prep, Lease([]), executor, GatewayMetrics(), 0)
        return [batch async for batch in gen.batches()]

    batches = asyncio.run(collect())
    executor.shutdown()
    assert len(batches[0]) == 1 and isinstance(batches[0][0], TextDelta)  # time to first token unchanged
    assert isinstance(batches[-1][-1], GenerationResult)
    events = [e for b in batches for e in b]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) + events[-1].tail == events[-1].text
    assert len(batches) < len(events) / 2  # most wake-ups saved
    assert FLUSH_S <= 0.05


def test_a_request_queued_across_a_swap_runs_on_the_new_version(tmp_path: Path) -> None:
    """The old version serves only what was already running: it is unloaded without waiting for the queue."""
    from meshai_gateway.metrics import GatewayMetrics
    from meshai_gateway.service import GenerationService

    source = FakeSource(tmp_path / "m.gguf", version="v1")
    settings = GatewaySettings(max_queue=4)
    manager = ModelManager(source, settings, factory=scripted(["a "] * 30, delay_s=0.01))
    manager.refresh()
    service = GenerationService(manager, settings, GatewayMetrics(), "mesh-ai")

    async def drain(gen) -> None:
        async for _ in gen.events():
            pass
        gen.close()

    async def scenario() -> None:
        old = manager.current
        running = await service.start("mesh-ai", GenerationRequest(prompt="hi", options={"max_chunks": 0}))
        first = asyncio.ensure_future(drain(running))
        queued = asyncio.ensure_future(service.start("mesh-ai", GenerationRequest(prompt="hi")))
        await eventually(lambda: service.scheduler.waiting == 1)
        assert not queued.done()
        source.version = "v2"
        await asyncio.get_running_loop().run_in_executor(None, manager.refresh)
        assert running.engine is old and not old.closed  # still generating
        second = await queued
        assert second.engine is manager.current and second.engine is not old
        await first
        await eventually(lambda: old.closed)  # the worker's done-callback frees the slot and the old version
        assert all(b.closed for b in old.backends)
        await drain(second)

    asyncio.run(scenario())
    service.shutdown()


# -- command grammar and grounding settings -------------------------------------------------------------

def test_constrain_commands_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from meshai_common.errors import ConfigError

    info = FakeSource(tmp_path / "m.gguf").current()
    on = Scripted(["ok"])(info, GatewaySettings())
    assert on.prepare(GenerationRequest(prompt="hi")).command_grammar is not None
    assert on.prepare(GenerationRequest(prompt="hi", format="json")).command_grammar is None
    monkeypatch.setenv("MESHAI_CONSTRAIN_COMMANDS", "off")
    settings = GatewaySettings.from_env()
    assert not settings.constrain_commands
    off = Scripted(["ok"])(info, settings)
    assert off.prepare(GenerationRequest(prompt="hi")).command_grammar is None
    monkeypatch.setenv("MESHAI_CONSTRAIN_COMMANDS", "maybe")
    with pytest.raises(ConfigError, match="MESHAI_CONSTRAIN_COMMANDS"):
        GatewaySettings.from_env()


def test_grounding_follows_the_modelfile_unless_turned_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gateway_fakes import Modelfile

    from meshai_common.errors import ConfigError

    plain = FakeSource(tmp_path / "m.gguf").current()
    trained = FakeSource(tmp_path / "m.gguf", modelfile=Modelfile(extensions={"grounding": "catalog-v1"})).current()
    assert Scripted(["ok"])(plain, GatewaySettings()).core.grounder is None
    assert Scripted(["ok"])(trained, GatewaySettings(grounding="off")).core.grounder is None
    monkeypatch.setenv("MESHAI_GROUNDING", "off")
    assert GatewaySettings.from_env().grounding == "off"
    monkeypatch.setenv("MESHAI_GROUNDING", "always")
    with pytest.raises(ConfigError, match="MESHAI_GROUNDING"):
        GatewaySettings.from_env()
    grounding = pytest.importorskip("meshai_common.grounding")
    grounder = Scripted(["ok"])(trained, GatewaySettings()).core.grounder
    prompt = "Question: how do i see who is around\nAnswer:"
    assert grounder(prompt) == grounding.ground_prompt(prompt, version="catalog-v1")
