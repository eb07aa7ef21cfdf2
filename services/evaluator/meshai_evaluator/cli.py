"""`meshai eval run`: score a model exactly as Mesh-Master asks it.

    meshai eval run --url http://127.0.0.1:11434 --model mesh-ai      any Ollama-compatible server, over HTTP
    meshai eval run --model FILE.gguf [--modelfile F] [--baseline FILE.gguf]   local files, through the gateway's core

--suite field (default) | fresh | public | test (with --test-split FILE: the data service's test.jsonl) | a YAML path.
Greedy plus --seeds sampled passes at the bot's sampling; prints mean and spread; --json writes every item with its
reply and verdict, --report a self-contained HTML report. With --baseline the promotion gate is applied.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("eval", help="evaluate a model as Mesh-Master asks it"
                               ).add_subparsers(dest="eval_cmd", required=True)
    r = ev.add_parser("run", help="run a suite on a model (and a baseline) and print the comparison")
    r.add_argument("--url", help="an Ollama-compatible server (the gateway, a real Ollama); --model is then a name")
    r.add_argument("--model", required=True, help="a GGUF file, or with --url the model name to ask for")
    r.add_argument("--modelfile", type=Path, help="the local model's Modelfile (SYSTEM, parameters, grounding)")
    r.add_argument("--baseline", help="a GGUF file, or with --url another model name on the same server")
    r.add_argument("--suite", default="field", help="field (default), fresh, public, test, or a suite YAML file")
    r.add_argument("--test-split", type=Path, help="test.jsonl from `meshai data prepare` (for --suite test)")
    r.add_argument("--seeds", type=int, default=3, help="sampled passes besides the greedy one (default 3)")
    r.add_argument("--threshold", type=float, default=0.0, help="gate: absolute overall floor (0: none)")
    r.add_argument("--margin", type=float, default=1.0, help="gate: points the model must beat the baseline by")
    r.add_argument("--max-hallucination-rate", type=float, default=0.0, help="gate: ceiling, percent of replies")
    r.add_argument("--max-area-drop", type=float, default=10.0, help="gate: largest allowed area drop")
    r.add_argument("--no-constrain", action="store_true",
                   help="local models: decode without the command grammar (to measure what it does)")
    r.add_argument("--api-key", help="the server's API key, when it has one")
    r.add_argument("--json", "--output", dest="json", type=Path, help="write results.json here")
    r.add_argument("--report", type=Path, help="write the HTML report here")
    r.set_defaults(func=cmd_run)


def _items(args: argparse.Namespace) -> tuple[dict[str, Any], list[Any]]:
    from meshai_common.errors import InvalidInput
    from meshai_evaluator.suite import load_suite, questions
    from meshai_evaluator.test_split import test_split_questions

    if args.suite == "test":
        if not args.test_split:
            raise InvalidInput("--suite test needs --test-split FILE (test.jsonl from `meshai data prepare`)")
        return {"name": "test", "version": str(args.test_split)}, test_split_questions(args.test_split)
    suite = load_suite(args.suite)
    return {"name": suite.get("name"), "version": suite.get("version")}, questions(suite)


def _asker(args: argparse.Namespace, model: str, modelfile: Path | None) -> Any:
    from meshai_evaluator.askers import HttpAsker, LocalAsker

    if args.url:
        return HttpAsker(args.url, model, api_key=args.api_key)
    return LocalAsker.from_files(Path(model), modelfile, constrain_commands=not args.no_constrain)


def cmd_run(args: argparse.Namespace) -> int:
    from meshai_common.errors import InvalidInput
    from meshai_evaluator.askers import BOT_OPTIONS
    from meshai_evaluator.gate import GatePolicy, decide
    from meshai_evaluator.report import render
    from meshai_evaluator.runner import evaluate, write_results

    if not 0 <= args.seeds <= 10:
        raise InvalidInput(f"--seeds must be within 0-10, got {args.seeds}")
    policy = GatePolicy(margin=args.margin, max_hallucination_rate=args.max_hallucination_rate,
                        max_area_drop=args.max_area_drop, floor=args.threshold)
    suite, items = _items(args)
    models: dict[str, dict[str, Any]] = {}
    for name, model, mf in [("candidate", args.model, args.modelfile), ("base", args.baseline, None)]:
        if model is None:
            continue
        asker = _asker(args, model, mf)
        try:
            models[name] = evaluate(asker, items, seeds=args.seeds, label=name)
        finally:
            asker.close()
    results: dict[str, Any] = {"run_id": "local", "suite": suite, "options": BOT_OPTIONS, "seeds": args.seeds,
                               "models": models, "gate": None}
    if "base" in models:
        results["gate"] = decide(models["candidate"], models["base"], "base", policy)
    print(format_table(models))
    if results["gate"]:
        print(results["gate"]["reason"])
    if args.json:
        write_results(args.json, results)
        print(f"results: {args.json}")
    if args.report:
        args.report.write_text(render(results), encoding="utf-8")
        print(f"report: {args.report}")
    return 0 if results["gate"] is None or results["gate"]["promote"] else 3


def format_table(models: dict[str, dict[str, Any]]) -> str:
    from meshai_evaluator.scoring import AREAS as areas

    lines = [f"{'':<14}" + "".join(f"{a:>14}" for a in areas) + f"{'overall':>10}{'halluc.%':>10}{'p50 s':>8}"]
    for label, r in models.items():
        lines.append(f"{label:<14}" + "".join(f"{r['areas'][a]:>14.1f}" for a in areas)
                     + f"{r['overall']:>10.1f}{r['hallucinated_command_rate']:>10.1f}"
                     + f"{r.get('latency', {}).get('p50_s', 0.0):>8.2f}")
        sd = r.get("spread", {})
        if sd and len(r.get("passes", [])) > 1:
            lines.append(f"{'  ± sd':<14}" + "".join(f"{sd[a]['sd']:>14.1f}" for a in areas)
                         + f"{sd['overall']['sd']:>10.1f}{sd['hallucinated_command_rate']['sd']:>10.1f}")
    return "\n".join(lines)
