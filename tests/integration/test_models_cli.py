"""`meshai models` against a real S3 server: list, show, rollback (history kept, a running gateway follows) and
export (a Modelfile `ollama create` accepts, checked with the port of Ollama's parser, and SHA256SUMS)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from meshai_testing import ROOT

sys.path[:0] = [str(ROOT / "tests/unit/gateway"), str(ROOT / "tests/integration/gateway"),
                str(ROOT / "tests/unit/orchestrator")]

from gateway_fakes import scripted, words  # noqa: E402
from gateway_live import serve_app  # noqa: E402
from ollama_modelfile_grammar import check_create  # noqa: E402

from meshai_common import registry  # noqa: E402
from meshai_common.manifest import write_manifest  # noqa: E402
from meshai_common.modelfile import default_modelfile  # noqa: E402
from meshai_gateway.app import create_app  # noqa: E402
from meshai_gateway.bucket_source import BucketSource  # noqa: E402
from meshai_gateway.settings import GatewaySettings  # noqa: E402
from meshai_orchestrator.cli import main  # noqa: E402


@pytest.fixture
def meshai(s3_env, tmp_path: Path, monkeypatch, capsys):
    """Run `meshai ...` in this process against the test bucket; returns (exit code, stdout, stderr)."""
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(tmp_path / "home"), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def promote_run(store, run_id: str, overall: float, *, grounding: bool = False):
    """A quantize stage's outputs (a GGUF-looking file and its Modelfile), promoted as the pipeline does."""
    gguf = store.put_bytes(b"GGUF" + hashlib.sha256(run_id.encode()).digest() * 64,
                           f"runs/{run_id}/quantize/mesh-ai-Q4_K_M.gguf")
    mf_text = default_modelfile("./mesh-ai-Q4_K_M.gguf", extensions={"grounding": "catalog-v1"} if grounding else {})
    mf = store.put_bytes((mf_text + "PARAMETER chunk_bytes 160\n").encode(), f"runs/{run_id}/quantize/Modelfile")
    write_manifest(store, run_id, "quantize", inputs=[], outputs=[gguf, mf], config={"qtype": "Q4_K_M"},
                   timings={"total": 1.0})
    report = store.put_bytes(b"<html></html>", f"runs/{run_id}/eval/report.html")
    write_manifest(store, run_id, "eval", inputs=[gguf], outputs=[report], config={}, timings={},
                   parents={"quantize": f"runs/{run_id}/quantize/manifest.json"})
    registry.promote(store, "mesh-ai", run_id=run_id, gguf=gguf, modelfile=mf, overall=overall)
    time.sleep(0.01)  # promotions are ordered by their time
    return gguf


