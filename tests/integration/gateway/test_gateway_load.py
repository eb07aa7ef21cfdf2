"""The load test's rules, checked in CI on a short run (services/gateway/benchmarks/load_test.py runs 120 s):
bot clients plus a burst past the queue limit, a hot swap and a corrupt promotion under load, flat memory,
a clean exit. Real S3 server, the gateway as its own process, the real SmolLM2 model."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshai_testing import ROOT, load_benchmark

pytestmark = pytest.mark.slow

BENCHMARKS = ROOT / "services" / "gateway" / "benchmarks"


def load_test_module():
    return load_benchmark(BENCHMARKS / "load_test.py", "gateway_load_test")


def test_load_rules_hold_on_a_short_run(s3_settings, store, tmp_path: Path) -> None:
    load_test = load_test_module()
    config = load_test.LoadConfig(duration_s=20, clients=8, max_queue=8)
    report = load_test.run_load(config, s3_settings, tmp_path, log=lambda _msg: None)
    print(report.table())
    assert not report.violations, report.table()
    figures = report.figures()
    assert figures["burst_503"] > 0 and figures["bot_requests"] >= 8
    assert report.swap["sha256"] == report.swap["expected"]
