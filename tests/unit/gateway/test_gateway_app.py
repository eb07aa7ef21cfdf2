"""The gateway app end to end over HTTP (Starlette TestClient), with a scripted engine instead of a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from gateway_fakes import FakeSource, prompts, scripted, words

from meshai_common.modelfile import Modelfile
from meshai_common.radio import fits_budget, utf8_len
from meshai_gateway.app import create_app
from meshai_gateway.settings import GatewaySettings

SUFFIX = " (120s)"  # what Mesh-Master appends; the budget reserves room for it
LONG = ("Use /nodes to list nodes heard in the last 24 hours, newest first. Each entry shows SNR and hops. "
        "Send /node name for one node. Raise the antenna for better links. Add a router on a hill. ") * 3
# The request Mesh-Master sends (reference section 1).
BOT_PAYLOAD = {
    "model": "mesh-ai",
    "prompt": "You are a helpful assistant.\n\nContext:\nbob: hi all\n\nQuestion: how do I see nodes?\n\nAnswer:",
    "stream": False,
    "options": {"num_ctx": 1024, "num_predict": 80, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                "repeat_penalty": 1.1, "num_thread": 2},
}


def make_client(tmp_path: Path, script: list[str], settings: GatewaySettings | None = None,
                source: FakeSource | None = None) -> TestClient:
    source = source or FakeSource(tmp_path / "model.gguf")
    app = create_app(settings or GatewaySettings(), source, engine_factory=scripted(script))
    client = TestClient(app)
    client.__enter__()
    if not source.fail:
        assert app.state.manager.wait_ready(5)
    return client


@pytest.fixture
def client(tmp_path: Path):
    c = make_client(tmp_path, words("Use /nodes to see nodes heard in the last 24 hours."))
    yield c
    c.__exit__(None, None, None)


@pytest.fixture
def long_client(tmp_path: Path):
    c = make_client(tmp_path, words(LONG))
    yield c
    c.__exit__(None, None, None)


def bot_read_stream(lines: list[str]) -> str:
    """Mesh-Master's reading of a streamed reply: concatenate `response` until done, fail on `error`."""
    out = ""
    for line in lines:
        if not line.strip():
            continue
        obj = json.loads(line)
        if "error" in obj:
            raise AssertionError(f"stream error: {obj['error']}")
        out += obj.get("response", "")
        if obj.get("done"):
            break
    return out


# -- basics ---------------------------------------------------------------------------------------------

def test_root_version_health(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.text == "Ollama is running"
    assert client.head("/").status_code == 200
    assert client.get("/api/version").json()["version"]
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == "mesh-ai"


def test_tags_ps_show(client: TestClient) -> None:
    models = client.get("/api/tags").json()["models"]
    assert len(models) == 1
    m = models[0]
    assert m["name"] == "mesh-ai:latest" and m["model"] == "mesh-ai:latest"
    assert len(m["digest"]) == 64 and m["size"] == 1234
    assert m["details"]["format"] == "gguf" and m["details"]["quantization_level"] == "Q4_K_M"
    ps = client.get("/api/ps").json()["models"]
    assert ps[0]["name"] == "mesh-ai:latest" and "expires_at" in ps[0]
    show = client.post("/api/show", json={"model": "mesh-ai"}).json()
    assert show["details"]["family"] == "llama"
    assert show["model_info"]["llama.context_length"] == 8192
    assert "modelfile" in show and "capabilities" in show
    assert client.post("/api/show", json={"name": "mesh-ai:latest"}).status_code == 200


def test_v1_models(client: TestClient) -> None:
    data = client.get("/v1/models").json()
    assert data["object"] == "list" and data["data"][0]["id"] == "mesh-ai"


# -- Mesh-Master's request ------------------------------------------------------------------------------

def test_bot_payload_not_streaming(client: TestClient) -> None:
    r = client.post("/api/generate", json=BOT_PAYLOAD)
    assert r.status_code == 200
    body = r.json()
    reply = body.get("response") or body["choices"][0]["text"]  # how the bot reads it
    assert reply == "Use /nodes to see nodes heard in the last 24 hours."
    assert body["done"] is True and body["done_reason"] == "stop"
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                "eval_duration"):
        assert isinstance(body[key], int) and body[key] >= 0, key
    assert body["eval_count"] == len(words(reply))
    assert body["chunks"] == ["Use /nodes to see nodes heard in the last 24 hours."]  # 51 bytes: one chunk
    assert body["trimmed"] is False
    assert fits_budget(reply + SUFFIX)


