"""Several llama.cpp instances of the real SmolLM2 model (MESHAI_NUM_INSTANCES): generations run side by side,
each on its own instance, with the same result as one instance gives."""

from __future__ import annotations

import threading

import httpx
import pytest
from gateway_live import serve_app, smollm2_gguf

from meshai_common.inference import GenerationRequest, GenerationResult
from meshai_gateway.app import create_app
from meshai_gateway.engine import Engine
from meshai_gateway.model_source import LocalFileSource
from meshai_gateway.settings import GatewaySettings

# Loads the real SmolLM2 GGUF and generates with it.
pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0, "num_predict": 24, "max_chunks": 0}


def test_two_instances_generate_at_once_and_agree_with_one() -> None:
    info = LocalFileSource(smollm2_gguf(), "mesh-ai").current()
    prompts = ["What is LoRa?", "What does SNR mean?"]
    one = Engine(info, GatewaySettings(num_threads=2, num_ctx=512))
    try:
        expected = [[e for e in one.run(one.prepare(GenerationRequest(prompt=p, options=GREEDY)))][-1].text
                    for p in prompts]
    finally:
        one.close()

    two = Engine(info, GatewaySettings(num_threads=2, num_ctx=512, num_instances=2))
    assert two.num_instances == 2
    inside = threading.Barrier(2, timeout=30)
    results: dict[int, str] = {}
    instances: dict[int, int] = {}

    def generate(i: int) -> None:
        prep = two.prepare(GenerationRequest(prompt=prompts[i], options=GREEDY))
        with two.instance() as backend:  # both hold an instance at the same moment, or the barrier times out
            instances[i] = id(backend)
            inside.wait()
            events = list(two.core.run(prep, threading.Event(), backend=backend))
        assert isinstance(events[-1], GenerationResult)
        results[i] = events[-1].text

    try:
        threads = [threading.Thread(target=generate, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        two.close()
    assert len(set(instances.values())) == 2
    assert [results[0], results[1]] == expected


def test_the_app_admits_one_generation_per_instance() -> None:
    settings = GatewaySettings(num_threads=2, num_ctx=512, num_instances=2, max_queue=0)
    app = create_app(settings, LocalFileSource(smollm2_gguf(), "mesh-ai"))
    with serve_app(app) as base:
        endless = {"model": "mesh-ai", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,", "raw": True,
                   "options": {"num_predict": 400, "max_chunks": 0, "temperature": 0}}
        with httpx.stream("POST", f"{base}/api/generate", json=endless, timeout=60) as a, \
                httpx.stream("POST", f"{base}/api/generate", json=endless, timeout=60) as b:
            lines_a, lines_b = a.iter_lines(), b.iter_lines()  # kept: dropping one closes its connection
            next(lines_a)
            next(lines_b)  # both generating: two slots
            third = httpx.post(f"{base}/api/generate", json=dict(endless, stream=False), timeout=30)
            assert third.status_code == 503 and "2 generating" in third.json()["error"]
