"""`meshai chat` over real HTTP on 127.0.0.1: against the real gateway app (a scripted token backend in place of
a model), and against a minimal Ollama-style NDJSON server for what the gateway never sends."""

from __future__ import annotations

import io
import itertools
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from meshai_testing import ROOT

sys.path[:0] = [str(ROOT / "tests/unit/gateway"), str(ROOT / "tests/integration/gateway")]

from gateway_fakes import FakeSource, prompts, scripted, words  # noqa: E402
from gateway_live import serve_app  # noqa: E402

from meshai_common.ollama_client import BOT_OPTIONS  # noqa: E402
from meshai_common.prompts import meshmaster_prompt  # noqa: E402
from meshai_common.radio import split_chunks, utf8_len  # noqa: E402
from meshai_gateway.app import create_app  # noqa: E402
from meshai_gateway.settings import GatewaySettings  # noqa: E402
from meshai_orchestrator.chat import EMPTY_REPLY, ChatSettings, MeshHistory, run_chat  # noqa: E402

REPLY = "Use /nodes to see nodes heard in the last 24 hours."
LONG = "Raise the antenna, get line of sight and check SNR and RSSI on both ends of the link. " * 12


def ticking_clock(step: float = 0.5):
    """A clock that advances `step` seconds per reading: timings and the bot's " (Ns)" become exact."""
    counter = itertools.count()
    return lambda: next(counter) * step


def chat(settings: ChatSettings, lines: list[str], clock=None) -> str:
    out = io.StringIO()
    assert run_chat(settings, io.StringIO("".join(f"{x}\n" for x in lines)), out, clock or ticking_clock()) == 0
    return out.getvalue()


@pytest.fixture
def gateway(tmp_path: Path):
    factory = scripted(words(REPLY))
    app = create_app(GatewaySettings(), FakeSource(tmp_path / "model.gguf"), engine_factory=factory)
    with serve_app(app) as base:
        yield base, factory


def test_history_is_the_bots_context() -> None:
    h = MeshHistory(context_chars=30, max_messages=3)
    for i in range(5):
        h.add("ME", f"message {i}")
    text, cut = h.context()
    # the last 3 lines, then the last 30 characters: the cut falls inside a line, as the bot's does
    assert "\n".join(f"ME: message {i}" for i in (2, 3, 4))[-30:].strip() == text and cut
    assert MeshHistory(100, 3, ["a: b"]).context() == ("a: b", False)


def test_chat_against_the_gateway(gateway) -> None:
    base, factory = gateway
    settings = ChatSettings(url=base, show_prompt=True)
    out = chat(settings, ["how do i see nodes", "and the weather?", "/quit", "never read"])
    engine = factory.engines[0]
    asked = prompts(engine)
    first = meshmaster_prompt("how do i see nodes", ["ME: how do i see nodes"])
    second = meshmaster_prompt("and the weather?", [f"ME: how do i see nodes\nNode_Mesh Master: {REPLY} (1s)\n"
                                                    "ME: and the weather?"])
    assert first in asked[0] and second in asked[1] and len(asked) == 2
    # The bot's options went with every request.
    assert all((p.params.temperature, p.params.top_p, p.params.top_k, p.params.repeat_penalty, p.max_tokens) ==
               (0.7, 0.9, 40, 1.1, 80) for p in engine.backends[0].generated)
    sent = f"{REPLY} (1s)"
    assert f"  [1/1] {utf8_len(sent):>3} B | {sent}" in out
    assert "first token 0.50 s, total 1.00 s" in out and "within the 2 x 160 B budget" in out
    assert "    | Question: and the weather?" in out
    assert "never read" not in out


def test_reset_clears_the_context(gateway) -> None:
    base, factory = gateway
    out = chat(ChatSettings(url=base), ["first", "/reset", "second", "/nodes"])
    asked = prompts(factory.engines[0])
    assert meshmaster_prompt("second", ["ME: second"]) in asked[1] and "first" not in asked[1]
    assert "history cleared" in out and "Mesh-Master answers /nodes itself" in out and len(asked) == 2


def test_gateway_budget_shows_two_chunks(tmp_path: Path) -> None:
    app = create_app(GatewaySettings(), FakeSource(tmp_path / "m.gguf"), engine_factory=scripted(words(LONG)))
    with serve_app(app) as base:
        out = chat(ChatSettings(url=base), ["my link is bad"])
    assert "[1/2]" in out and "[2/2]" in out and "[3/" not in out and "within the 2 x 160 B budget" in out


@contextmanager
def ollama_like(lines: list[dict]) -> Iterator[tuple[str, list[dict]]]:
    """A loopback server answering POST /api/generate with the given NDJSON lines; records request bodies."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200 if self.path == "/api/generate" else 404)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            for line in lines:
                self.wfile.write(json.dumps(line).encode() + b"\n")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/generate", seen
    finally:
        server.shutdown()
        server.server_close()


def test_any_ollama_endpoint_long_reply_is_cut_like_the_bot() -> None:
    pieces = [{"response": w, "done": False} for w in words(LONG)] + [{"response": "", "done": True}]
    with ollama_like(pieces) as (url, seen):
        out = chat(ChatSettings(url=url, model="llama3.2:1b"), ["help"])
    assert seen[0] == {"model": "llama3.2:1b", "prompt": meshmaster_prompt("help", ["ME: help"]), "stream": True,
                       "options": BOT_OPTIONS}
    sent = (LONG[:800] + " (1s)")[:800]  # chunk_size x 5 characters, the suffix cut off with it
    chunks = split_chunks(sent)
    assert len(chunks) > 5
    assert all(f"] {utf8_len(c):>3} B | {c}" in out for c in chunks)
    assert out.count("[dropped]") == len(chunks) - 5 and "OVER the 2 x 160 B budget" in out


def test_empty_reply_and_errors() -> None:
    with ollama_like([{"response": "", "done": True}]) as (url, _):
        out = chat(ChatSettings(url=url), ["hello"])
    # 0.5 s rounds to 0, as Python's round does in the bot
    assert f"| {EMPTY_REPLY} (0s)" in out and "first token -, total 0.50 s" in out
    with ollama_like([{"response": "par"}, {"error": "model 'x' not found"}]) as (url, _):
        out = chat(ChatSettings(url=url, model="x"), ["hello", "again"])
    assert out.count("error: x at ") == 2 and "model 'x' not found" in out
    out = chat(ChatSettings(url="http://127.0.0.1:9/api/generate"), ["hello"])
    assert "error: mesh-ai at http://127.0.0.1:9/api/generate:" in out


def test_meshai_chat_command_finds_the_gateway_url(tmp_path: Path, monkeypatch, capsys) -> None:
    from meshai_orchestrator.cli import main

    with ollama_like([{"response": "Try /help.", "done": False}, {"response": "", "done": True}]) as (url, seen):
        monkeypatch.setenv("MESHAI_GATEWAY_URL", url.removesuffix("/api/generate"))
        monkeypatch.setattr(sys, "stdin", io.StringIO("what now\n"))
        assert main(["--home", str(tmp_path), "chat", "--name", "K7AB", "--context-chars", "10"]) == 0
    assert seen[0]["prompt"] == meshmaster_prompt("what now", [": what now"])  # "K7AB: what now", its last 10
    assert "Try /help." in capsys.readouterr().out
