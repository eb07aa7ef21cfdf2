"""Benchmark: what grounding costs in latency through the gateway. One grounded GGUF (its Modelfile has
`# meshai: grounding=...`) served by two gateway processes on 127.0.0.1, one with MESHAI_GROUNDING=auto (the
catalog lines that fit each question are added to the prompt's Context block) and one with
MESHAI_GROUNDING=off, asked the same Mesh-Master requests.

    python services/gateway/benchmarks/bench_grounding.py --model cand.gguf --modelfile Modelfile \\
        [--suite field] [--questions 40] [--repeat 2] [--threads 1] [--json out.json]

Requests are the bot's own: its prompt shape (bot system text, Context block, "Question: ...\\nAnswer:"), its
options (meshai_common.ollama_client.BOT_OPTIONS), streamed and read to the final NDJSON line, with a fixed
seed per request (the same for both ways) so each way samples reproducibly. Questions: the harness's dozen
with its two history lines (default), or with `--suite field` the evaluator's field suite, each item with its
own Context lines, if any; `--questions N` takes N spread evenly over the list. The two ways take turns request
by request (alternating who goes first), so a change in background load on a shared machine falls on both
alike. One warm-up request per way is not counted. Each gateway gets `--threads` threads (default 1, so the
two fit 2 cores); only one of them generates at a time.

Figures per way: p50/p90 latency (send to last byte), p50 time to first token (send to the first non-empty
text), mean prompt tokens (`prompt_eval_count`) and mean reply tokens (`eval_count`) from the final line.
Goal: grounded p50 latency at most 1.2 x plain p50 latency; the p50 first-token ratio is reported beside it.
Exit code 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CONTEXT, QUESTIONS, GatewayProcess, bot_payload, percentile  # noqa: E402

from meshai_common.ollama_client import BOT_OPTIONS  # noqa: E402
from meshai_common.prompts import meshmaster_prompt  # noqa: E402
from meshai_common.sampling import even_spread  # noqa: E402

GOAL_RATIO = 1.2
GROUNDED = "grounded (MESHAI_GROUNDING=auto)"
PLAIN = "plain (MESHAI_GROUNDING=off)"
_GROUNDING_LINE = re.compile(r"^\s*#\s*meshai:\s*grounding\s*=\s*(\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Request:
    question: str
    context: tuple[str, ...] = ()  # "<shortname>: <text>" lines, oldest first


@dataclass
class Sample:
    latency: float  # seconds, send to last byte
    ttft: float  # seconds, send to the first non-empty text
    prompt_tokens: int
    reply_tokens: int
    text: str


def grounding_spec(modelfile: Path) -> str:
    """The `# meshai: grounding=...` value of a Modelfile; SystemExit naming the file when it has none."""
    try:
        text = modelfile.read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"{modelfile}: cannot read the Modelfile: {exc}") from None
    found = _GROUNDING_LINE.search(text)
    if not found:
        raise SystemExit(f"{modelfile}: no `# meshai: grounding=...` line, so the model is not grounded and "
                         "both ways would be the same")
    return found.group(1)


def harness_requests() -> list[Request]:
    return [Request(q, tuple(f"{who}: {text}" for who, text in CONTEXT)) for q in QUESTIONS]


def suite_requests(name: str) -> list[Request]:
    """Every question of an evaluator suite (in the evaluator's order) with its own Context lines."""
    from meshai_common.errors import MeshAIError
    from meshai_evaluator.suite import load_suite, questions

    try:
        suite = load_suite(name)
    except MeshAIError as exc:
        raise SystemExit(f"--suite {name}: {exc}") from None
    return [Request(item["question"], tuple(item.get("context") or ())) for _, item in questions(suite)]


def payload(req: Request, seed: int) -> dict[str, Any]:
    """Mesh-Master's request for `req`, with the bot's options and a fixed seed."""
    return bot_payload(req.question) | {"prompt": meshmaster_prompt(req.question, req.context),
                                        "options": BOT_OPTIONS | {"seed": seed}}


def ask(http: httpx.Client, base: str, body: dict[str, Any]) -> Sample:
    """Stream one request as the bot does: time to the first text, to the last byte, and the final counts."""
    t0 = time.perf_counter()
    ttft, text, final = 0.0, "", None
    with http.stream("POST", f"{base}/api/generate", json=body) as resp:
        if resp.status_code != 200:
            resp.read()
            raise SystemExit(f"{base}: HTTP {resp.status_code}: {resp.text[:500]}")
        for line in resp.iter_lines():
            if not line.strip():
                continue
            obj = json.loads(line)
            if "error" in obj:
                raise SystemExit(f"{base}: error line in the stream: {obj['error']}")
            piece = obj.get("response", "")
            if piece and not ttft:
                ttft = time.perf_counter() - t0
            text += piece
            if obj.get("done"):
                final = obj
    latency = time.perf_counter() - t0
    if final is None:
        raise SystemExit(f"{base}: the stream ended without a done line")
    return Sample(latency, ttft or latency, int(final.get("prompt_eval_count", 0)),
                  int(final.get("eval_count", 0)), text)


def summary(samples: list[Sample]) -> dict[str, float]:
    """Per-way figures; NaN where there are no samples."""
    lat = [s.latency for s in samples]
    n = len(samples)
    return {"requests": n, "p50_s": percentile(lat, 50), "p90_s": percentile(lat, 90),
            "ttft_p50_s": percentile([s.ttft for s in samples], 50),
            "prompt_tokens_mean": sum(s.prompt_tokens for s in samples) / n if n else float("nan"),
            "reply_tokens_mean": sum(s.reply_tokens for s in samples) / n if n else float("nan")}


def compare(grounded: dict[str, float], plain: dict[str, float], goal: float = GOAL_RATIO) -> dict[str, Any]:
    """grounded / plain at p50 for latency and first-token time; the goal holds when the latency ratio is at
    most `goal` (a NaN ratio, from no samples or a zero plain p50, misses it)."""
    def ratio(key: str) -> float:
        return grounded[key] / plain[key] if plain[key] > 0 else float("nan")

    latency, ttft = ratio("p50_s"), ratio("ttft_p50_s")
    return {"latency_p50_ratio": latency, "ttft_p50_ratio": ttft, "goal": goal, "goal_met": latency <= goal}


def paired_median(a: list[Sample], b: list[Sample]) -> float:
    """Median over requests of a's latency / b's latency (same question, same pass, same seed)."""
    return percentile([x.latency / y.latency for x, y in zip(a, b, strict=True) if y.latency > 0], 50)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path, help="a grounded GGUF")
    ap.add_argument("--modelfile", required=True, type=Path, help="its Modelfile, with `# meshai: grounding=...`")
    ap.add_argument("--repeat", type=int, default=2, help="passes over the questions after one warm-up request")
    ap.add_argument("--questions", type=int, default=None, help="questions to ask, spread over the list")
    ap.add_argument("--suite", default=None, help="an evaluator suite (e.g. field) instead of the harness's dozen")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per gateway (default 1)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not args.model.is_file():
        raise SystemExit(f"--model {args.model}: no such file")
    if args.repeat < 1 or args.threads < 1 or (args.questions is not None and args.questions < 1):
        raise SystemExit("--repeat, --threads and --questions must be at least 1")
    spec = grounding_spec(args.modelfile)
    requests = even_spread(suite_requests(args.suite) if args.suite else harness_requests(), args.questions or 0)

    machine = (f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}, "
               f"python {platform.python_version()}")
    load_start = os.getloadavg()
    print(f"machine: {machine}; load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}\n"
          f"model {args.model.name} (grounding={spec}); {len(requests)} questions "
          f"({args.suite or 'harness'}) x {args.repeat} passes, {args.threads} thread(s) per gateway", flush=True)

    modes = {GROUNDED: "auto", PLAIN: "off"}
    results: dict[str, list[Sample]] = {name: [] for name in modes}
    with tempfile.TemporaryDirectory(prefix="meshai-bench-grounding-") as tmp:
        # `meshai gateway --model` takes the mode from --grounding (the deployed gateway reads the variable)
        gateways = {name: GatewayProcess(Path(tmp) / mode, gguf=args.model, env={"MESHAI_GROUNDING": mode},
                                         args=["--modelfile", str(args.modelfile), "--threads", str(args.threads),
                                               "--grounding", mode])
                    for name, mode in modes.items()}
        http = httpx.Client(timeout=300)
        try:
            for gw in gateways.values():
                gw.wait()
            names = list(modes)
            for name in names:  # warm-up: threads, caches, the grounding index
                ask(http, gateways[name].base, payload(requests[0], seed=0))
            for n in range(args.repeat):
                print(f"pass {n + 1} ...", flush=True)
                for i, req in enumerate(requests):
                    body = payload(req, seed=1000 * n + i + 1)
                    for name in names if (i + n) % 2 == 0 else names[::-1]:  # who goes first alternates
                        results[name].append(ask(http, gateways[name].base, body))
        finally:
            http.close()
            for gw in gateways.values():
                gw.stop()
    load_end = os.getloadavg()

    figures = {name: summary(samples) for name, samples in results.items()}
    ratios = compare(figures[GROUNDED], figures[PLAIN])
    ratios["paired_latency_median_ratio"] = paired_median(results[GROUNDED], results[PLAIN])
    added = figures[GROUNDED]["prompt_tokens_mean"] - figures[PLAIN]["prompt_tokens_mean"]
    same = sum(a.text == b.text for a, b in zip(results[GROUNDED], results[PLAIN], strict=True))

    print(f"\n{'':34} {'p50':>8} {'p90':>8} {'TTFT p50':>9} {'prompt tok':>11} {'reply tok':>10}")
    for name, f in figures.items():
        print(f"{name:34} {f['p50_s']:7.3f}s {f['p90_s']:7.3f}s {f['ttft_p50_s']:8.3f}s "
              f"{f['prompt_tokens_mean']:11.1f} {f['reply_tokens_mean']:10.1f}")
    print(f"\ngrounding adds {added:.1f} prompt tokens per request on average; "
          f"{same}/{len(results[PLAIN])} replies came out the same")
    print(f"grounded / plain, p50 latency: {ratios['latency_p50_ratio']:.3f} (goal <= {GOAL_RATIO}); "
          f"p50 first token: {ratios['ttft_p50_ratio']:.3f}; "
          f"median of per-request latency ratios: {ratios['paired_latency_median_ratio']:.3f}")
    print(f"date {datetime.date.today().isoformat()}; {machine}; load average at the end "
          f"{load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    if added <= 0:
        print("error: the grounded gateway's prompts are not longer: grounding did not take effect", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine, "model": str(args.model), "modelfile": str(args.modelfile), "grounding": spec,
            "suite": args.suite or "harness", "questions": len(requests), "repeat": args.repeat,
            "threads": args.threads, "loadavg_start": load_start, "loadavg_end": load_end, "figures": figures,
            "ratios": ratios, "prompt_tokens_added": added, "same_text": same,
            "samples": {name: [asdict(s) for s in samples] for name, samples in results.items()},
        }, indent=2))
    return 0 if ratios["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
