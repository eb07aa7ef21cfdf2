"""The gateway over real HTTP (uvicorn on 127.0.0.1) with the real SmolLM2-135M GGUF.

Replies are kept short (num_predict small or the radio budget stops them): the whole module runs in well
under a minute on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from gateway_live import assert_chunked_like_the_bot, serve_app, smollm2_gguf

from meshai_common.meshmaster import unknown_slash_words
from meshai_common.radio import fits_budget
from meshai_common.waiting import wait_until
from meshai_gateway.app import create_app
from meshai_gateway.model_source import LocalFileSource
from meshai_gateway.settings import GatewaySettings

# Loads the real SmolLM2 GGUF and generates with it.
pytestmark = pytest.mark.slow

SUFFIX = " (120s)"
# A raw prompt the model keeps continuing: work that lasts until it is stopped.
ENDLESS = {"model": "mesh-ai", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,", "raw": True,
           "options": {"num_predict": 1500, "max_chunks": 0, "temperature": 0}}
PROMPT = ("You are a helpful assistant for a Meshtastic mesh.\n\nContext:\nbob: anyone on?\nann: hi bob\n\n"
          "Question: How do I see which nodes are around?\n\nAnswer:")


def bot_payload(stream: bool, **options: object) -> dict:
    """Exactly what Mesh-Master posts to /api/generate (reference section 1)."""
    opts = {"num_ctx": 1024, "num_predict": 80, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
            "repeat_penalty": 1.1, "num_thread": 2}
    opts.update(options)
    return {"model": "mesh-ai", "prompt": PROMPT, "stream": stream, "options": opts}


@pytest.fixture(scope="module")
def gguf() -> Path:
    return smollm2_gguf()


@contextmanager
def serve(gguf: Path, settings: GatewaySettings) -> Iterator[str]:
    with serve_app(create_app(settings, LocalFileSource(gguf, "mesh-ai"))) as base:
        yield base


@pytest.fixture(scope="module")
def base(gguf: Path) -> Iterator[str]:
    with serve(gguf, GatewaySettings(num_threads=2)) as url:
        yield url


def read_like_the_bot(resp: httpx.Response) -> tuple[str, dict]:
    """Concatenate each NDJSON line's `response` until done: true; an `error` line is a failure."""
    text, final = "", {}
    for line in resp.iter_lines():
        if not line.strip():
            continue
        obj = json.loads(line)
        assert "error" not in obj, obj
        text += obj.get("response", "")
        if obj.get("done"):
            final = obj
            break
    return text, final


def assert_within_budget(reply: str, chunks: list[str], chunk_bytes: int = 160, max_chunks: int = 2) -> None:
    assert reply.strip(), "empty reply"
    assert fits_budget(reply + SUFFIX, chunk_bytes, max_chunks), reply
    assert_chunked_like_the_bot(reply, chunks, chunk_bytes)


def test_bot_payload_not_streaming(base: str) -> None:
    r = httpx.post(f"{base}/api/generate", json=bot_payload(False), timeout=120)
    assert r.status_code == 200
    data = r.json()
    reply = data.get("response") or data["choices"][0]["text"]
    assert data["done"] is True and data["done_reason"] in ("stop", "length")
    assert 0 < data["eval_count"] <= 80 and data["prompt_eval_count"] > 20
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(data[key], int)
    assert data["total_duration"] >= data["eval_duration"] > 0
    assert_within_budget(reply, data["chunks"])


