"""The gateway driven by the official `ollama` Python client, as any Ollama tool would drive it: a real server on
127.0.0.1 with the real SmolLM2 GGUF and an API key; every field the client parses is checked."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import ollama
import pytest
from gateway_live import serve_app, smollm2_gguf

from meshai_common.radio import fits_budget
from meshai_gateway.app import create_app
from meshai_gateway.model_source import LocalFileSource
from meshai_gateway.settings import BOT_REPLY_SUFFIX, GatewaySettings

# Loads the real SmolLM2 GGUF and generates with it.
pytestmark = pytest.mark.slow

KEY = "compat-test-key-0123456789abcdef"
DETAILS = {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
           "parameter_size": "135M", "quantization_level": "Q4_1"}


@pytest.fixture(scope="module")
def gguf() -> Path:
    return smollm2_gguf()


@pytest.fixture(scope="module")
def base(gguf: Path) -> Iterator[str]:
    app = create_app(GatewaySettings(num_threads=2, api_key=KEY), LocalFileSource(gguf, "mesh-ai"))
    with serve_app(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(base: str) -> ollama.Client:
    return ollama.Client(host=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)


def created(value: str | None) -> datetime:
    assert isinstance(value, str)
    stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert stamp.tzinfo is not None and abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 300
    return stamp


def check_final(r: ollama.GenerateResponse | ollama.ChatResponse, max_tokens: int) -> None:
    assert r.model == "mesh-ai" and r.done is True and r.done_reason in ("stop", "length")
    created(r.created_at)
    for name in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                 "eval_duration"):
        assert isinstance(getattr(r, name), int) and getattr(r, name) >= 0, name
    assert 0 < r.eval_count <= max_tokens and r.prompt_eval_count > 5
    assert r.total_duration >= r.prompt_eval_duration + r.eval_duration > 0


def test_generate(client: ollama.Client) -> None:
    r = client.generate(model="mesh-ai", prompt="What does SNR mean on a radio?",
                        options=ollama.Options(num_predict=24, temperature=0))
    assert isinstance(r, ollama.GenerateResponse)
    check_final(r, 24)
    assert isinstance(r.response, str) and r.response.strip()
    assert fits_budget(r.response + BOT_REPLY_SUFFIX)
    assert r.thinking is None and r.logprobs is None and r.context is None
    assert r["response"] == r.response  # the client's dict-style access


def test_generate_streaming(client: ollama.Client) -> None:
    parts = list(client.generate(model="mesh-ai", prompt="Name three radio bands.", stream=True,
                                 options={"num_predict": 24, "temperature": 0}))
    assert all(isinstance(p, ollama.GenerateResponse) for p in parts) and len(parts) > 2
    for p in parts[:-1]:
        assert p.done is False and p.model == "mesh-ai" and isinstance(p.response, str)
        assert p.eval_count is None and p.done_reason is None
        created(p.created_at)
    stamps = [created(p.created_at) for p in parts]
    assert stamps == sorted(stamps)
    check_final(parts[-1], 24)
    assert parts[-1].response == ""
    reply = "".join(p.response for p in parts)
    assert reply.strip() and fits_budget(reply + BOT_REPLY_SUFFIX)


def test_chat(client: ollama.Client) -> None:
    messages = [{"role": "system", "content": "Answer in one sentence."},
                {"role": "user", "content": "What is LoRa?"}]
    r = client.chat(model="mesh-ai", messages=messages, options={"num_predict": 24, "temperature": 0})
    assert isinstance(r, ollama.ChatResponse)
    check_final(r, 24)
    assert r.message.role == "assistant" and r.message.content and r.message.content.strip()
    assert r.message.thinking is None and r.message.tool_calls is None and r.message.images is None
    parts = list(client.chat(model="mesh-ai", messages=messages, stream=True,
                             options={"num_predict": 24, "temperature": 0}))
    assert all(p.message.role == "assistant" for p in parts)
    assert all(p.done is False for p in parts[:-1])
    check_final(parts[-1], 24)
    assert "".join(p.message.content or "" for p in parts) == r.message.content  # greedy: the same reply


def test_list_show_ps(client: ollama.Client, gguf: Path) -> None:
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    models = client.list().models
    assert len(models) == 1
    m = models[0]
    assert m.model == "mesh-ai:latest" and m.digest == digest and m.size == gguf.stat().st_size
    assert isinstance(m.modified_at, datetime) and m.modified_at.tzinfo is not None
    assert m.details is not None and m.details.model_dump() == DETAILS

    show = client.show("mesh-ai")
    assert isinstance(show.modified_at, datetime)
    assert show.template and "<|im_start|>" in show.template
    assert show.modelfile and "FROM" in show.modelfile
    assert isinstance(show.license, str) and isinstance(show.parameters, str)
    assert show.details is not None and show.details.model_dump() == DETAILS
    assert show.modelinfo and show.modelinfo["general.architecture"] == "llama"
    assert show.capabilities == ["completion"]

    ps = client.ps().models
    assert len(ps) == 1
    p = ps[0]
    assert p.model == p.name == "mesh-ai:latest" and p.digest == digest and p.size == gguf.stat().st_size
    assert p.size_vram == 0 and p.context_length == 2048
    assert isinstance(p.expires_at, datetime) and p.expires_at > datetime.now(timezone.utc)
    assert p.details is not None and p.details.model_dump() == DETAILS


def test_pull_and_delete(client: ollama.Client) -> None:
    assert client.pull("mesh-ai").status == "success"
    statuses = list(client.pull("mesh-ai:latest", stream=True))
    assert all(isinstance(s, ollama.ProgressResponse) for s in statuses)
    assert statuses[-1].status == "success"
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("mesh-ai")
    assert err.value.status_code == 403 and "promotion" in err.value.error


def test_errors_reach_the_client_as_response_errors(client: ollama.Client, base: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="nope", prompt="hi")
    assert err.value.status_code == 404 and err.value.error == "model 'nope' not found"
    with pytest.raises(ollama.ResponseError) as err:
        list(client.chat(model="nope", messages=[{"role": "user", "content": "x"}], stream=True))
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("nope")
    assert err.value.status_code == 404

    with pytest.raises(ollama.ResponseError) as err:  # no key
        ollama.Client(host=base).list()
    assert err.value.status_code == 401 and err.value.error.startswith("unauthorized")
    monkeypatch.setenv("OLLAMA_API_KEY", KEY)  # the client's own way of sending a key
    assert ollama.Client(host=base).list().models[0].model == "mesh-ai:latest"
