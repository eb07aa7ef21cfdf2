"""POST /api/pull against a registry-backed source (scripted engine): statuses, errors, the swap it triggers.
The same against the real bucket and model is in tests/integration/gateway/test_gateway_registry.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from gateway_fakes import FakeSource, Scripted, scripted

from meshai_common.errors import InvalidInput
from meshai_gateway.app import create_app
from meshai_gateway.settings import GatewaySettings


class RegistrySource(FakeSource):
    """Like the bucket source: reports Ollama pull statuses while it resolves the promoted version."""

    fetches = True

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.broken: str | None = None  # fail after the first status (a corrupt promoted file)

    def current(self, progress=None):
        info = super().current()  # raises NotFound before any status when nothing is promoted
        report = progress or (lambda _s: None)
        report({"status": "pulling manifest"})
        report({"status": f"pulling {info.sha256[:12]}", "digest": f"sha256:{info.sha256}", "total": info.size,
                "completed": info.size})
        if self.broken:
            raise InvalidInput(self.broken)
        return info


@pytest.fixture
def registry(tmp_path: Path):
    source = RegistrySource(tmp_path / "m.gguf")
    app = create_app(GatewaySettings(aliases=("llama3.2:1b",)), source, engine_factory=scripted(["ok"]))
    with TestClient(app) as client:
        assert app.state.manager.wait_ready(5)
        yield client, source


def lines(r) -> list[dict]:
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(x) for x in r.text.splitlines() if x.strip()]


def test_pull_fetches_the_promoted_version_and_swaps(registry) -> None:
    client, source = registry
    first = client.get("/readyz").json()["sha256"]
    same = lines(client.post("/api/pull", json={"model": "mesh-ai"}))
    assert [s["status"] for s in same] == ["pulling manifest", f"pulling {first[:12]}", "success"]
    assert same[1] == {"status": f"pulling {first[:12]}", "digest": f"sha256:{first}", "total": 1234,
                       "completed": 1234}

    source.version = "v2"  # a new promotion
    out = lines(client.post("/api/pull", json={"name": "llama3.2:1b"}))  # the bot's name for the model
    new = client.get("/readyz").json()["sha256"]
    assert new != first
    assert [s["status"] for s in out] == ["pulling manifest", f"pulling {new[:12]}", "loading model mesh-ai",
                                          "success"]
    assert client.get("/api/tags").json()["models"][0]["digest"] == new
    assert client.post("/api/pull", json={"model": "mesh-ai", "stream": False}).json() == {"status": "success"}


def test_pull_errors_before_and_after_the_first_status(registry) -> None:
    client, source = registry
    serving = client.get("/readyz").json()["sha256"]
    r = client.post("/api/pull", json={"model": "nope"})
    assert r.status_code == 404 and r.json() == {"error": "model 'nope' not found"}

    source.fail = "model 'mesh-ai' not found: nothing promoted under that name yet"
    r = client.post("/api/pull", json={"model": "mesh-ai"})
    assert r.status_code == 404 and r.json() == {"error": source.fail}  # before any byte: a status
    source.fail = None

    source.version = "v3"
    source.broken = "runs/r3/model.gguf is not a GGUF file"
    out = lines(client.post("/api/pull", json={"model": "mesh-ai"}))
    assert out[0] == {"status": "pulling manifest"}
    assert out[-1] == {"error": source.broken}  # after the first byte: one error line, no success
    r = client.post("/api/pull", json={"model": "mesh-ai", "stream": False})
    assert r.status_code == 400 and r.json() == {"error": source.broken}

    ready = client.get("/readyz")  # still serving the old version, and saying why the new one is not in
    assert ready.status_code == 200 and ready.json()["sha256"] == serving
    assert source.broken in ready.json()["refresh_error"]
    assert client.post("/api/generate", json={"model": "mesh-ai", "prompt": "hi", "stream": False}).json()[
        "response"] == "ok"

    source.broken = None
    assert lines(client.post("/api/pull", json={"model": "mesh-ai"}))[-1] == {"status": "success"}
    assert "refresh_error" not in client.get("/readyz").json()


def test_a_version_that_fails_to_load_is_not_reloaded_by_the_poller(tmp_path: Path) -> None:
    from meshai_gateway.model_manager import ModelManager

    loads: list[str] = []

    class Failing(Scripted):
        def backends(self, info, settings):
            loads.append(info.sha256)
            if len(loads) > 1:
                raise RuntimeError("tensor data is cut short")
            return super().backends(info, settings)

    source = FakeSource(tmp_path / "m.gguf")
    manager = ModelManager(source, GatewaySettings(), factory=Failing(["x"]))
    manager.refresh()
    source.version = "v2"
    for _ in range(3):  # the poller's refreshes: one load attempt, then the remembered refusal
        with pytest.raises(Exception, match="tensor data is cut short"):
            manager.refresh(retry_refused=False)
    assert len(loads) == 2
    assert "refused" in manager.refresh_error and "still serving" in manager.refresh_error
    with pytest.raises(Exception, match="cut short"):
        manager.refresh()  # an explicit refresh (pull, Refresh RPC) tries again
    assert len(loads) == 3


def test_pull_of_a_local_file_is_a_no_op(tmp_path: Path) -> None:
    source = FakeSource(tmp_path / "m.gguf")
    app = create_app(GatewaySettings(), source, engine_factory=scripted(["ok"]))
    with TestClient(app) as client:
        assert app.state.manager.wait_ready(5)
        assert lines(client.post("/api/pull", json={"model": "mesh-ai"}))[-1] == {"status": "success"}
        source.version = "v2"  # nothing is fetched: the file is re-read only by --watch
        client.post("/api/pull", json={"model": "mesh-ai"})
        assert app.state.manager.swaps == 0

