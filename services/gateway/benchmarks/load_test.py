"""Load test: the bucket-backed gateway under Mesh-Master traffic, with a burst, a hot swap and a corrupt
promotion in the middle of it.

    python services/gateway/benchmarks/load_test.py [--duration 120] [--clients 8] [--json figures.json]

Starts a real S3 server (SeaweedFS, `weed mini`) and the gateway as deployed (`python -m meshai_gateway`,
following the bucket's model registry) on 127.0.0.1, promotes the embedded SmolLM2 GGUF, then runs --clients
bot-like clients for --duration seconds: Mesh-Master's exact request, streamed and read as the bot reads it,
with the bot's two tries. At 1/4 of the run max_queue + 16 extra requests arrive at once; at 1/2 a second copy
of the model (other bytes, other sha256) is promoted and pulled: a hot swap under load; at 3/4 a corrupt GGUF
(the right magic, its tensors cut off) is promoted and pulled.

Rules; the exit code is 1 when one is broken:
- every bot request gets its reply; the only refusals are the intended ones (503 + Retry-After, "busy",
  while the burst fills the queue);
- the burst meets the queue limit: some of it is refused with 503 + Retry-After, the rest answered;
- every reply fits the radio budget and its `chunks` are the bot's own cut of it;
- the swap completes (pull ends in success, /readyz shows the new sha256) and no request fails during it;
- the corrupt promotion is refused: the pull ends in an error line, the old model keeps serving, and /readyz
  says why (refresh_error);
- memory stays flat: resident memory at the end is within --rss-growth-mb of the level before the swap (the
  retired model is freed);
- the gateway drains and exits cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402  (this folder is not a package)
    QUESTIONS,
    GatewayProcess,
    LocalS3,
    RssSampler,
    bot_payload,
    gguf_variant,
    median,
    percentile,
    smollm2_gguf,
)

from meshai_common.config import S3Settings  # noqa: E402
from meshai_common.radio import fits_budget, split_chunks  # noqa: E402
from meshai_common.registry import promote  # noqa: E402
from meshai_common.store import ArtifactStore  # noqa: E402

SUFFIX = " (120s)"  # what the bot appends; the budget reserves room for it
MIB = 1 << 20


@dataclass
class LoadConfig:
    duration_s: float = 120.0
    clients: int = 8
    max_queue: int = 8
    burst: int = 0  # 0: max_queue + 16
    threads: int = 0  # llama.cpp threads in the gateway; 0: all cores
    rss_growth_mb: float = 48.0

    @property
    def burst_size(self) -> int:
        return self.burst or self.max_queue + 16


@dataclass
class Attempt:
    kind: str  # "steady" (a bot) or "burst"
    t0: float
    t1: float
    status: int  # 0: no HTTP answer
    error: str = ""
    retry_after: str | None = None
    ttft_s: float | None = None
    reply: str = ""
    chunks: list[str] = field(default_factory=list)
    eval_count: int = 0

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


@dataclass
class LoadReport:
    config: LoadConfig
    machine: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    bot_requests: int = 0
    bot_failed: int = 0  # both tries refused
    burst_window: tuple[float, float] = (0.0, 0.0)
    swap: dict[str, Any] = field(default_factory=dict)
    corrupt: dict[str, Any] = field(default_factory=dict)
    rss: list[tuple[float, int]] = field(default_factory=list)
    rss_start: int = 0
    rss_end: int = 0
    rss_max: int = 0
    rss_end_from: float = -1.0  # when the idle samples that give rss_end begin
    exit_code: int | None = None
    swaps_metric: float = 0.0
    violations: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        steady = [a for a in self.attempts if a.kind == "steady"]
        done = [a for a in steady if a.ok]
        burst = [a for a in self.attempts if a.kind == "burst"]
        lat = [a.t1 - a.t0 for a in done]
        ttft = [a.ttft_s for a in done if a.ttft_s is not None]
        statuses: dict[str, int] = {}
        for a in self.attempts:
            statuses[f"{a.kind} {a.status}"] = statuses.get(f"{a.kind} {a.status}", 0) + 1
        return {
            "machine": self.machine,
            "duration_s": self.config.duration_s, "clients": self.config.clients,
            "max_queue": self.config.max_queue, "burst": self.config.burst_size,
            "bot_requests": self.bot_requests, "bot_requests_failed": self.bot_failed,
            "statuses": statuses,
            "latency_p50_s": percentile(lat, 50), "latency_p95_s": percentile(lat, 95),
            "latency_max_s": max(lat, default=float("nan")),
            "ttft_p50_s": percentile(ttft, 50), "ttft_p95_s": percentile(ttft, 95),
            "replies_per_s": len(done) / self.config.duration_s,
            "tokens_per_s": sum(a.eval_count for a in done) / self.config.duration_s,
            "burst_200": sum(a.status == 200 for a in burst), "burst_503": sum(a.status == 503 for a in burst),
            "swap_pull_s": self.swap.get("seconds"), "swap_sha256": self.swap.get("sha256", "")[:12],
            "corrupt_refused": self.corrupt.get("refused"), "corrupt_reason": self.corrupt.get("reason", ""),
            "rss_start_mib": self.rss_start / MIB, "rss_end_mib": self.rss_end / MIB,
            "rss_max_mib": self.rss_max / MIB, "rss_by_phase_mib": self.rss_by_phase(),
            "rss_samples_mib": [(round(t, 1), round(r / MIB, 1)) for t, r in self.rss],
            "exit_code": self.exit_code,
            "violations": self.violations,
        }

    def rss_by_phase(self) -> dict[str, float]:
        """Median resident MiB between the scripted events: whether memory moves with them or drifts."""
        d = self.config.duration_s
        phases = {"steady": (0.1, 0.25), "after burst": (0.3, 0.5), "after swap": (0.55, 0.75),
                  "after corrupt": (0.8, 1.01)}
        out = {}
        for name, (a, b) in phases.items():
            values = [r for t, r in self.rss if a * d <= t < b * d]
            if values:
                out[name] = median(values) / MIB
        return out

    def table(self) -> str:
        f = self.figures()
        rows = [
            ("machine", f["machine"]),
            ("run", f"{f['duration_s']:.0f} s, {f['clients']} bot clients, queue limit {f['max_queue']}, "
                    f"burst of {f['burst']}"),
            ("bot requests", f"{f['bot_requests']} ({f['bot_requests_failed']} refused twice while the burst "
                             "filled the queue)"),
            ("HTTP statuses", ", ".join(f"{k}: {v}" for k, v in sorted(f["statuses"].items()))),
            ("latency, request to last byte", f"p50 {f['latency_p50_s']:.2f} s, p95 {f['latency_p95_s']:.2f} s, "
                                              f"max {f['latency_max_s']:.2f} s"),
            ("time to first token", f"p50 {f['ttft_p50_s']:.2f} s, p95 {f['ttft_p95_s']:.2f} s"),
            ("throughput", f"{f['replies_per_s']:.2f} replies/s, {f['tokens_per_s']:.1f} tokens/s"),
            ("burst", f"{f['burst_200']} answered, {f['burst_503']} refused with 503 + Retry-After"),
            ("hot swap", f"pull took {f['swap_pull_s'] or float('nan'):.2f} s, now serving {f['swap_sha256']}"),
            ("corrupt promotion", f"refused: {f['corrupt_refused']}; /readyz: {f['corrupt_reason'][:90]}"),
            ("RSS (gateway)", f"start {f['rss_start_mib']:.0f} MiB, end {f['rss_end_mib']:.0f} MiB, "
                              f"max {f['rss_max_mib']:.0f} MiB"),
            ("RSS by phase (median)", ", ".join(f"{k} {v:.0f}" for k, v in f["rss_by_phase_mib"].items())),
            ("exit on SIGTERM", str(f["exit_code"])),
            ("rules", "all hold" if not self.violations else f"{len(self.violations)} broken"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines += [f"  BROKEN: {v}" for v in self.violations]
        return "\n".join(lines)


class LoadRun:
    def __init__(self, config: LoadConfig, base: str) -> None:
        self.config = config
        self.base = base
        self.report = LoadReport(config)
        self._lock = threading.Lock()
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def record(self, attempt: Attempt) -> None:
        with self._lock:
            self.report.attempts.append(attempt)

    def request(self, http: httpx.Client, payload: dict[str, Any], kind: str) -> Attempt:
        t0 = self.now()
        try:
            with http.stream("POST", f"{self.base}/api/generate", json=payload) as r:
                if r.status_code != 200:
                    body = r.read()
                    try:
                        error = str(json.loads(body).get("error", ""))
                    except ValueError:
                        error = body[:200].decode(errors="replace")
                    return Attempt(kind, t0, self.now(), r.status_code, error or f"HTTP {r.status_code}",
                                   r.headers.get("retry-after"))
                if not payload.get("stream", True):
                    data = r.read()
                    obj = json.loads(data)
                    return Attempt(kind, t0, self.now(), 200, str(obj.get("error", "")), reply=obj["response"],
                                   chunks=obj.get("chunks", []), eval_count=obj.get("eval_count", 0))
                text, ttft, final, error = "", None, {}, ""
                for line in r.iter_lines():  # as the bot reads: concatenate `response` until done
                    if not line.strip():
                        continue
                    obj = json.loads(line)
                    if "error" in obj:
                        error = str(obj["error"])
                        break
                    if ttft is None and obj.get("response"):
                        ttft = self.now() - t0
                    text += obj.get("response", "")
                    if obj.get("done"):
                        final = obj
                        break
                if not final and not error:
                    error = "stream ended without done: true"
                return Attempt(kind, t0, self.now(), 200, error, ttft_s=ttft, reply=text,
                               chunks=final.get("chunks", []), eval_count=final.get("eval_count", 0))
        except httpx.HTTPError as exc:
            return Attempt(kind, t0, self.now(), 0, f"{type(exc).__name__}: {exc}")

    def bot(self, index: int, deadline: float) -> None:
        """One Mesh-Master: ask, wait for the reply, ask again; two tries with the bot's 1.5 s backoff."""
        rng = random.Random(index)
        with httpx.Client(timeout=120) as http:
            while self.now() < deadline:
                payload = bot_payload(rng.choice(QUESTIONS))
                ok = False
                for attempt in range(2):
                    a = self.request(http, payload, "steady")
                    self.record(a)
                    if a.ok:
                        ok = True
                        break
                    if attempt == 0:
                        time.sleep(1.5)
                with self._lock:
                    self.report.bot_requests += 1
                    self.report.bot_failed += not ok

    def burst(self) -> None:
        """Many requests at once, past the queue limit: the excess must be refused at once with 503."""
        n = self.config.burst_size
        barrier = threading.Barrier(n)
        start = self.now()

        def one(i: int) -> None:
            with httpx.Client(timeout=120) as http:
                barrier.wait()
                self.record(self.request(http, bot_payload(QUESTIONS[i % len(QUESTIONS)], stream=False,
                                                           num_predict=16), "burst"))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.report.burst_window = (start, self.now())

    def pull(self) -> tuple[list[dict[str, Any]], float]:
        t0 = time.monotonic()
        with httpx.stream("POST", f"{self.base}/api/pull", json={"model": "mesh-ai"}, timeout=300) as r:
            if r.status_code != 200:
                return [{"error": f"HTTP {r.status_code}: {r.read()[:200]!r}"}], time.monotonic() - t0
            lines = [json.loads(x) for x in r.iter_lines() if x.strip()]
        return lines, time.monotonic() - t0


