"""The gateway following the bucket's model registry (real S3 server, real SmolLM2 GGUF): POST /api/pull
fetches the promoted version with Ollama's statuses; a corrupt promotion is refused and /readyz says why."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from gateway_live import serve_app, smollm2_gguf

from meshai_common.registry import promote
from meshai_gateway.app import create_app
from meshai_gateway.bucket_source import BucketSource
from meshai_gateway.settings import GatewaySettings

# Loads the real SmolLM2 GGUF and generates with it.
pytestmark = pytest.mark.slow


def pull(base: str, **body: object) -> list[dict]:
    with httpx.stream("POST", f"{base}/api/pull", json={"model": "mesh-ai", **body}, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line.strip()]


def test_pull_follows_the_registry(store, tmp_path: Path) -> None:
    gguf = smollm2_gguf()
    # Poll once an hour: only the pulls below move the model, so what each one reports is deterministic.
    source = BucketSource(store, "mesh-ai", tmp_path / "cache", poll_interval_s=3600)
    app = create_app(GatewaySettings(num_threads=2, max_predict=8), source)
    with serve_app(app, ready_path=None) as base:
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 503 and "nothing promoted" in ready.json()["reason"]
        r = httpx.post(f"{base}/api/pull", json={"model": "mesh-ai"}, timeout=30)
        assert r.status_code == 404
        assert r.json() == {"error": "model 'mesh-ai' not found: nothing promoted under that name yet"}

        good = store.put_file(gguf, "runs/r1/quantize/mesh-ai-Q4_1.gguf")
        promote(store, "mesh-ai", run_id="r1", gguf=good)
        statuses = pull(base)
        assert statuses[0] == {"status": "pulling manifest"}
        layer = [s for s in statuses if s.get("status") == f"pulling {good.sha256[:12]}"]
        assert layer[0] == {"status": f"pulling {good.sha256[:12]}", "digest": f"sha256:{good.sha256}",
                            "total": good.size, "completed": 0}
        assert layer[-1]["completed"] == layer[-1]["total"] == good.size
        assert [s["completed"] for s in layer] == sorted(s["completed"] for s in layer)
        assert {"status": "verifying sha256 digest"} in statuses
        assert {"status": "loading model mesh-ai", "digest": f"sha256:{good.sha256}"} in statuses
        assert statuses[-1] == {"status": "success"}
        ready = httpx.get(f"{base}/readyz", timeout=5).json()
        assert ready["sha256"] == good.sha256 and ready["run_id"] == "r1" and "refresh_error" not in ready
        reply = httpx.post(f"{base}/api/generate", timeout=60,
                           json={"model": "mesh-ai", "prompt": "Say hi.", "stream": False}).json()
        assert reply["done"] and reply["eval_count"] <= 8

        # Pulling again finds the version in place: no download, no reload.
        again = pull(base, stream=True)
        assert [s["status"] for s in again] == ["pulling manifest", f"pulling {good.sha256[:12]}", "success"]

        # A corrupt promotion: the right magic, the tensors cut off. Refused; the old model keeps serving.
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(gguf.read_bytes()[: 2 << 20])
        bad = store.put_file(cut, "runs/r2/quantize/mesh-ai-Q4_1.gguf")
        promote(store, "mesh-ai", run_id="r2", gguf=bad)
        statuses = pull(base)
        assert "error" in statuses[-1] and "could not load model" in statuses[-1]["error"]
        assert {"status": "success"} not in statuses
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["sha256"] == good.sha256
        assert f"promoted version {bad.sha256[:12]} refused" in ready.json()["refresh_error"]
        r = httpx.post(f"{base}/api/generate", timeout=60,
                       json={"model": "mesh-ai", "prompt": "Say hi.", "stream": False})
        assert r.status_code == 200 and r.json()["done"]
        r = httpx.post(f"{base}/api/pull", json={"model": "mesh-ai", "stream": False}, timeout=60)
        assert r.status_code == 503 and "could not load model" in r.json()["error"]
