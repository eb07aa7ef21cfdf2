"""`meshai eval run --model GGUF [--baseline GGUF]`: the public suite on local GGUF files."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("eval", help="evaluate GGUF models").add_subparsers(dest="eval_cmd", required=True)
    r = ev.add_parser("run", help="run a suite on a model (and a baseline) and print the comparison")
    r.add_argument("--model", required=True, type=Path)
    r.add_argument("--baseline", type=Path)
    r.add_argument("--suite", default="public")
    r.add_argument("--threshold", type=float, default=0.0)
    r.add_argument("--output", type=Path, help="write results.json here")
    r.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from meshai_common.errors import NotFound
    from meshai_evaluator.runner import evaluate, write_results
    from meshai_evaluator.scoring import compare
    from meshai_evaluator.suite import load_suite

    for p in [args.model, args.baseline]:
        if p is not None and not p.is_file():
            raise NotFound(f"model file {p} does not exist")
    suite = load_suite(args.suite)
    cand = evaluate(args.model, suite)
    results = {"candidate": cand}
    rows = [("candidate", cand)]
    if args.baseline:
        base = evaluate(args.baseline, suite)
        results |= {"baseline": base, "comparison": compare(cand, base, args.threshold)}
        rows.insert(0, ("baseline", base))
    print(f"{'':<11}" + "".join(f"{a:>14}" for a in cand["areas"]) + f"{'overall':>10}{'p50 s':>8}")
    for label, r in rows:
        print(f"{label:<11}" + "".join(f"{v:>14.1f}" for v in r["areas"].values())
              + f"{r['overall']:>10.1f}{r['latency']['p50_s']:>8.2f}")
    if "comparison" in results:
        print(results["comparison"]["reason"])
    if args.output:
        write_results(args.output, results)
    return 0 if "comparison" not in results or results["comparison"]["promote"] else 3