def run_load(config: LoadConfig, s3: S3Settings, workdir: Path, log: Any = print) -> LoadReport:
    """The whole scenario against the bucket `s3` (which must exist); returns the report with its verdict."""
    store = ArtifactStore(s3)
    store.ensure_bucket()
    gguf = smollm2_gguf()
    log("uploading the model and two other versions of it")
    first = store.put_file(gguf, "runs/load-a/quantize/mesh-ai-Q4_1.gguf")
    second = store.put_file(gguf_variant(gguf, workdir / "second.gguf", "#2"),
                            "runs/load-b/quantize/mesh-ai-Q4_1.gguf")
    cut = workdir / "corrupt.gguf"
    cut.write_bytes(gguf.read_bytes()[: 2 * MIB])  # the right magic, the tensors missing
    corrupt = store.put_file(cut, "runs/load-c/quantize/mesh-ai-Q4_1.gguf")
    promote(store, "mesh-ai", run_id="load-a", gguf=first)

    env = {"MESHAI_MAX_QUEUE": str(config.max_queue), "MESHAI_MODEL_POLL_S": "3600", "MESHAI_LOG_LEVEL": "WARNING"}
    if config.threads:
        env["MESHAI_NUM_THREADS"] = str(config.threads)
    gateway = GatewayProcess(workdir / "gateway", s3=s3, env=env)
    report: LoadReport
    try:
        ready = gateway.wait("/readyz")
        if ready["sha256"] != first.sha256:
            raise SystemExit(f"gateway serves {ready['sha256']}, expected the promoted {first.sha256}")
        run = LoadRun(config, gateway.base)
        report = run.report
        report.machine = f"{platform.machine()}, {platform.processor() or 'cpu'}, {_cores()} cores"
        sampler = RssSampler(gateway.pid, origin=run.t0).start()
        d = config.duration_s
        log(f"load: {config.clients} bot clients for {d:.0f} s")
        bots = [threading.Thread(target=run.bot, args=(i, d)) for i in range(config.clients)]
        for t in bots:
            t.start()

        _sleep_until(run, d * 0.25)
        log("burst")
        # In a thread: the requests it gets into the queue take a while, and the swap must not wait for them.
        burst = threading.Thread(target=run.burst)
        burst.start()

        _sleep_until(run, d * 0.5)
        log("hot swap: promote another version and pull it")
        promote(store, "mesh-ai", run_id="load-b", gguf=second)
        swap_start = run.now()
        statuses, seconds = run.pull()
        ready = httpx.get(f"{gateway.base}/readyz", timeout=10).json()
        report.swap = {"start": swap_start, "end": run.now(), "seconds": seconds, "last": statuses[-1],
                       "sha256": ready.get("sha256", ""), "expected": second.sha256}

        _sleep_until(run, d * 0.75)
        log("corrupt promotion: promote a cut GGUF and pull it")
        promote(store, "mesh-ai", run_id="load-c", gguf=corrupt)
        statuses, _ = run.pull()
        r = httpx.get(f"{gateway.base}/readyz", timeout=10)
        body = r.json()
        report.corrupt = {"last": statuses[-1], "readyz_status": r.status_code, "sha256": body.get("sha256", ""),
                          "reason": body.get("refresh_error", ""),
                          "refused": "error" in statuses[-1] and body.get("sha256") == second.sha256}

        for t in [*bots, burst]:
            t.join()
        # Memory at the end is read once the gateway is idle again: what it keeps, not what a request in
        # flight or the swap's old version (freed when its last generation ends) holds for a moment.
        settled = _wait_idle(gateway.base)
        time.sleep(1.0)
        end_from = run.now()
        time.sleep(2.0)
        sampler.stop()
        report.rss = sampler.samples
        report.rss_end_from = end_from if settled else -1.0
        metrics = httpx.get(f"{gateway.base}/metrics", timeout=10).text
        report.swaps_metric = next((float(line.split()[1]) for line in metrics.splitlines()
                                    if line.startswith("meshai_gateway_model_swaps_total ")), 0.0)
    finally:
        report_exit = gateway.stop()
    report.exit_code = report_exit
    judge(report, second.sha256, corrupt.sha256)
    return report


