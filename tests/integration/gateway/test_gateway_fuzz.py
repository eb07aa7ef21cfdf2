"""Malformed requests against the gateway app serving the real SmolLM2 model: wrong types for every field,
bad JSON, invalid UTF-8, lone surrogates, deep nesting, huge bodies, unknown options, wrong content types,
seeded random bytes and mutations. Whatever arrives, the answer is never a 5xx: a 4xx with a clear message,
or (for requests that are valid after all) a 200 whose stream holds no internal error.

Generations are capped at 4 tokens by the deployment's max_predict, so the requests that do reach the model
cost little; the whole module takes well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from gateway_live import serve_app, smollm2_gguf

from meshai_gateway.app import create_app
from meshai_gateway.model_source import LocalFileSource
from meshai_gateway.settings import GatewaySettings

# Loads the real SmolLM2 GGUF and generates with it.
pytestmark = pytest.mark.slow

MAX_BODY = 64 * 1024
WRONG: list[Any] = [None, True, False, 0, -1, 1.5, -1e308, 1e308, 2**70, -(2**70), "", "x", "\u00e9\U0001f4e1",
                    "9" * 400, [], [1, "a"], {}, {"a": {"b": None}}, [[[[]]]]]
OPTIONS = ["num_predict", "num_ctx", "num_keep", "num_batch", "num_thread", "num_gpu", "seed", "top_k", "top_p",
           "min_p", "typical_p", "temperature", "repeat_penalty", "repeat_last_n", "presence_penalty",
           "frequency_penalty", "mirostat", "mirostat_tau", "mirostat_eta", "stop", "chunk_bytes", "max_chunks"]
# Numbers at and past the edges of every option's range (the sampler's own edge cases included).
EDGES: list[Any] = [0, 1, -2, 0.0, 1.0, 100.0, 2**31 - 1, 2**31, 2**63, -(2**63) - 1, 1e-300]

ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "generate": ("/api/generate", {"model": "mesh-ai", "prompt": "Say hi.", "stream": False}),
    "chat": ("/api/chat", {"model": "mesh-ai", "messages": [{"role": "user", "content": "Say hi."}],
                           "stream": False}),
    "show": ("/api/show", {"model": "mesh-ai"}),
    "pull": ("/api/pull", {"model": "mesh-ai"}),
    "openai": ("/v1/chat/completions", {"model": "mesh-ai", "messages": [{"role": "user", "content": "Hi"}]}),
}
FIELDS = {
    "generate": ["model", "prompt", "suffix", "system", "template", "context", "stream", "raw", "format", "images",
                 "keep_alive", "options", "think"],
    "chat": ["model", "messages", "tools", "stream", "format", "keep_alive", "options", "think"],
    "show": ["model", "name", "verbose"],
    "pull": ["model", "name", "stream", "insecure"],
    "openai": ["model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
               "temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "stop", "n",
               "response_format", "tools", "chunk_bytes", "max_chunks"],
}


def cases() -> Iterator[tuple[str, str, bytes, str]]:
    """(id, path, body, content-type), deterministic."""
    rng = random.Random(1124)
    js = "application/json"
    # Wrong types for every field of every route, and for every option.
    for route, (path, base) in ROUTES.items():
        for field in FIELDS[route]:
            for value in WRONG:
                yield f"{route}.{field}={value!r:.20}", path, json.dumps(base | {field: value}).encode(), js
    for opt in OPTIONS:
        for value in WRONG + EDGES:
            body = ROUTES["generate"][1] | {"options": {opt: value}}
            yield f"options.{opt}={value!r:.20}", "/api/generate", json.dumps(body).encode(), js
    # Messages of every wrong shape.
    for msg in [None, "hi", [], {}, {"role": "user"}, {"content": "x"}, {"role": "wizard", "content": "x"},
                {"role": "user", "content": 5}, {"role": "user", "content": [{"type": "image_url"}]},
                {"role": "user", "content": [{"type": "text", "text": 5}]}, {"role": "tool", "content": ""},
                {"role": "assistant", "content": "x", "tool_calls": "x"}, {"role": "system", "content": "s"}]:
        for route in ("chat", "openai"):
            path, base = ROUTES[route]
            yield f"{route}.message={msg!r:.30}", path, json.dumps(base | {"messages": [msg]}).encode(), js
    # Formats and templates that parse as JSON but make no sense.
    for fmt in ["yaml", {"type": "object", "properties": {"a": {"type": "nonsense"}}}, {"$ref": "#/nowhere"},
                {"type": "array", "items": {"$ref": "#"}}, {"type": "string", "pattern": "(("}, {"enum": []},
                {"anyOf": []}, {"type": "integer", "minimum": 5, "maximum": 1}, {"not": {}}, [1, 2], 5]:
        body = ROUTES["generate"][1] | {"format": fmt}
        yield f"format={fmt!r:.30}", "/api/generate", json.dumps(body).encode(), js
    for tpl in ["{{", "}}", "{{ .Prompt", "{{ if .System }}", "{{ end }}", "{{ range .Messages }}{{ end }}",
                "{{ .Prompt }}" * 500, "{{ if .Prompt }}" * 300 + "x" + "{{ end }}" * 300, "{{- -}}", "{{ . }}"]:
        body = ROUTES["generate"][1] | {"template": tpl}
        yield f"template={tpl[:20]!r}", "/api/generate", json.dumps(body).encode(), js
    # Unknown fields and options are ignored, as Ollama does.
    body = ROUTES["generate"][1] | {"options": {"warp": 9, "num_predict": 2, "low_vram": True}, "extra": [1]}
    yield "unknown options", "/api/generate", json.dumps(body).encode(), js
    # Encoding and syntax.
    raw_cases = [b"", b" ", b"null", b"[]", b'"str"', b"5", b"{", b'{"model": "mesh-ai",}', b"{'model': 1}",
                 b'{"model": "mesh-ai", "prompt": "\xff\xfe"}', b'{"model": "mesh-ai", "prompt": "\xc3\x28"}',
                 b'{"model": "mesh-ai", "prompt": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 bytes
                 b'{"model": "mesh-ai", "prompt": "\\ud83d"}', b'{"model": "mesh-ai", "prompt": "\\udc00\\ud800"}',
                 b'{"model": "mesh-ai", "prompt": "ok"} trailing', b'\xef\xbb\xbf{"model": "mesh-ai"}',
                 b'{"model": "mesh-ai", "prompt": "' + "\U0001f4e1".encode() * 50 + b'", "stream": false}',
                 b'{"model": NaN}', b'{"a": -Infinity}', b"[" * 100_000, b"{" * 60_000,
                 b'{"a":' * 2000 + b"1" + b"}" * 2000, b"[" * 50 + b"]" * 50, b'{"model": "mesh-ai"' + b" " * 70_000,
                 b'{"model": "mesh-ai", "prompt": "' + b"x" * (MAX_BODY + 1) + b'"}', b"\x00" * 100]
    for n, body in enumerate(raw_cases):
        for path in ("/api/generate", "/api/chat", "/v1/chat/completions"):
            yield f"raw[{n}]{path}", path, body, js
    # Content types.
    good = json.dumps(ROUTES["generate"][1]).encode()
    for ctype in ["", "text/html", "application/xml", "multipart/form-data; boundary=x", "application/octet-stream",
                  "application/json; charset=utf-16", "image/png", "application/x-www-form-urlencoded",
                  "text/plain", "text/csv"]:
        yield f"content-type={ctype!r}", "/api/generate", good, ctype
    yield "utf-16 body", "/api/generate", json.dumps(ROUTES["generate"][1]).encode("utf-16"), js
    # Seeded random bytes, random JSON values, and mutations of valid bodies.
    for n in range(60):
        blob = rng.randbytes(rng.choice([1, 7, 64, 512, 4096]))
        yield f"random-bytes[{n}]", rng.choice([p for p, _ in ROUTES.values()]), blob, js
    for n in range(60):
        route = rng.choice(list(ROUTES))
        path, base = ROUTES[route]
        body = dict(base)
        for _ in range(rng.randint(1, 3)):
            body[rng.choice(FIELDS[route])] = _random_value(rng, 3)
        yield f"random-json[{n}]{route}", path, json.dumps(body).encode(), js
    for n in range(60):
        route = rng.choice(list(ROUTES))
        path, base = ROUTES[route]
        data = bytearray(json.dumps(base).encode())
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            action = rng.randrange(3)
            if action == 0:
                data[i] = rng.randrange(256)
            elif action == 1:
                del data[i]
            else:
                data[i:i] = rng.choice([b'"', b"{", b"]", b",", b"\\", b"\\u", b"\xff", b"\x00", b"1e999"])
        yield f"mutation[{n}]{route}", path, bytes(data), js


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(8 if depth > 0 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([rng.randint(-(2**40), 2**40), rng.randint(-3, 3)])
    if kind == 3:
        return rng.uniform(-1e6, 1e6)
    if kind == 4:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0xD7FF),
                                       rng.randrange(0xE000, 0x10FFFF)])) for _ in range(rng.randrange(12)))
    if kind == 5:
        return rng.choice(["mesh-ai", "json", "", "user", "system", "0", "-1s", "5m"])
    if kind == 6:
        return [_random_value(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["role", "content", "type", "num_predict", "x", "stop", "seed"]): _random_value(rng, depth - 1)
            for _ in range(rng.randrange(4))}


CASES = list(cases())


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = GatewaySettings(num_threads=2, num_ctx=512, max_predict=4, max_body_bytes=MAX_BODY)
    app = create_app(settings, LocalFileSource(smollm2_gguf(), "mesh-ai"))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert app.state.manager.wait_ready(60)
        yield c


def check(r: Any, case: str) -> None:
    assert r.status_code < 500, f"{case}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        error = r.json()["error"]
        message = error["message"] if isinstance(error, dict) else error
        assert isinstance(message, str) and len(message) > 5, f"{case}: {r.text[:300]}"
        return
    if r.headers.get("content-type", "").startswith(("application/x-ndjson", "text/event-stream")):
        for line in r.text.splitlines():
            line = line.removeprefix("data: ").strip()
            if not line or line == "[DONE]":
                continue
            obj = json.loads(line)
            assert "error" not in obj, f"{case}: error mid-stream: {obj}"


def test_malformed_requests_never_get_a_5xx(client: TestClient) -> None:
    assert len(CASES) >= 600, len(CASES)  # the generator still makes enough cases to mean something
    outcomes: dict[int, int] = {}
    for case, path, body, ctype in CASES:
        headers = {"content-type": ctype} if ctype else {}
        r = client.post(path, content=body, headers=headers)
        check(r, case)
        outcomes[r.status_code] = outcomes.get(r.status_code, 0) + 1
    # Both sides were exercised: most requests refused, some valid enough to generate.
    assert outcomes.get(400, 0) > 300 and outcomes.get(200, 0) > 20, outcomes
    assert outcomes.get(413, 0) >= 3 and outcomes.get(415, 0) >= 5, outcomes


def test_wrong_methods_and_paths(client: TestClient) -> None:
    rng = random.Random(7)
    for path in ["/api/generate", "/api/chat", "/api/tags", "/api/pull", "/v1/chat/completions", "/metrics",
                 "/api/../etc/passwd", "/api/generate/", "/%00", "/api/" + "a" * 5000, "/v1/models/x"]:
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            r = client.request(method, path, content=rng.randbytes(16))
            check(r, f"{method} {path[:30]}")


def test_malformed_http_on_a_real_socket() -> None:
    """Broken HTTP framing never reaches the app: the server answers 4xx or closes, and keeps serving."""
    settings = GatewaySettings(num_threads=2, num_ctx=512, max_predict=4, max_body_bytes=MAX_BODY)
    app = create_app(settings, LocalFileSource(smollm2_gguf(), "mesh-ai"))
    with serve_app(app) as base:
        host, port = base.removeprefix("http://").split(":")
        requests = [
            b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
            b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
            b"POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            b"GARBAGE\r\n\r\n",
            b"POST /api/generate HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 100_000 + b"\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(64)),  # a TLS hello on plain HTTP
        ]
        for raw in requests:
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(raw)
                try:
                    reply = s.recv(4096)
                except (TimeoutError, ConnectionResetError):
                    reply = b""
            status = reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/1.1 ") else b""
            assert not status.startswith(b"5"), (raw[:60], reply[:200])
        r = httpx.post(f"{base}/api/generate", json={"model": "mesh-ai", "prompt": "hi", "stream": False},
                       timeout=60)
        assert r.status_code == 200 and r.json()["done"]