def test_bot_payload_streaming(client: TestClient) -> None:
    payload = dict(BOT_PAYLOAD, stream=True)
    with client.stream("POST", "/api/generate", json=payload) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = list(r.iter_lines())
    reply = bot_read_stream(lines)
    assert reply == "Use /nodes to see nodes heard in the last 24 hours."
    objs = [json.loads(x) for x in lines if x.strip()]
    assert all(not o["done"] for o in objs[:-1])
    final = objs[-1]
    assert final["done"] is True and final["response"] == ""
    assert final["chunks"] == [reply]
    assert isinstance(final["eval_duration"], int)


def test_stream_is_the_default(client: TestClient) -> None:
    r = client.post("/api/generate", json={"model": "mesh-ai", "prompt": "hi"})
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert len([x for x in r.text.splitlines() if x.strip()]) > 1


def test_prompt_goes_through_the_template_with_the_default_system(tmp_path: Path) -> None:
    mf = Modelfile(system="Be brief.")
    c = make_client(tmp_path, ["ok"], source=FakeSource(tmp_path / "m.gguf", modelfile=mf))
    try:
        c.post("/api/generate", json={"model": "mesh-ai", "prompt": "hello there", "stream": False})
        engine = c.app.state.manager.current
        assert prompts(engine)[-1] == "System: Be brief.\n\nUser: hello there\n\nAssistant:"
        c.post("/api/generate", json={"model": "mesh-ai", "prompt": "hi", "system": "Pirate.", "stream": False})
        assert prompts(engine)[-1].startswith("System: Pirate.")
        c.post("/api/generate", json={"model": "mesh-ai", "prompt": "RAW TEXT", "raw": True, "stream": False})
        assert prompts(engine)[-1] == "RAW TEXT"
        c.post("/api/generate", json={"model": "mesh-ai", "prompt": "Q", "stream": False,
                                      "template": "{{ if .System }}[{{ .System }}] {{ end }}{{ .Prompt }} =>"})
        assert prompts(engine)[-1] == "[Be brief.] Q =>"
    finally:
        c.__exit__(None, None, None)


# -- the radio budget -----------------------------------------------------------------------------------

def test_long_reply_is_stopped_and_trimmed_at_a_sentence_end(long_client: TestClient) -> None:
    body = long_client.post("/api/generate", json=dict(BOT_PAYLOAD, options={"num_predict": 500})).json()
    reply = body["response"]
    assert body["trimmed"] is True and body["done_reason"] == "length"
    assert body["radio"]["stopped_by_budget"] is True and body["radio"]["removed"]
    assert reply.endswith(".")
    assert fits_budget(reply + SUFFIX, 160, 2)
    assert body["eval_count"] < len(words(LONG))  # generation stopped early
    # Mesh-Master's chunking: 160 bytes at most, broken at the last space within the last 30 characters
    # (" links." would end the first chunk at byte 162).
    assert body["chunks"] == [
        "Use /nodes to list nodes heard in the last 24 hours, newest first. Each entry shows SNR and hops. "
        "Send /node name for one node. Raise the antenna for better",
        "links. Add a router on a hill. Use /nodes to list nodes heard in the last 24 hours, newest first. "
        "Each entry shows SNR and hops.",
    ]
    assert [utf8_len(c) for c in body["chunks"]] == [156, 128]


def test_streamed_text_equals_the_trimmed_reply(long_client: TestClient) -> None:
    with long_client.stream("POST", "/api/generate", json=dict(BOT_PAYLOAD, stream=True)) as r:
        lines = list(r.iter_lines())
    reply = bot_read_stream(lines)
    final = json.loads([x for x in lines if x.strip()][-1])
    assert final["trimmed"] is True
    assert "".join(final["chunks"]).replace(" ", "") == reply.replace(" ", "")
    assert fits_budget(reply + SUFFIX)


def test_budget_per_request_options(long_client: TestClient) -> None:
    one = long_client.post("/api/generate", json=dict(BOT_PAYLOAD, options={"max_chunks": 1})).json()
    assert fits_budget(one["response"] + SUFFIX, 160, 1) and len(one["chunks"]) == 1
    small = long_client.post("/api/generate", json=dict(BOT_PAYLOAD, options={"chunk_bytes": 60,
                                                                                 "max_chunks": 3})).json()
    assert all(utf8_len(c) <= 60 for c in small["chunks"]) and fits_budget(small["response"] + SUFFIX, 60, 3)
    off = long_client.post("/api/generate", json=dict(BOT_PAYLOAD, options={"max_chunks": 0,
                                                                               "num_predict": 1000})).json()
    assert off["trimmed"] is False and off["response"] == LONG.strip()


