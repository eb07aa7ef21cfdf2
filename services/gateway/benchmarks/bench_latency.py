"""Benchmark: the same model and prompts served four ways on the same machine in one run: direct
llama-cpp-python (in this process), the gateway's engine in this process (no HTTP, to split the overhead),
the gateway over HTTP (its own process), and llama-cpp-python's own OpenAI server `llama_cpp.server` (its own
process). Every way streams.

    python services/gateway/benchmarks/bench_latency.py [--repeat 3] [--max-tokens 64] [--json out.json]

Every request decodes greedily (temperature 0, repeat penalty off) from the same raw prompt (the model's chat
template already applied, as the gateway renders Mesh-Master's prompt), so all ways produce the same tokens and
the timings compare the same work; the gateway's radio budget is off for the same reason. The ways take turns
request by request (rotating who goes first), so a change in background load on a shared machine falls on all
of them alike. The row "gateway, bot request" is Mesh-Master's own request with the budget on, for reference.

Figures per way: p50/p99 request latency (send to last byte), time to first token (send to the first non-empty
text), decode speed (tokens after the first / time after the first). Goal: gateway overhead under 5 % of
direct at p50, and at least as fast as llama_cpp.server, both taken as the median of per-request ratios (the
same prompt in the same pass with the same text out): the p50 of a dozen prompts' latencies falls between
prompt-length clusters and moves by several percent with no change in speed. Exit code 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402  (this folder is not a package)
    CONTEXT,
    QUESTIONS,
    GatewayProcess,
    bot_payload,
    percentile,
    smollm2_gguf,
)

from meshai_common.net import free_port  # noqa: E402
from meshai_common.process import LoggedProcess  # noqa: E402
from meshai_common.prompts import DEFAULT_SYSTEM_PROMPT, meshmaster_prompt  # noqa: E402

THREADS = 2
N_CTX = 2048
N_BATCH = 512
DIRECT = "direct llama-cpp-python"
ENGINE = "gateway engine, in process"
GATEWAY = "gateway (HTTP, NDJSON)"
SERVER = "llama_cpp.server (HTTP, SSE)"
BOT = "gateway, bot request (budget on)"


@dataclass
class Sample:
    latency: float
    ttft: float
    tokens: int
    text: str

    @property
    def decode_tps(self) -> float:
        if self.tokens < 2 or self.latency <= self.ttft:
            return 0.0
        return (self.tokens - 1) / (self.latency - self.ttft)


def timed(pieces: Iterator[str], t0: float) -> tuple[float, str]:
    """Consume a stream of text pieces: (time to the first non-empty piece, the whole text)."""
    ttft, text = 0.0, ""
    for piece in pieces:
        if piece and not ttft:
            ttft = time.perf_counter() - t0
        text += piece
    return ttft, text


def ndjson(resp: httpx.Response) -> Iterator[str]:
    for line in resp.iter_lines():
        if line:
            obj = json.loads(line)
            if "error" in obj:
                raise RuntimeError(obj["error"])
            yield obj.get("response", "")


def sse(resp: httpx.Response) -> Iterator[str]:
    for line in resp.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])["choices"][0].get("text", "")


def start_llama_server(gguf: Path, workdir: Path) -> tuple[LoggedProcess, str]:
    port = free_port()
    proc = LoggedProcess(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
         "--n_threads", str(THREADS), "--n_ctx", str(N_CTX), "--n_batch", str(N_BATCH), "--use_mmap", "False",
         "--verbose", "False"],
        workdir / "llama_server.log",
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not proc.alive():
            raise SystemExit(f"llama_cpp.server exited: {proc.log()[-2000:]}")
        try:
            if httpx.get(f"{base}/v1/models", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.stop(signal.SIGKILL)
    raise SystemExit("llama_cpp.server did not start")


def paired(way: list[Sample], ref: list[Sample]) -> float:
    """Median over requests with the same text of way's latency / ref's latency, minus 1."""
    ratios = [a.latency / b.latency for a, b in zip(way, ref, strict=True) if a.text == b.text and b.latency > 0]
    return percentile(ratios, 50) - 1 if ratios else float("nan")


def summary(samples: list[Sample]) -> dict[str, float]:
    lat = [s.latency for s in samples]
    ttft = [s.ttft for s in samples]
    return {"requests": len(samples), "p50_s": percentile(lat, 50), "p99_s": percentile(lat, 99),
            "ttft_p50_s": percentile(ttft, 50), "ttft_p99_s": percentile(ttft, 99),
            "decode_tok_s": percentile([s.decode_tps for s in samples], 50),
            "tokens": sum(s.tokens for s in samples)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="passes over the prompts after a warm-up pass")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from llama_cpp import Llama

    from meshai_common.inference import GenerationRequest, TextDelta
    from meshai_gateway.engine import Engine
    from meshai_gateway.model_source import LocalFileSource
    from meshai_gateway.settings import GatewaySettings

    gguf = smollm2_gguf()
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}, "
               f"python {platform.python_version()}")
    engine = Engine(LocalFileSource(gguf).current(), GatewaySettings(num_threads=THREADS, num_ctx=N_CTX))
    texts = [engine.render_prompt(GenerationRequest(prompt=meshmaster_prompt(q, CONTEXT),
                                                    system=DEFAULT_SYSTEM_PROMPT)) for q in QUESTIONS]
    llm = Llama(model_path=str(gguf), n_ctx=N_CTX, n_batch=N_BATCH, n_threads=THREADS, use_mmap=False,
                verbose=False)

    def count(text: str) -> int:
        return len(llm.tokenize(text.encode(), add_bos=False, special=True))

    opts = {"temperature": 0, "repeat_penalty": 1.0, "top_p": 1.0, "top_k": 40, "num_predict": args.max_tokens,
            "max_chunks": 0}
    print(f"machine: {machine}; model {gguf.name}; {len(texts)} prompts x {args.repeat} passes after a warm-up, "
          f"{args.max_tokens} tokens max, {THREADS} threads each", flush=True)

    with tempfile.TemporaryDirectory(prefix="meshai-bench-") as tmp:
        gateway = GatewayProcess(Path(tmp) / "gw", gguf=gguf,
                                 args=["--threads", str(THREADS), "--num-ctx", str(N_CTX)])
        server, server_base = start_llama_server(gguf, Path(tmp))
        http = httpx.Client(timeout=300)
        try:
            gateway.wait()

            def direct(i: int) -> Sample:
                t0 = time.perf_counter()
                stream = llm.create_completion(texts[i], max_tokens=args.max_tokens, temperature=0.0,
                                               repeat_penalty=1.0, top_p=1.0, top_k=40, stream=True)
                ttft, text = timed((c["choices"][0]["text"] for c in stream), t0)
                return Sample(time.perf_counter() - t0, ttft, count(text), text)

            def in_process(i: int) -> Sample:
                t0 = time.perf_counter()
                prep = engine.prepare(GenerationRequest(prompt=texts[i], raw=True, options=opts))
                events = engine.run(prep)
                ttft, text = timed((e.text if isinstance(e, TextDelta) else e.tail for e in events), t0)
                return Sample(time.perf_counter() - t0, ttft, count(text), text)

            def over_http(url: str, body: dict[str, Any], reader: Callable[[httpx.Response], Iterator[str]]
                          ) -> Sample:
                t0 = time.perf_counter()
                with http.stream("POST", url, json=body) as r:
                    r.raise_for_status()
                    ttft, text = timed(reader(r), t0)
                return Sample(time.perf_counter() - t0, ttft, count(text), text)

            ways: dict[str, Callable[[int], Sample]] = {
                DIRECT: direct,
                ENGINE: in_process,
                GATEWAY: lambda i: over_http(f"{gateway.base}/api/generate", {
                    "model": "mesh-ai", "prompt": texts[i], "raw": True, "stream": True, "options": opts}, ndjson),
                SERVER: lambda i: over_http(f"{server_base}/v1/completions", {
                    "prompt": texts[i], "max_tokens": args.max_tokens, "temperature": 0.0, "repeat_penalty": 1.0,
                    "top_p": 1.0, "top_k": 40, "stream": True}, sse),
                BOT: lambda i: over_http(f"{gateway.base}/api/generate", bot_payload(QUESTIONS[i]), ndjson),
            }
            names = list(ways)
            results: dict[str, list[Sample]] = {name: [] for name in names}
            for n in range(args.repeat + 1):
                print(f"pass {n}{' (warm-up)' if n == 0 else ''} ...", flush=True)
                for i in range(len(texts)):
                    shift = (i + n) % len(names)
                    for name in names[shift:] + names[:shift]:  # who goes first rotates
                        sample = ways[name](i)
                        if n > 0:
                            results[name].append(sample)
        finally:
            http.close()
            gateway.stop()
            server.stop(timeout=30)
            engine.close()
            llm.close()

    figures = {name: summary(samples) for name, samples in results.items()}
    same = sum(a.text == b.text == c.text == d.text for a, b, c, d in zip(
        results[DIRECT], results[ENGINE], results[GATEWAY], results[SERVER], strict=True))
    # The goals compare request by request: the same prompt in the same pass, taken in turn, with the same
    # text out. A p50 of 12 prompts' latencies sits between length clusters and moves with no change in speed.
    overhead = paired(results[GATEWAY], results[DIRECT])
    engine_overhead = paired(results[ENGINE], results[DIRECT])
    vs_server = paired(results[GATEWAY], results[SERVER])
    unpaired = figures[GATEWAY]["p50_s"] / figures[DIRECT]["p50_s"] - 1

    print(f"\n{'':34} {'p50':>8} {'p99':>8} {'TTFT p50':>9} {'TTFT p99':>9} {'decode':>10}")
    for name, f in figures.items():
        print(f"{name:34} {f['p50_s']:7.3f}s {f['p99_s']:7.3f}s {f['ttft_p50_s']:8.3f}s {f['ttft_p99_s']:8.3f}s "
              f"{f['decode_tok_s']:6.1f} t/s")
    print(f"\nsame text from the four ways: {same}/{len(results[DIRECT])} requests")
    print("median of per-request latency ratios (same prompt, same pass, same text):")
    print(f"  gateway engine (no HTTP) vs direct: {engine_overhead * 100:+.1f}%")
    print(f"  gateway (HTTP) vs direct: {overhead * 100:+.1f}% (goal < +5%)")
    print(f"  gateway (HTTP) vs llama_cpp.server: {vs_server * 100:+.1f}% (goal <= 0%)")
    print(f"p50 latency of gateway (HTTP) vs p50 of direct: {unpaired * 100:+.1f}%")
    print(f"date {datetime.date.today().isoformat()}; {machine}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "figures": figures, "overhead_vs_direct": overhead,
                                         "engine_overhead_vs_direct": engine_overhead,
                                         "vs_llama_cpp_server": vs_server, "p50_vs_p50_direct": unpaired,
                                         "same_text": same, "requests": len(results[DIRECT]),
                                         "samples": {name: [[x.latency, x.ttft, x.tokens] for x in samples]
                                                     for name, samples in results.items()}}, indent=2))
    return 0 if overhead < 0.05 and vs_server <= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
