"""API key, request limits, model-name checks and model instances (scripted engine, no model weights)."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from gateway_fakes import FakeSource, Scripted, ScriptedBackend, scripted, words

from meshai_common.errors import ConfigError, Unavailable
from meshai_common.inference import GenerationRequest, GenerationResult
from meshai_common.waiting import wait_until
from meshai_gateway.app import create_app
from meshai_gateway.auth import presented_key
from meshai_gateway.model_manager import ModelManager
from meshai_gateway.settings import GatewaySettings, read_api_key

KEY = "k3y-for-tests-0123456789"
PAYLOAD = {"model": "mesh-ai", "prompt": "how do I see nodes?", "stream": False}


def make_client(tmp_path: Path, script: list[str] | None = None, **settings: object) -> TestClient:
    source = FakeSource(tmp_path / "model.gguf")
    app = create_app(GatewaySettings(**settings), source,  # type: ignore[arg-type]
                     engine_factory=scripted(script or words("Use /nodes to list nodes.")))
    client = TestClient(app)
    client.__enter__()
    assert app.state.manager.wait_ready(5)
    return client


@pytest.fixture
def keyed(tmp_path: Path):
    c = make_client(tmp_path, api_key=KEY)
    yield c
    c.__exit__(None, None, None)


# -- API key --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path,body", [
    ("POST", "/api/generate", PAYLOAD),
    ("POST", "/api/chat", {"model": "mesh-ai", "messages": [{"role": "user", "content": "hi"}]}),
    ("GET", "/api/tags", None),
    ("POST", "/api/show", {"model": "mesh-ai"}),
    ("GET", "/api/ps", None),
    ("GET", "/api/version", None),
    ("POST", "/api/pull", {"model": "mesh-ai"}),
    ("DELETE", "/api/delete", {"model": "mesh-ai"}),
    ("GET", "/", None),
    ("GET", "/metrics", None),
    ("GET", "/api/no-such-route", None),
])
def test_every_route_but_the_probes_needs_the_key(keyed: TestClient, method: str, path: str,
                                                  body: dict | None) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": f"Token {KEY}"},
                    {"Authorization": "Bearer"}, {"Authorization": f"Bearer {KEY}x"}):
        r = keyed.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"].startswith("unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = keyed.request(method, path, json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code != 401


def test_probes_are_open_and_openai_routes_get_openai_errors(keyed: TestClient) -> None:
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 200
    r = keyed.get("/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = keyed.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "mesh-ai"


def test_basic_auth_carries_the_key_for_url_only_clients(keyed: TestClient) -> None:
    # What an HTTP library sends for http://meshai:<key>@host:11434/api/generate
    good = base64.b64encode(f"meshai:{KEY}".encode()).decode()
    r = keyed.post("/api/generate", json=PAYLOAD, headers={"Authorization": f"Basic {good}"})
    assert r.status_code == 200 and r.json()["response"] == "Use /nodes to list nodes."
    bad = base64.b64encode(f"{KEY}:wrong".encode()).decode()
    assert keyed.post("/api/generate", json=PAYLOAD, headers={"Authorization": f"Basic {bad}"}).status_code == 401
    assert keyed.post("/api/generate", json=PAYLOAD, headers={"Authorization": "Basic !!!"}).status_code == 401


def test_refused_requests_are_counted(keyed: TestClient) -> None:
    keyed.post("/api/generate", json=PAYLOAD)
    text = keyed.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'meshai_gateway_requests_total{method="POST",route="unmatched",status="401"} 1.0' in text


def test_presented_key_forms() -> None:
    assert presented_key(f"Bearer {KEY}") == KEY.encode()
    assert presented_key(f"bearer   {KEY}  ") == KEY.encode()
    assert presented_key("Basic " + base64.b64encode(b"u:p:q").decode()) == b"p:q"
    assert presented_key("Basic " + base64.b64encode(b"no-colon").decode()) is None
    assert presented_key("Digest abc") is None
    assert presented_key("") is None


def test_key_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="16"):
        GatewaySettings(api_key="short")
    assert KEY not in repr(GatewaySettings(api_key=KEY))  # never in logs
    key_file = tmp_path / "key"
    key_file.write_text(f"  {KEY}\n")
    assert read_api_key(key_file) == KEY
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_api_key(tmp_path / "empty")
    with pytest.raises(ConfigError, match="cannot read"):
        read_api_key(tmp_path / "missing")
    monkeypatch.setenv("MESHAI_API_KEY_FILE", str(key_file))
    assert GatewaySettings.from_env().api_key == KEY
    monkeypatch.setenv("MESHAI_API_KEY", KEY)
    with pytest.raises(ConfigError, match="not both"):
        GatewaySettings.from_env()
    monkeypatch.delenv("MESHAI_API_KEY_FILE")
    assert GatewaySettings.from_env().api_key == KEY


def test_cli_reads_the_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from meshai_gateway.cli import register

    parser = argparse.ArgumentParser(prog="meshai")
    register(parser.add_subparsers(dest="command"))
    short = tmp_path / "short"
    short.write_text("abc")
    args = parser.parse_args(["gateway", "--model", str(tmp_path / "x.gguf"), "--api-key-file", str(short)])
    assert args.func(args) == 2
    assert "API key is 3 characters" in capsys.readouterr().err


# -- limits ---------------------------------------------------------------------------------------------

def test_prompt_length_limit_names_the_limit(tmp_path: Path) -> None:
    c = make_client(tmp_path, max_prompt_chars=100)
    try:
        r = c.post("/api/generate", json=dict(PAYLOAD, prompt="x" * 101))
        assert r.status_code == 400
        assert r.json()["error"] == ("prompt is 101 characters; the limit is 100 "
                                     "(max_prompt_chars, MESHAI_MAX_PROMPT_CHARS)")
        r = c.post("/api/chat", json={"model": "mesh-ai", "stream": False,
                                      "messages": [{"role": "user", "content": "y" * 60}] * 2})
        assert r.status_code == 400 and "limit is 100" in r.json()["error"]
        r = c.post("/v1/chat/completions", json={"model": "mesh-ai",
                                                 "messages": [{"role": "system", "content": "z" * 101}]})
        assert r.status_code == 400 and "limit is 100" in r.json()["error"]["message"]
        assert c.post("/api/generate", json=dict(PAYLOAD, prompt="x" * 60, system="s" * 40)).status_code == 200
    finally:
        c.__exit__(None, None, None)


def test_num_predict_is_capped_by_the_deployment(tmp_path: Path) -> None:
    c = make_client(tmp_path, script=["a "] * 500, max_predict=7, max_chunks=0)
    try:
        for asked in (-1, 0, 50, 2**31 - 1):
            body = c.post("/api/generate", json=dict(PAYLOAD, options={"num_predict": asked})).json()
            assert body["eval_count"] == 7 and body["done_reason"] == "length", asked
        body = c.post("/api/generate", json=dict(PAYLOAD, options={"num_predict": 3})).json()
        assert body["eval_count"] == 3
        oai = c.post("/v1/chat/completions", json={"model": "mesh-ai", "max_tokens": 100,
                                                   "messages": [{"role": "user", "content": "hi"}]}).json()
        assert oai["usage"]["completion_tokens"] == 7
    finally:
        c.__exit__(None, None, None)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs", "a/../b", "mesh ai", "x" * 300,
                                  "mesh-ai:lat:est", "a/b/c/d", ":tag", "\u00e9t\u00e9", "mesh-ai;rm"])
def test_model_names_are_checked_before_use(tmp_path: Path, name: str) -> None:
    c = make_client(tmp_path)
    try:
        for path, body in (("/api/generate", {"model": name, "prompt": "hi"}), ("/api/show", {"model": name}),
                           ("/api/pull", {"model": name}), ("/api/delete", {"model": name})):
            r = c.request("DELETE" if path == "/api/delete" else "POST", path, json=body)
            assert r.status_code == 400, (path, r.text)
            assert r.json()["error"].startswith("invalid model name")
            assert len(r.json()["error"]) < 200  # a huge name is not echoed back whole
    finally:
        c.__exit__(None, None, None)


@pytest.mark.parametrize("name", ["library/llama3.2:1b", "registry.example/ns/model:tag", "mesh-ai-2:latest",
                                  "Mesh_AI.v2"])
def test_ollama_style_names_are_valid_and_unknown(tmp_path: Path, name: str) -> None:
    c = make_client(tmp_path)
    try:
        r = c.post("/api/generate", json={"model": name, "prompt": "hi"})
        assert r.status_code == 404 and r.json() == {"error": f"model '{name}' not found"}
    finally:
        c.__exit__(None, None, None)


@pytest.mark.parametrize("body,fragment", [
    (b'{"model": "mesh-ai", "prompt": "hi", "options": {"temperature": NaN}}', "NaN is not a JSON number"),
    (b'{"model": "mesh-ai", "prompt": "hi", "options": {"top_k": Infinity}}', "Infinity"),
    (b'{"model": "mesh-ai", "prompt": "hi", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
    (b'{"model": "mesh-ai", "prompt": "hi", "x": ' + b'{"a":' * 100 + b"1" + b"}" * 100 + b"}", "nested"),
    (b'{"model": "mesh-ai", "prompt": "hi", "options": {"seed": 1' + b"0" * 30 + b"}}", "options.seed"),
    (b'{"model": "mesh-ai", "prompt": "hi", "options": {"top_k": 99999999999}}', "options.top_k"),
    (b'{"model": "mesh-ai", "prompt": "hi", "options": {"repeat_penalty": 1e300}}', "options.repeat_penalty"),
    (b'{"model": "mesh-ai", "prompt": "hi", "options": {"stop": ["' + b"s" * 300 + b'"]}}', "stop sequence"),
    (b'{"model": "mesh-ai", "prompt": "hi", "format": {"type": "no-such-type"}}', "format"),
    (b'{"\\udc00": 1, "model": "mesh-ai", "prompt": "hi"}', "surrogate"),
])
def test_hostile_json_is_a_clear_400(tmp_path: Path, body: bytes, fragment: str) -> None:
    c = make_client(tmp_path)
    try:
        r = c.post("/api/generate", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert fragment in r.json()["error"]
    finally:
        c.__exit__(None, None, None)


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    c = make_client(tmp_path)
    try:
        r = c.post("/api/generate", json=dict(PAYLOAD, prompt="[[[{{{" * 200 + '\\"]]'))
        assert r.status_code == 200
    finally:
        c.__exit__(None, None, None)


# -- model instances ------------------------------------------------------------------------------------

def test_instances_run_generations_side_by_side(tmp_path: Path) -> None:
    """Two instances: two generations at once, each on its own instance; a third waits for a free one."""
    settings = GatewaySettings(num_instances=2)
    assert settings.generation_slots == 2
    gate = threading.Event()
    running: list[object] = []
    lock = threading.Lock()

    class Blocking(ScriptedBackend):
        def pieces(self, prep, cancel, progress):
            with lock:
                running.append(self.name)
            gate.wait(5)
            yield from super().pieces(prep, cancel, progress)

    engine = Scripted(["ok"], backend=Blocking)(FakeSource(tmp_path / "m.gguf").current(), settings)
    assert engine.num_instances == 2
    prep = engine.prepare(GenerationRequest(prompt="hi"))
    results: list[GenerationResult] = []

    def generate() -> None:
        results.extend(e for e in engine.run(prep) if isinstance(e, GenerationResult))

    threads = [threading.Thread(target=generate) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: len(running) >= 2, timeout=5, what="two generations running", interval=0.01)
    # An absence cannot be awaited: a third generation that did not wait for a free instance gets this long to
    # show up (it would need microseconds).
    time.sleep(0.1)
    assert sorted(running) == ["instance-0", "instance-1"]
    gate.set()
    for t in threads:
        t.join(5)
    assert len(results) == 3 and len(running) == 3
    engine.close()  # takes every instance back, then unloads
    assert engine.closed and all(b.closed for b in engine.backends)
    with pytest.raises(Unavailable):
        list(engine.run(prep))


def test_instances_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESHAI_NUM_INSTANCES", "3")
    settings = GatewaySettings.from_env()
    assert settings.num_instances == 3 and settings.generation_slots == 3
    with pytest.raises(ConfigError, match="num_instances"):
        GatewaySettings(num_instances=0)
    manager = ModelManager(FakeSource(tmp_path / "m.gguf"), settings, factory=scripted(["x"]))
    assert manager.refresh().num_instances == 3