def test_num_predict_still_caps_tokens(long_client: TestClient) -> None:
    body = long_client.post("/api/generate", json=dict(BOT_PAYLOAD, options={"num_predict": 5})).json()
    assert body["eval_count"] == 5 and body["done_reason"] == "length"
    assert body["response"] == "".join(words(LONG)[:5]).strip()


def test_stop_sequences(long_client: TestClient) -> None:
    body = long_client.post("/api/generate", json=dict(BOT_PAYLOAD, options={"stop": ["SNR"]})).json()
    assert body["done_reason"] == "stop"
    assert body["response"] == "Use /nodes to list nodes heard in the last 24 hours, newest first. Each entry shows"


# -- chat and OpenAI ------------------------------------------------------------------------------------

def test_chat_streaming_and_not(client: TestClient) -> None:
    msgs = [{"role": "user", "content": "how do I see nodes?"}]
    body = client.post("/api/chat", json={"model": "mesh-ai", "messages": msgs, "stream": False}).json()
    assert body["message"] == {"role": "assistant", "content": "Use /nodes to see nodes heard in the last 24 hours."}
    assert body["done"] and body["chunks"]
    with client.stream("POST", "/api/chat", json={"model": "mesh-ai", "messages": msgs}) as r:
        objs = [json.loads(x) for x in r.iter_lines() if x.strip()]
    assert "".join(o["message"]["content"] for o in objs) == body["message"]["content"]
    assert objs[-1]["done"] and objs[-1]["done_reason"] == "stop"


