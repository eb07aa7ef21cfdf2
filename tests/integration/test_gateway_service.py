"""The gateway as a real process: follows the promotion pointer in the bucket, serves HTTP and gRPC."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from meshai.v1 import gateway_pb2, gateway_pb2_grpc
from meshai_common.embedded import embedded_gguf as smollm2_gguf
from meshai_common.prompts import meshmaster_prompt
from meshai_common.radio import fits_budget
from meshai_common.registry import promote
from meshai_common.waiting import wait_until


def _wait_ready(base: str, timeout: float = 60) -> dict:
    def ready() -> dict | None:
        r = httpx.get(f"{base}/readyz", timeout=5)
        return r.json() if r.status_code == 200 else None

    return wait_until(ready, timeout=timeout, what="gateway /readyz", interval=0.2)


KEY = "k" * 8 + "-gateway-test-key"


def _start_gateway(start_service, s3_env, extra=None):
    svc = start_service("gateway", s3_env | {"MESHAI_MODEL_POLL_S": "3600"} | (extra or {}))
    base = f"http://127.0.0.1:{svc.http_port}"

    def answering() -> bool:  # the process is alive and answering before any model exists
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200

    def running() -> None:
        assert svc.proc.poll() is None, svc.log()[-2000:]

    wait_until(answering, timeout=60, what="gateway /healthz", interval=0.2, retry_on=(httpx.HTTPError,),
               check=running)
    return svc, base


@pytest.fixture
def gateway(start_service, s3_env, store):
    svc, base = _start_gateway(start_service, s3_env)
    channel = grpc.insecure_channel(svc.addr)
    yield svc, base, gateway_pb2_grpc.GatewayServiceStub(channel)
    channel.close()


@pytest.mark.slow  # the gateway process loads the real SmolLM2 GGUF
def test_serves_the_promoted_model_and_survives_a_corrupt_promotion(gateway, store, tmp_path):
    svc, base, stub = gateway
    # Nothing promoted yet: not ready, with the reason.
    r = httpx.get(f"{base}/readyz", timeout=5)
    assert r.status_code == 503 and "not found" in r.json()["reason"]
    assert not stub.Status(gateway_pb2.GatewayStatusRequest(), timeout=10).ready

    gguf = store.put_file(smollm2_gguf(), "runs/r1/quantize/mesh-ai-Q4_1.gguf")
    promote(store, "mesh-ai", run_id="r1", gguf=gguf)
    status = stub.Refresh(gateway_pb2.GatewayStatusRequest(), timeout=120)
    assert status.ready and status.sha256 == gguf.sha256 and status.run_id == "r1"
    assert _wait_ready(base)["sha256"] == gguf.sha256
    svc.wait_health("SERVING")

    # Exactly what Mesh-Master sends, non-streaming and streaming.
    payload = {"model": "mesh-ai", "prompt": meshmaster_prompt("how do I list nodes?", ["ALFA: anyone copy?"]),
               "stream": False, "options": {"num_ctx": 1024, "num_predict": 80, "temperature": 0.7, "top_p": 0.9,
                                            "top_k": 40, "repeat_penalty": 1.1, "num_thread": 2}}
    r = httpx.post(f"{base}/api/generate", json=payload, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["done"] is True and body["response"].strip()
    assert fits_budget(body["response"] + " (12s)")
    with httpx.stream("POST", f"{base}/api/generate", json=payload | {"stream": True}, timeout=120) as resp:
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in resp.iter_lines() if line.strip()]
    assert lines[-1]["done"] is True and "eval_count" in lines[-1]
    assert "".join(x.get("response", "") for x in lines).strip()

    # gRPC Generate over the same core, radio budget included.
    chunks = list(stub.Generate(gateway_pb2.GenerateRequest(model="mesh-ai", prompt="Explain LoRa in detail.",
                                                            num_predict=200, max_chunks=1), timeout=120))
    assert chunks[-1].done
    text = "".join(c.text for c in chunks)
    assert len(text.encode()) <= 160 and len(chunks[-1].chunks) == 1

    # A corrupt promotion is refused; the old model keeps serving.
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOTAGGUF" * 100)
    promote(store, "mesh-ai", run_id="r2", gguf=store.put_file(bad, "runs/r2/quantize/mesh-ai.gguf"))
    with pytest.raises(grpc.RpcError) as err:
        stub.Refresh(gateway_pb2.GatewayStatusRequest(), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a GGUF" in err.value.details()
    assert _wait_ready(base)["sha256"] == gguf.sha256
    r = httpx.post(f"{base}/api/generate", json=payload, timeout=120)
    assert r.status_code == 200


def test_unknown_model_is_404_in_ollama_shape(gateway):
    _, base, _ = gateway
    r = httpx.post(f"{base}/api/generate", json={"model": "nope", "prompt": "hi"}, timeout=30)
    assert r.status_code == 404
    assert r.json() == {"error": "model 'nope' not found"}


@pytest.mark.slow  # the gateway process loads the real SmolLM2 GGUF
def test_api_key_guards_grpc_as_well_as_http(start_service, s3_env, store):
    from meshai_orchestrator.pipeline import Addresses, Pipeline

    svc, base = _start_gateway(start_service, s3_env, {"MESHAI_API_KEY": KEY})
    svc.wait_health("NOT_SERVING")  # the health service stays open to probes (nothing promoted yet)
    gguf = store.put_file(smollm2_gguf(), "runs/k1/quantize/mesh-ai-Q4_1.gguf")
    promote(store, "mesh-ai", run_id="k1", gguf=gguf)
    with grpc.insecure_channel(svc.addr) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for metadata in (None, [("authorization", "Bearer wrong-key-of-enough-length")]):
            with pytest.raises(grpc.RpcError) as err:
                stub.Status(gateway_pb2.GatewayStatusRequest(), timeout=10, metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "API key" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:  # a streaming method is refused the same way
            list(stub.Generate(gateway_pb2.GenerateRequest(prompt="hi"), timeout=10))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # The pipeline nudges the gateway with the key it was given, and only with it.
        said: list[str] = []
        keyless = Pipeline(Addresses("", "", "", "", gateway=svc.addr), store, out=said.append, progress=False)
        keyless._refresh_gateway()
        assert said and "UNAUTHENTICATED" in said[0]
        said.clear()
        keyed = Pipeline(Addresses("", "", "", "", gateway=svc.addr, gateway_key=KEY), store, out=said.append,
                         progress=False)
        keyed._refresh_gateway()
        assert said == []
        status = stub.Status(gateway_pb2.GatewayStatusRequest(), timeout=10,
                             metadata=[("authorization", f"Bearer {KEY}")])
        assert status.ready and status.sha256 == gguf.sha256
        svc.wait_health("SERVING")
    assert httpx.get(f"{base}/api/tags", timeout=5).status_code == 401
    assert httpx.get(f"{base}/api/tags", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).status_code == 200