def test_bot_payload_streaming(base: str) -> None:
    with httpx.stream("POST", f"{base}/api/generate", json=bot_payload(True), timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        reply, final = read_like_the_bot(r)
    assert final["done"] is True and final["response"] == ""
    assert_within_budget(reply, final["chunks"])


def test_json_schema_format_is_valid_json_under_sampling(base: str) -> None:
    """A `format` grammar, applied after sampling like the command grammar, still yields only valid JSON."""
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    for seed in range(3):
        r = httpx.post(f"{base}/api/generate", timeout=120, json={
            "model": "mesh-ai", "prompt": "Is LoRa a radio technology? Answer in JSON.", "stream": False,
            "format": schema, "options": {"temperature": 0.7, "num_predict": 40, "seed": seed}})
        assert r.status_code == 200
        assert isinstance(json.loads(r.json()["response"])["ok"], bool)


def test_bot_request_never_names_an_invented_command(base: str) -> None:
    prompt = PROMPT.replace("How do I see which nodes are around?", "How do I use /deletemesh?")
    for seed in range(2):
        body = dict(bot_payload(False, seed=seed), prompt=prompt)
        r = httpx.post(f"{base}/api/generate", json=body, timeout=120)
        assert r.status_code == 200
        assert unknown_slash_words(r.json()["response"]) == []


OLLAMA_FINAL = {"model", "created_at", "response", "done", "done_reason", "total_duration", "load_duration",
                "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"}
RADIO = {"chunk_bytes", "max_chunks", "reserved_suffix", "enforced", "bytes", "chunk_count", "trimmed",
         "stopped_by_budget", "removed"}


def _stamp(value: object) -> datetime:
    assert isinstance(value, str) and value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def check_final_object(final: dict, reply: str) -> None:
    """Every field of the last object: Ollama's own, then the gateway's radio fields."""
    assert set(final) == OLLAMA_FINAL | {"chunks", "trimmed", "radio"}, set(final)
    assert final["model"] == "mesh-ai" and final["done"] is True and final["done_reason"] in ("stop", "length")
    for key in OLLAMA_FINAL - {"model", "created_at", "response", "done", "done_reason"}:
        assert type(final[key]) is int and final[key] >= 0, key
    assert 0 < final["eval_count"] <= 80 and final["prompt_eval_count"] > 20
    assert final["total_duration"] >= final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    assert_chunked_like_the_bot(reply, final["chunks"], 160)
    assert final["trimmed"] is final["radio"]["trimmed"]
    radio = final["radio"]
    assert set(radio) == RADIO
    assert (radio["chunk_bytes"], radio["max_chunks"], radio["reserved_suffix"], radio["enforced"]) == \
        (160, 2, SUFFIX, True)
    assert radio["bytes"] == len(reply.encode()) and radio["chunk_count"] == len(final["chunks"]) <= 2
    assert isinstance(radio["stopped_by_budget"], bool) and isinstance(radio["removed"], str)
    assert radio["removed"] == "" or radio["trimmed"]


def test_bot_reads_every_field(base: str) -> None:
    """Mesh-Master's exact request, both ways, every field of every object checked."""
    started = datetime.now(timezone.utc)
    with httpx.stream("POST", f"{base}/api/generate", json=bot_payload(True), timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        objs = [json.loads(line) for line in r.iter_lines() if line.strip()]
    assert len(objs) >= 2
    stamps = [_stamp(o["created_at"]) for o in objs]
    assert stamps == sorted(stamps) and stamps[0] >= started.replace(microsecond=0)
    for o in objs[:-1]:
        assert set(o) == {"model", "created_at", "response", "done"}, o
        assert o["model"] == "mesh-ai" and o["done"] is False and isinstance(o["response"], str)
    reply = "".join(o["response"] for o in objs)
    assert objs[-1]["response"] == ""
    check_final_object(objs[-1], reply)
    assert_within_budget(reply, objs[-1]["chunks"])

    r = httpx.post(f"{base}/api/generate", json=bot_payload(False), timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    _stamp(body["created_at"])
    check_final_object(body, body["response"])
    assert_within_budget(body["response"], body["chunks"])


def test_tags_show_describe_the_gguf(base: str, gguf: Path) -> None:
    tag = httpx.get(f"{base}/api/tags").json()["models"][0]
    assert tag["name"] == "mesh-ai:latest"
    assert tag["digest"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert tag["size"] == gguf.stat().st_size
    assert tag["details"] == {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                              "parameter_size": "135M", "quantization_level": "Q4_1"}
    show = httpx.post(f"{base}/api/show", json={"model": "mesh-ai"}).json()
    assert "<|im_start|>" in show["template"]
    assert show["model_info"]["general.architecture"] == "llama"


def test_long_answers_are_stopped_at_the_budget(base: str) -> None:
    # A generation that would run for 1500 tokens is stopped once the reply reaches 2 x 160 bytes.
    data = httpx.post(f"{base}/api/generate", timeout=120,
                      json=dict(ENDLESS, stream=False, options={"num_predict": 1500, "temperature": 0})).json()
    assert data["radio"]["stopped_by_budget"] and data["trimmed"] and data["done_reason"] == "length"
    assert data["eval_count"] < 500  # digits are one token each: ~320 bytes is ~300 tokens
    assert_within_budget(data["response"], data["chunks"])

    story = {"model": "mesh-ai", "prompt": "Write a long story about a radio operator named Bob.",
             "options": {"num_predict": 400, "temperature": 0, "seed": 1, "chunk_bytes": 80, "max_chunks": 1}}
    with httpx.stream("POST", f"{base}/api/generate", json=story, timeout=120) as r:
        reply, final = read_like_the_bot(r)
    assert final["trimmed"]
    assert_within_budget(reply, final["chunks"], 80, 1)


def test_chat_and_openai(base: str) -> None:
    msgs = [{"role": "user", "content": "What does SNR mean on a radio?"}]
    chat = httpx.post(f"{base}/api/chat", json={"model": "mesh-ai", "messages": msgs, "stream": False,
                                                "options": {"num_predict": 30}}, timeout=120).json()
    assert chat["message"]["role"] == "assistant" and chat["message"]["content"]
    assert_within_budget(chat["message"]["content"], chat["chunks"])
    oai = httpx.post(f"{base}/v1/chat/completions", json={"model": "mesh-ai", "messages": msgs,
                                                         "max_tokens": 30}, timeout=120).json()
    assert oai["choices"][0]["message"]["content"]
    assert oai["usage"]["completion_tokens"] <= 30


def test_bad_input_over_http(base: str) -> None:
    r = httpx.post(f"{base}/api/generate", content=b'{"model":"mesh-ai","prompt":"\xc3\x28"}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]
    r = httpx.post(f"{base}/api/generate", content=b"x" * (1 << 20 + 1) + b"x",
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = httpx.post(f"{base}/api/generate", json={"model": "nope", "prompt": "hi"})
    assert r.status_code == 404 and r.json() == {"error": "model 'nope' not found"}


def _metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_client_disconnect_stops_generation(base: str) -> None:
    before = _metric(base, "meshai_gateway_client_disconnects_total")
    with httpx.stream("POST", f"{base}/api/generate", json=ENDLESS, timeout=120) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    # The worker notices within a token or two; the slot frees and the next request runs at once.
    wait_until(lambda: _metric(base, "meshai_gateway_client_disconnects_total") > before
               and _metric(base, "meshai_gateway_generations_in_flight") == 0,
               timeout=10, what="disconnect counted and slot freed", interval=0.05)
    assert _metric(base, "meshai_gateway_client_disconnects_total") == before + 1
    assert _metric(base, "meshai_gateway_generations_in_flight") == 0
    started = time.monotonic()
    r = httpx.post(f"{base}/api/generate", json=bot_payload(False, num_predict=5), timeout=60)
    assert r.status_code == 200 and time.monotonic() - started < 10


def test_full_queue_is_503_with_retry_after(gguf: Path) -> None:
    with serve(gguf, GatewaySettings(num_threads=2, max_queue=0)) as url, \
            httpx.stream("POST", f"{url}/api/generate", json=ENDLESS, timeout=120) as r:
        lines = r.iter_lines()  # keep it: dropping the iterator closes the connection
        next(lines)  # generating: the only slot is taken
        busy = httpx.post(f"{url}/api/generate", json=bot_payload(False), timeout=30)
        assert busy.status_code == 503
        assert int(busy.headers["retry-after"]) >= 1
        assert "busy" in busy.json()["error"]


def test_cli_serves_and_stops_on_sigterm(gguf: Path, tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    code = ("import argparse, sys\nfrom meshai_gateway.cli import register\n"
            "p = argparse.ArgumentParser(); register(p.add_subparsers())\n"
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", code, "gateway", "--model", str(gguf), "--port", str(port),
                             "--threads", "2", "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200,
                   timeout=60, what="gateway CLI /readyz", retry_on=(httpx.TransportError,),
                   check=lambda: proc.poll() is None or pytest.fail(f"exited {proc.returncode}"))
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "Ollama is running"
        proc.send_signal(signal.SIGTERM)
        # uvicorn drains, then re-raises the signal it caught: exit by SIGTERM is the normal way out.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    missing = subprocess.run([sys.executable, "-c", code, "gateway", "--model", str(tmp_path / "none.gguf")],
                             env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
