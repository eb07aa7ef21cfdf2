"""The grounding benchmark's own logic: the Modelfile check, question selection, the bot's request with a seed,
the per-way figures and the grounded/plain goal (services/gateway/benchmarks/bench_grounding.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from meshai_common.ollama_client import BOT_OPTIONS
from meshai_testing import ROOT, load_benchmark

BENCHMARKS = ROOT / "services" / "gateway" / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark(BENCHMARKS / "bench_grounding.py")


def sample(bench, latency: float, ttft: float, prompt: int = 100, reply: int = 20):
    return bench.Sample(latency=latency, ttft=ttft, prompt_tokens=prompt, reply_tokens=reply, text="x")


def test_grounding_spec_read_from_the_modelfile(bench, tmp_path: Path) -> None:
    mf = tmp_path / "Modelfile"
    mf.write_text("# meshai: grounding=catalog-v1\nFROM ./m.gguf\nPARAMETER top_k 40\n")
    assert bench.grounding_spec(mf) == "catalog-v1"


def test_modelfile_without_grounding_is_refused_by_name(bench, tmp_path: Path) -> None:
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM ./m.gguf\n# grounding=catalog-v1 is not the extension form\n")
    with pytest.raises(SystemExit, match=r"Modelfile: no `# meshai: grounding=\.\.\.` line"):
        bench.grounding_spec(mf)
    with pytest.raises(SystemExit, match="cannot read"):
        bench.grounding_spec(tmp_path / "missing")


def test_questions_below_one_are_refused_before_anything_starts(bench, tmp_path: Path, monkeypatch) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setattr(sys, "argv", ["bench_grounding.py", "--model", str(model), "--modelfile",
                                      str(tmp_path / "Modelfile"), "--questions", "0"])
    with pytest.raises(SystemExit, match="--questions must be at least 1"):
        bench.main()


def test_field_suite_questions_keep_their_own_context(bench) -> None:
    requests = bench.suite_requests("field")
    assert len(requests) > 100
    with_context = [r for r in requests if r.context]
    assert with_context and all(": " in line for r in with_context for line in r.context)
    with pytest.raises(SystemExit, match="--suite no-such-suite"):
        bench.suite_requests("no-such-suite")


def test_payload_is_the_bots_request_with_a_fixed_seed(bench) -> None:
    req = bench.Request("wat cmds do u take", ("BRIX: where u at?",))
    body = bench.payload(req, seed=7)
    assert body["stream"] is True and body["model"] == "mesh-ai"
    assert body["options"] == BOT_OPTIONS | {"seed": 7}
    assert "Context:\nBRIX: where u at?\n\nQuestion: wat cmds do u take\nAnswer:" in body["prompt"]
    assert "seed" not in BOT_OPTIONS  # the shared options are not changed by the benchmark


def test_summary_and_goal(bench) -> None:
    plain = bench.summary([sample(bench, t, t / 4, prompt=90, reply=18) for t in (1.0, 2.0, 3.0, 4.0)])
    grounded = bench.summary([sample(bench, t, t / 2, prompt=150, reply=22) for t in (1.1, 2.2, 3.3, 4.4)])
    assert plain["prompt_tokens_mean"] == 90 and grounded["reply_tokens_mean"] == 22
    assert plain["p90_s"] == 4.0
    ratios = bench.compare(grounded, plain)
    assert ratios["latency_p50_ratio"] == pytest.approx(1.1)
    assert ratios["ttft_p50_ratio"] == pytest.approx(2.2)
    assert ratios["goal_met"] is True
    assert bench.compare(grounded, plain, goal=1.05)["goal_met"] is False


def test_no_samples_miss_the_goal(bench) -> None:
    empty = bench.summary([])
    assert empty["requests"] == 0 and math.isnan(empty["p50_s"]) and math.isnan(empty["prompt_tokens_mean"])
    assert bench.compare(empty, empty)["goal_met"] is False


def test_paired_median_compares_request_by_request(bench) -> None:
    a = [sample(bench, t, 0.1) for t in (2.0, 3.0, 10.0)]
    b = [sample(bench, t, 0.1) for t in (1.0, 3.0, 4.0)]
    assert bench.paired_median(a, b) == pytest.approx(2.0)
