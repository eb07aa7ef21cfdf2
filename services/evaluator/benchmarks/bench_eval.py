"""How long an evaluation takes: the demo's (candidate and base, field suite, greedy + 1 sampled pass) and the
full one (3 sampled passes, plus the candidate's F16 GGUF when given), through the gateway's generation core.

    python services/evaluator/benchmarks/bench_eval.py --candidate cand-Q4_K_M.gguf --modelfile Modelfile \\
        [--base base.gguf] [--f16 cand-F16.gguf] [--skip-full]

Prints wall time per model and evaluation, replies per second and latency percentiles. No cache is used:
every reply is generated.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from meshai_common.embedded import embedded_gguf
from meshai_evaluator.askers import LocalAsker
from meshai_evaluator.runner import evaluate
from meshai_evaluator.suite import load_suite, questions


def timed(label: str, gguf: Path, modelfile: Path | None, items: list, seeds: int) -> float:
    asker = LocalAsker.from_files(gguf, modelfile)
    try:
        t0 = time.perf_counter()
        res = evaluate(asker, items, seeds=seeds)
        dt = time.perf_counter() - t0
    finally:
        asker.close()
    asks = len(items) * (seeds + 1)
    lat = res["latency"]
    print(f"  {label:<14} {dt:7.1f} s  {asks} replies ({asks / dt:.2f}/s)  p50 {lat['p50_s']:.2f} s  "
          f"p90 {lat['p90_s']:.2f} s  overall {res['overall']:.1f}  commands {res['areas']['commands']:.1f}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidate", type=Path, required=True)
    ap.add_argument("--modelfile", type=Path)
    ap.add_argument("--base", type=Path, help="default: the embedded SmolLM2 GGUF")
    ap.add_argument("--f16", type=Path)
    ap.add_argument("--suite", default="field")
    ap.add_argument("--skip-full", action="store_true")
    args = ap.parse_args()
    base = args.base or embedded_gguf()
    items = questions(load_suite(args.suite))
    print(f"suite {args.suite}: {len(items)} questions")
    print("demo evaluation (greedy + 1 sampled pass):")
    demo = timed("candidate", args.candidate, args.modelfile, items, 1) + timed("base", base, None, items, 1)
    print(f"  total          {demo:7.1f} s   (goal < 120 s on 2 cores)")
    if not args.skip_full:
        print("full evaluation (greedy + 3 sampled passes):")
        full = timed("candidate", args.candidate, args.modelfile, items, 3) + timed("base", base, None, items, 3)
        if args.f16:
            full += timed("candidate F16", args.f16, args.modelfile, items, 3)
        print(f"  total          {full:7.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