def _cores() -> int:
    return os.cpu_count() or 1


def _wait_idle(base: str, timeout: float = 120.0) -> bool:
    """Wait until no generation runs or waits (the gateway's own gauges)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{base}/metrics", timeout=10).text
        busy = sum(float(line.split()[1]) for line in text.splitlines()
                   if line.startswith(("meshai_gateway_queue_depth ", "meshai_gateway_generations_in_flight ")))
        if busy == 0:
            return True
        time.sleep(0.5)
    return False


def _sleep_until(run: LoadRun, t: float) -> None:
    while run.now() < t:
        time.sleep(min(0.2, t - run.now()))


def judge(report: LoadReport, second_sha: str, corrupt_sha: str) -> None:
    v = report.violations
    cfg = report.config
    b0, b1 = report.burst_window
    for a in report.attempts:
        if a.ok:
            if not a.reply.strip():
                v.append(f"{a.kind} request at {a.t0:.1f}s: empty reply")
            elif not fits_budget(a.reply + SUFFIX) or a.chunks != split_chunks(a.reply):
                v.append(f"{a.kind} request at {a.t0:.1f}s: reply outside the radio budget: {a.reply!r}")
            continue
        intended = (a.status == 503 and a.retry_after is not None and "busy" in a.error
                    and (a.kind == "burst" or b0 - 0.5 <= a.t0 <= b1 + 0.5))
        if not intended:
            v.append(f"{a.kind} request at {a.t0:.1f}s failed: status {a.status}: {a.error[:160]}")
    if report.bot_requests < cfg.clients:
        v.append(f"only {report.bot_requests} bot requests finished")
    burst = [a for a in report.attempts if a.kind == "burst"]
    if len(burst) != cfg.burst_size or not any(a.status == 503 for a in burst):
        v.append(f"the burst of {cfg.burst_size} was not refused in part: "
                 f"{sorted({a.status for a in burst})}")
    swap = report.swap
    if swap.get("last") != {"status": "success"} or swap.get("sha256") != second_sha:
        v.append(f"hot swap did not complete: last status {swap.get('last')}, serving {swap.get('sha256')}")
    if report.swaps_metric != 1:
        v.append(f"meshai_gateway_model_swaps_total is {report.swaps_metric}, expected 1")
    c = report.corrupt
    if not c.get("refused") or c.get("readyz_status") != 200 or corrupt_sha[:12] not in c.get("reason", ""):
        v.append(f"corrupt promotion not refused cleanly: {c}")
    # Memory: the level once the load is steady (before the swap) against the level once it is over.
    d = cfg.duration_s
    before = [r for t, r in report.rss if 0.1 * d <= t < 0.25 * d]
    after = [r for t, r in report.rss if report.rss_end_from >= 0 and t >= report.rss_end_from]
    if before and after:
        report.rss_start, report.rss_end = int(median(before)), int(median(after))
        report.rss_max = max(r for _, r in report.rss)
        growth = (report.rss_end - report.rss_start) / MIB
        if growth > cfg.rss_growth_mb:
            v.append(f"resident memory grew {growth:.0f} MiB (limit {cfg.rss_growth_mb:.0f} MiB)")
    else:
        v.append("too few memory samples (or the gateway never became idle after the load)")
    if report.exit_code not in (0, -15):
        v.append(f"gateway exit code on SIGTERM: {report.exit_code}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of load (default 120)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent bot clients (default 8)")
    ap.add_argument("--max-queue", type=int, default=8, help="the gateway's queue limit (default 8)")
    ap.add_argument("--burst", type=int, default=0, help="burst size (default: max-queue + 16)")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--rss-growth-mb", type=float, default=48.0, help="allowed RSS growth (default 48 MiB)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    config = LoadConfig(duration_s=args.duration, clients=args.clients, max_queue=args.max_queue,
                        burst=args.burst, threads=args.threads, rss_growth_mb=args.rss_growth_mb)
    with tempfile.TemporaryDirectory(prefix="meshai-load-") as tmp, LocalS3(Path(tmp)) as s3:
        report = run_load(config, s3, Path(tmp))
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.figures() | {"config": asdict(config)}, indent=2))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
