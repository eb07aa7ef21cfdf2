"""The whole system on the embedded default: S3 + five service processes on loopback, the pipeline over gRPC,
promotion, and the gateway answering Mesh-Master's exact requests. Minutes on 2 cores."""

from __future__ import annotations

import json

import httpx
import pytest

from meshai_common.config import S3Settings
from meshai_common.prompts import meshmaster_prompt
from meshai_common.radio import fits_budget
from meshai_common.registry import current
from meshai_common.store import ArtifactStore
from meshai_orchestrator.pipeline import Addresses, Pipeline, PipelineError, PipelineOptions
from meshai_orchestrator.stack import BUCKET, Stack, StackConfig, random_ports

# The whole pipeline (training, quantization, two models through the field suite) takes ~10 minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("stack")
    st = Stack(StackConfig(home=home, ports=random_ports()), log=lambda _m: None)
    st.up()
    yield st
    st.down()


def _pipeline(st: Stack) -> Pipeline:
    cfg = st.cfg
    store = ArtifactStore(S3Settings(cfg.addr("s3"), cfg.access_key, cfg.secret_key, BUCKET))
    addrs = Addresses(data=cfg.addr("data"), trainer=cfg.addr("trainer"), quantizer=cfg.addr("quantizer"),
                      evaluator=cfg.addr("evaluator"), gateway=cfg.addr("gateway"))
    return Pipeline(addrs, store, out=lambda _m: None, progress=False)


def test_pipeline_trains_beats_baseline_promotes_and_serves(stack):
    pipe = _pipeline(stack)
    # A shorter time box than the demo's keeps the suite inside CI's time; it still has to win.
    summary = pipe.run(PipelineOptions(run_id="e2e-1", overrides={"max_train_seconds": "180"}))
    assert summary["candidate_overall"] > summary["baseline_overall"], summary
    assert summary["promoted"]
    store = pipe.store
    results = store.get_json(summary["results_key"])
    # Nothing was in production: the gate compared the candidate with the base model, on the field suite.
    assert summary["reference"] == "base" and results["suite"]["name"] == "field"
    assert results["models"]["candidate"]["overall"] == pytest.approx(summary["candidate_overall"])
    assert results["models"]["base"]["overall"] == pytest.approx(summary["baseline_overall"])
    assert results["models"]["candidate"]["hallucinated_command_rate"] == 0.0
    assert results["gate"]["promote"] and all(r["passed"] for r in results["gate"]["rules"])
    assert results["test_split"]["n"] > 0
    report = store.get_bytes(summary["report_key"]).decode()
    assert "<html" in report and "Gate" in report and "Failed replies" in report
    # The data stage grounded the examples, and the Modelfile says so: the gateway serves it grounded.
    assert store.get_json("runs/e2e-1/quantize/manifest.json")["config"]["grounding"]
    assert "# meshai: grounding=" in store.get_bytes("runs/e2e-1/quantize/Modelfile").decode()
    # Lineage: every stage left a manifest whose inputs are the previous stage's outputs.
    from meshai_common.manifest import lineage

    chain = lineage(store, "e2e-1")
    assert [m["stage"] for m in chain] == ["data", "train", "quantize", "eval"]
    data_out = {o["key"]: o["sha256"] for o in chain[0]["outputs"]}
    assert all(data_out[i["key"]] == i["sha256"] for i in chain[1]["inputs"])
    pointer = current(store, "mesh-ai")
    assert pointer["run_id"] == "e2e-1"

    base = f"http://{stack.cfg.addr('http')}"
    ready = httpx.get(f"{base}/readyz", timeout=10).json()
    assert ready["sha256"] == pointer["gguf"]["sha256"]
    # Mesh-Master's exact request, non-streaming then streaming (reference: mesh-master.md section 1).
    options = {"num_ctx": 1024, "num_predict": 80, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
               "repeat_penalty": 1.1, "num_thread": 2}
    prompt = meshmaster_prompt("how do I see all the nodes?", ["KB7: anyone on?"])
    r = httpx.post(f"{base}/api/generate", json={"model": "mesh-ai", "prompt": prompt, "stream": False,
                                                 "options": options}, timeout=120)
    assert r.status_code == 200, r.text
    reply = r.json()["response"]
    assert reply.strip() and fits_budget(reply + " (9s)")
    with httpx.stream("POST", f"{base}/api/generate", timeout=120,
                      json={"model": "mesh-ai", "prompt": prompt, "stream": True, "options": options}) as resp:
        lines = [json.loads(x) for x in resp.iter_lines() if x.strip()]
    assert lines[-1]["done"] and "".join(x.get("response", "") for x in lines).strip()
    tags = httpx.get(f"{base}/api/tags", timeout=10).json()
    assert any(m["name"].startswith("mesh-ai") for m in tags["models"])

    # The evaluator scores any Ollama-compatible endpoint as the bot calls it: here the gateway itself.
    from meshai_evaluator.askers import HttpAsker
    from meshai_evaluator.runner import evaluate
    from meshai_evaluator.suite import load_suite, questions

    items = questions(load_suite("public"))[:4]
    over_http = evaluate(HttpAsker(base, "mesh-ai"), items, seeds=0)
    assert over_http["n"] == 4 and over_http["latency"]["p50_s"] > 0
    assert over_http["hallucinated_command_rate"] == 0.0

    # Re-running the same run id resumes: every stage already succeeded, nothing is trained again.
    again = pipe.run(PipelineOptions(run_id="e2e-1"))
    assert again["candidate_overall"] == pytest.approx(summary["candidate_overall"])
    assert again["wall_s"] < 30
    pipe.close()


def test_bad_inputs_fail_with_one_clear_line(stack, tmp_path):
    pipe = _pipeline(stack)
    bad = tmp_path / "messages_archive.json"
    bad.write_text("{not json")
    with pytest.raises(PipelineError) as err:
        pipe.run(PipelineOptions(run_id="e2e-bad", archives=[bad]))
    msg = str(err.value)
    assert msg.startswith("data failed:") and "messages_archive.json" in msg and "\n" not in msg
    assert pipe.store.list("runs/e2e-bad/data/") == ["runs/e2e-bad/data/job.json"]
    from meshai_common.errors import InvalidInput

    with pytest.raises(InvalidInput, match="input file not found"):
        pipe.run(PipelineOptions(archives=[tmp_path / "missing.json"]))
    pipe.close()