def test_openai_chat_completions(client: TestClient) -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "nodes?"}]
    body = client.post("/v1/chat/completions", json={"model": "mesh-ai", "messages": msgs}).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Use /nodes to see nodes heard in the last 24 hours."
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] > 0
    with client.stream("POST", "/v1/chat/completions",
                       json={"model": "mesh-ai", "messages": msgs, "stream": True,
                             "stream_options": {"include_usage": True}}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [x[len("data: "):] for x in r.iter_lines() if x.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == body["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_openai_errors_use_openai_shape(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "model 'nope' not found"
    r = client.post("/v1/chat/completions", json={"model": "mesh-ai", "messages": []})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


# -- errors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,payload", [
    ("/api/generate", {"model": "llama3.2:1b", "prompt": "hi"}),
    ("/api/chat", {"model": "other", "messages": [{"role": "user", "content": "hi"}]}),
    ("/api/show", {"model": "other"}),
    ("/api/pull", {"name": "other"}),
])
def test_unknown_model_is_404(client: TestClient, path: str, payload: dict) -> None:
    r = client.post(path, json=payload)
    assert r.status_code == 404
    assert r.json() == {"error": f"model '{payload.get('model') or payload.get('name')}' not found"}


def test_model_name_tag_and_aliases(tmp_path: Path) -> None:
    c = make_client(tmp_path, ["ok"], settings=GatewaySettings(aliases=("llama3.2:1b",)))
    try:
        for name in ("mesh-ai", "mesh-ai:latest", "MESH-AI", "llama3.2:1b"):
            assert c.post("/api/generate", json={"model": name, "prompt": "x", "stream": False}).status_code == 200
    finally:
        c.__exit__(None, None, None)


@pytest.mark.parametrize("body,fragment", [
    (b"{not json", "invalid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"", "empty"),
    (b'{"model": "mesh-ai", "prompt": "\xff\xfe"}', "not valid UTF-8"),
    (b'{"model": "mesh-ai", "prompt": "\\ud800"}', "surrogate"),
    (b'{"prompt": "hi"}', "model is required"),
    (b'{"model": "mesh-ai", "prompt": 5}', "prompt"),
    (b'{"model": "mesh-ai", "prompt": "hi", "stream": "yes"}', "stream"),
    (b'{"model": "mesh-ai", "prompt": "hi", "options": {"temperature": "hot"}}', "options.temperature"),
    (b'{"model": "mesh-ai", "prompt": "hi", "options": {"num_predict": 1.5}}', "options.num_predict"),
    (b'{"model": "mesh-ai", "prompt": "hi", "options": {"top_p": 7}}', "options.top_p"),
    (b'{"model": "mesh-ai", "prompt": "hi", "options": {"max_chunks": -1}}', "options.max_chunks"),
    (b'{"model": "mesh-ai", "prompt": "hi", "options": "fast"}', "options"),
    (b'{"model": "mesh-ai", "prompt": "hi", "format": "xml"}', "format"),
    (b'{"model": "mesh-ai", "prompt": "hi", "images": ["aGk="]}', "images"),
    (b'{"model": "mesh-ai", "prompt": "hi", "template": "{{ range .Messages }}x{{ end }}"}', "template"),
    (b'{"model": "mesh-ai", "prompt": "hi", "template": "{{ if .System }}open"}', "template"),
])
def test_bad_input_is_4xx_with_a_reason(client: TestClient, body: bytes, fragment: str) -> None:
    r = client.post("/api/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]


def test_integral_floats_are_accepted_like_ollama(client: TestClient) -> None:
    r = client.post("/api/generate", json={"model": "mesh-ai", "prompt": "hi", "stream": False,
                                           "options": {"num_predict": 80.0, "top_k": 40}})
    assert r.status_code == 200


def test_huge_body_is_413(tmp_path: Path) -> None:
    c = make_client(tmp_path, ["ok"], settings=GatewaySettings(max_body_bytes=4096))
    try:
        r = c.post("/api/generate", json={"model": "mesh-ai", "prompt": "x" * 10_000})
        assert r.status_code == 413 and "limit" in r.json()["error"]

        def chunked():
            yield b'{"model": "mesh-ai", "prompt": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        r = c.post("/api/generate", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413
    finally:
        c.__exit__(None, None, None)


def test_wrong_content_type_is_415(client: TestClient) -> None:
    r = client.post("/api/generate", content=b"x", headers={"content-type": "image/png"})
    assert r.status_code == 415


def test_unknown_route_and_method_are_json_errors(client: TestClient) -> None:
    r = client.get("/api/nothing")
    assert r.status_code == 404 and "not found" in r.json()["error"]
    r = client.get("/api/generate")
    assert r.status_code == 405 and "not allowed" in r.json()["error"]


def test_empty_prompt_loads_like_ollama(client: TestClient) -> None:
    body = client.post("/api/generate", json={"model": "mesh-ai"}).json()
    assert body["done"] is True and body["done_reason"] == "load"
    body = client.post("/api/generate", json={"model": "mesh-ai", "keep_alive": 0}).json()
    assert body["done_reason"] == "unload"


def test_pull_and_delete(client: TestClient) -> None:
    assert client.post("/api/pull", json={"name": "mesh-ai", "stream": False}).json() == {"status": "success"}
    lines = client.post("/api/pull", json={"model": "mesh-ai"}).text.splitlines()
    assert json.loads(lines[-1]) == {"status": "success"}
    r = client.request("DELETE", "/api/delete", json={"model": "mesh-ai"})
    assert r.status_code == 403 and "promotion" in r.json()["error"]


def test_not_ready_is_503_with_reason(tmp_path: Path) -> None:
    source = FakeSource(tmp_path / "m.gguf")
    source.fail = "nothing promoted under mesh-ai yet"
    c = make_client(tmp_path, ["ok"], source=source)
    try:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and "nothing promoted" in r.json()["reason"]
        r = c.post("/api/generate", json={"model": "mesh-ai", "prompt": "hi"})
        assert r.status_code == 503 and "nothing promoted" in r.json()["error"]
        assert c.get("/api/tags").json() == {"models": []}
    finally:
        c.__exit__(None, None, None)


def test_metrics(client: TestClient) -> None:
    client.post("/api/generate", json=BOT_PAYLOAD)
    client.post("/api/generate", json={"model": "nope", "prompt": "x"})
    text = client.get("/metrics").text
    assert 'meshai_gateway_requests_total{method="POST",route="/api/generate",status="200"} 1.0' in text
    assert 'meshai_gateway_requests_total{method="POST",route="/api/generate",status="404"} 1.0' in text
    for name in ("meshai_gateway_request_duration_seconds_bucket", "meshai_gateway_time_to_first_token_seconds",
                 "meshai_gateway_generation_tokens_per_second", "meshai_gateway_radio_trims_total",
                 "meshai_gateway_queue_depth", "meshai_gateway_model_loaded 1.0"):
        assert name in text, name