def test_list_show_and_rollbacks(store, meshai) -> None:
    assert meshai("models", "list") == (0, "no promoted models (a pipeline run promotes one when it passes "
                                           "the gate)\n", "")
    g1, g2, g3 = (promote_run(store, f"r{i}", 60.0 + i) for i in (1, 2, 3))
    code, out, _ = meshai("models", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and [(r["name"], r["run_id"], r["overall"], r["sha256"], r["size"]) for r in rows] == [
        ("mesh-ai", "r3", 63.0, g3.sha256, g3.size)]
    code, out, _ = meshai("models", "list")
    assert "r3" in out and "63.0" in out and g3.sha256[:12] in out

    code, out, _ = meshai("models", "show", "mesh-ai")
    assert code == 0 and "model mesh-ai: run r3" in out and g3.sha256 in out
    assert "quantize" in out and "eval" in out and "evaluation report: runs/r3/eval/report.html" in out
    assert [line.split()[3] for line in out.splitlines() if " promote " in line] == ["r1", "r2", "r3"]
    code, out, _ = meshai("runs", "show", "r3")  # the same bucket lookup
    assert code == 0 and "evaluation report: runs/r3/eval/report.html" in out

    # Back one step, then another: r3 -> r2 -> r1 (not back to r3). History keeps every entry.
    code, out, _ = meshai("models", "rollback", "mesh-ai", "--reason", "answers /deletemesh")
    assert code == 0 and "rolled back from run r3 to run r2" in out
    ptr = registry.current(store, "mesh-ai")
    assert ptr["gguf"] == {"key": g2.key, "sha256": g2.sha256, "size": g2.size} and ptr["run_id"] == "r2"
    assert ptr["rollback"]["from_run_id"] == "r3" and ptr["rollback"]["reason"] == "answers /deletemesh"
    assert ptr["rollback"]["rolled_back_unix"] > ptr["promoted_unix"] and "@" in ptr["rollback"]["by"]
    assert meshai("models", "rollback", "mesh-ai")[0] == 0
    assert registry.current(store, "mesh-ai")["gguf"]["sha256"] == g1.sha256
    code, _, err = meshai("models", "rollback", "mesh-ai")
    assert code == 1 and "no promotion before run 'r1' to roll back to" in err

    # --to goes to any promoted run, forward too; an unknown or the current run is refused, naming why.
    assert meshai("models", "rollback", "mesh-ai", "--to", "r3", "--reason", "fixed upstream")[0] == 0
    assert registry.current(store, "mesh-ai")["gguf"]["sha256"] == g3.sha256
    code, _, err = meshai("models", "rollback", "mesh-ai", "--to", "r9")
    assert code == 1 and "run 'r9' was never promoted (promoted runs: r1, r2, r3)" in err
    code, _, err = meshai("models", "rollback", "mesh-ai", "--to", "r3")
    assert code == 1 and "already serves run 'r3'" in err

    entries = registry.history(store, "mesh-ai")
    assert [e.get("run_id") or f"{e['from_run_id']}->{e['to_run_id']}" for e in entries] == [
        "r1", "r2", "r3", "r3->r2", "r2->r1", "r1->r3"]
    assert entries[3]["reason"] == "answers /deletemesh" and entries[3]["pointer"]["run_id"] == "r2"
    code, out, _ = meshai("models", "show", "mesh-ai")
    assert "rollback r3 -> r2  answers /deletemesh" in out and "rolled back" in out and "fixed upstream" in out

    # A promotion whose GGUF is gone cannot be rolled back to; nothing changes.
    store.delete_prefix("runs/r2/quantize/mesh-ai")
    code, _, err = meshai("models", "rollback", "mesh-ai", "--to", "r2")
    assert code == 1 and "runs/r2/quantize/mesh-ai-Q4_K_M.gguf" in err
    assert registry.current(store, "mesh-ai")["run_id"] == "r3"


def test_export_for_ollama_create(store, meshai, tmp_path: Path) -> None:
    gguf = promote_run(store, "r1", 70.0, grounding=True)
    dest = tmp_path / "out" / "mesh-ai"
    code, out, _ = meshai("models", "export", "mesh-ai", "--to", str(dest))
    assert code == 0 and f"ollama create mesh-ai -f {dest / 'Modelfile'}" in out
    assert sorted(os.listdir(dest)) == ["Modelfile", "SHA256SUMS", "mesh-ai-Q4_K_M.gguf"]
    assert not [p for p in dest.parent.iterdir() if p.name != "mesh-ai"]  # no temporary folder left
    sums = dict(reversed(line.split("  ")) for line in (dest / "SHA256SUMS").read_text().splitlines())
    assert sums == {name: hashlib.sha256((dest / name).read_bytes()).hexdigest()
                    for name in ("mesh-ai-Q4_K_M.gguf", "Modelfile")}
    assert sums["mesh-ai-Q4_K_M.gguf"] == gguf.sha256
    req = check_create(dest / "Modelfile")  # what `ollama create` does with it, by Ollama's grammar
    assert req.files["model"] == dest / "mesh-ai-Q4_K_M.gguf" and req.system
    assert req.parameters["num_predict"] == ["80"] and "chunk_bytes" not in req.parameters
    text = (dest / "Modelfile").read_text()
    assert text.startswith("# meshai: grounding=catalog-v1\nFROM ./mesh-ai-Q4_K_M.gguf\n")

    # A folder that is not empty is refused; a failed download leaves nothing behind.
    code, _, err = meshai("models", "export", "mesh-ai", "--to", str(dest))
    assert code == 1 and "exists and is not an empty folder" in err
    store.delete_prefix("runs/r1/quantize/mesh-ai")
    code, _, err = meshai("models", "export", "mesh-ai", "--to", str(tmp_path / "again"))
    assert code == 1 and "runs/r1/quantize/mesh-ai-Q4_K_M.gguf" in err
    assert not (tmp_path / "again").exists() and not list(tmp_path.glob(".again*"))
    code, _, err = meshai("models", "export", "other", "--to", str(tmp_path / "x"))
    assert code == 1 and "model 'other' not found" in err


def test_a_running_gateway_follows_a_rollback(store, meshai, tmp_path: Path) -> None:
    promote_run(store, "r1", 61.0)
    g2 = promote_run(store, "r2", 62.0)
    source = BucketSource(store, "mesh-ai", tmp_path / "cache", poll_interval_s=0.2)
    app = create_app(GatewaySettings(), source, engine_factory=scripted(words("Use /nodes.")))
    with serve_app(app) as base:
        ready = httpx.get(f"{base}/readyz", timeout=5).json()
        assert ready["run_id"] == "r2" and ready["sha256"] == g2.sha256
        assert meshai("models", "rollback", "mesh-ai", "--reason", "regression")[0] == 0
        deadline = time.monotonic() + 20
        while httpx.get(f"{base}/readyz", timeout=5).json()["run_id"] != "r1":
            assert time.monotonic() < deadline, "the gateway did not follow the rollback"
            time.sleep(0.1)
        reply = httpx.post(f"{base}/api/generate", json={"model": "mesh-ai", "prompt": "hi", "stream": False},
                           timeout=30).json()
        assert reply["response"] == "Use /nodes."
