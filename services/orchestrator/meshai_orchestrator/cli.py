"""`meshai`: the operator's command line.

    meshai up | down | status          the embedded stack (S3 + five services) on 127.0.0.1
    meshai pipeline run [...]          data -> train -> quantize -> eval -> promote, over gRPC
    meshai demo                        up + pipeline run + keep the gateway serving until Ctrl-C
    meshai runs show RUN_ID            a run's lineage, from its stage manifests
    meshai models list | show | rollback | export    the promoted models in the bucket
    meshai chat [--url URL] [--model NAME]           talk to a model as Mesh-Master asks it
    meshai data | train | eval | gateway ...   each service's own tools, locally, without the stack
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from meshai_common.errors import MeshAIError

log = logging.getLogger("meshai")


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home or os.environ.get("MESHAI_HOME") or ".meshai").resolve()


def _running_stack(home: Path):
    from meshai_orchestrator.stack import Stack, StackConfig, _alive

    if not (home / "stack.json").exists():
        return None
    cfg = StackConfig.load(home)
    if cfg.pids and all(_alive(p) for p in cfg.pids.values()):
        return Stack(cfg)
    return None


def _apply_stack_env(home: Path) -> None:
    """Let `meshai pipeline run` find a stack started by `meshai up` without exporting variables."""
    stack = _running_stack(home)
    if stack is not None:
        for k, v in stack.cfg.env().items():
            os.environ.setdefault(k, v)


# -- stack ------------------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from meshai_orchestrator.stack import Stack, StackConfig

    home = _home(args)
    if _running_stack(home):
        print(f"stack already running (state in {home}); `meshai status` shows it")
        return 0
    cfg = StackConfig(home=home)
    Stack(cfg).up()
    print(f"stack up: S3 {cfg.addr('s3')}, gateway http://{cfg.addr('http')}; logs in {home / 'logs'}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from meshai_orchestrator.stack import Stack, StackConfig

    home = _home(args)
    if not (home / "stack.json").exists():
        print("no stack state here; nothing to stop")
        return 0
    Stack(StackConfig.load(home)).down()
    print("stack stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from meshai_orchestrator.stack import Stack, StackConfig

    home = _home(args)
    if not (home / "stack.json").exists():
        print("no stack (run `meshai up`)")
        return 1
    status = Stack(StackConfig.load(home)).status()
    for name, state in status.items():
        print(f"  {name:<10} {state}")
    return 0 if status and all(s in {"SERVING", "200", "running", "503"} for s in status.values()) else 1


# -- pipeline ---------------------------------------------------------------------------------------


def _overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MeshAIError(f"--set {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def _pipeline(args: argparse.Namespace) -> dict:
    from meshai_common.store import ArtifactStore
    from meshai_orchestrator.pipeline import Addresses, Pipeline, PipelineOptions

    _apply_stack_env(_home(args))
    opts = PipelineOptions(
        archives=[Path(p) for p in args.archive or []],
        mailboxes=Path(args.mailboxes) if args.mailboxes else None,
        run_id=args.run_id or "",
        min_pairs=args.min_pairs,
        seed=args.seed,
        config=args.config,
        overrides=_overrides(args.set),
        qtype=args.qtype,
        model_name=args.model_name,
        threshold=args.threshold,
        suite=args.suite,
        full_eval=args.full_eval,
        margin=args.margin,
        max_hallucination_rate=args.max_hallucination_rate,
        max_area_drop=args.max_area_drop,
        reports_dir=_home(args) / "reports",
    )
    pipe = Pipeline(Addresses.from_env(), ArtifactStore.from_env())
    try:
        return pipe.run(opts)
    finally:
        pipe.close()


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from meshai_orchestrator.pipeline import format_summary

    summary = _pipeline(args)
    print(format_summary(summary, os.environ.get("MESHAI_GATEWAY_URL", "http://localhost:11434"), args.model_name))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0 if summary["promoted"] or not args.require_promotion else 3


def cmd_demo(args: argparse.Namespace) -> int:
    from meshai_orchestrator.pipeline import format_summary
    from meshai_orchestrator.stack import Stack, StackConfig

    home = _home(args)
    stack = _running_stack(home)
    started_here = stack is None
    if stack is None:
        stack = Stack(StackConfig(home=home))
        stack.up()
    try:
        summary = _pipeline(args)
        print(format_summary(summary, f"http://{stack.cfg.addr('http')}", args.model_name))
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2))
        if args.exit:
            return 0 if summary["promoted"] else 3
        print(f"\nGateway serving on http://{stack.cfg.addr('http')} (Ollama API). Press Ctrl-C to stop.")
        stop = threading.Event()
        # Both set explicitly: a shell starting the demo in the background leaves SIGINT ignored.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(1.0):
            pass
        return 0
    finally:
        if started_here:
            print("stopping the stack…")
            stack.down()


def _bucket(args: argparse.Namespace):
    """The bucket: the embedded stack's when `meshai up` runs one here, else the MESHAI_S3_* environment."""
    from meshai_common.store import ArtifactStore

    _apply_stack_env(_home(args))
    return ArtifactStore.from_env()


def _gateway_url(args: argparse.Namespace) -> str:
    """The gateway `meshai demo` prints: the embedded stack's, else $MESHAI_GATEWAY_URL, else Ollama's port."""
    _apply_stack_env(_home(args))
    return os.environ.get("MESHAI_GATEWAY_URL") or "http://127.0.0.1:11434"


def _gateway_key() -> str | None:
    from meshai_common.config import secret_from_env

    return secret_from_env("MESHAI_GATEWAY_API_KEY")


def cmd_runs_show(args: argparse.Namespace) -> int:
    from meshai_common.manifest import lineage

    manifests = lineage(_bucket(args), args.run_id)
    if not manifests:
        print(f"run {args.run_id!r} has no stage manifests", file=sys.stderr)
        return 1
    print(json.dumps(manifests, indent=2) if args.json else "\n".join(
        f"{m['stage']:<9} {len(m['inputs'])} in -> {len(m['outputs'])} out  "
        f"({', '.join(o['key'].rsplit('/', 1)[-1] for o in m['outputs'][:4])}"
        f"{'…' if len(m['outputs']) > 4 else ''})  code {m['code_version']}"
        for m in manifests))
    if not args.json:
        for m in manifests:
            for o in m["outputs"]:
                if o["key"].endswith("/report.html"):
                    print(f"evaluation report: {o['key']} (local copy: {_home(args) / 'reports' / (args.run_id + '.html')})")
    return 0


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archive", action="append", help="messages_archive.json file or folder (repeatable); "
                   "default: the sample archive shipped with the data service")
    p.add_argument("--mailboxes", help="mesh_mailboxes.json")
    p.add_argument("--run-id", help="resume or name a run (stages that succeeded are not run again)")
    p.add_argument("--min-pairs", type=int, default=0, help="dataset size (0: the data service's default)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--config", default="cpu-smollm2", help="trainer recipe name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe key (repeatable)")
    p.add_argument("--qtype", default="Q4_K_M", choices=["Q4_K_M", "Q5_K_M", "Q8_0", "F16"])
    p.add_argument("--model-name", default="mesh-ai")
    p.add_argument("--suite", default="field", help="evaluation suite the gate judges on (field, public)")
    p.add_argument("--full-eval", action="store_true", help="3 sampled passes, the F16 model (quantization loss) "
                   "and the whole test split; default: greedy + 1 sampled pass, 40 test-split examples")
    p.add_argument("--threshold", type=float, default=0.0, help="gate: absolute overall floor (0-100; 0: none)")
    p.add_argument("--margin", type=float, help="gate: points the candidate must beat production by (default 1)")
    p.add_argument("--max-hallucination-rate", type=float, help="gate: ceiling in percent of replies (default 0)")
    p.add_argument("--max-area-drop", type=float, help="gate: largest allowed drop of any area (default 10)")
    p.add_argument("--json", help="also write the summary as JSON to this file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshai", description="Mesh-AI: a radio-sized LLM for Mesh-Master")
    parser.add_argument("--home", help="stack state folder (default $MESHAI_HOME or ./.meshai)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("up", help="start the embedded stack on 127.0.0.1").set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the embedded stack").set_defaults(func=cmd_down)
    sub.add_parser("status", help="health of the embedded stack").set_defaults(func=cmd_status)

    pipe = sub.add_parser("pipeline", help="run the training pipeline").add_subparsers(dest="pipeline_cmd",
                                                                                      required=True)
    run = pipe.add_parser("run", help="data -> train -> quantize -> eval -> promote")
    _add_pipeline_args(run)
    run.add_argument("--require-promotion", action="store_true", help="exit 3 if the candidate is not promoted")
    run.set_defaults(func=cmd_pipeline_run)

    demo = sub.add_parser("demo", help="start the stack, run the pipeline, serve until Ctrl-C")
    _add_pipeline_args(demo)
    demo.add_argument("--exit", action="store_true", help="stop after the pipeline instead of serving")
    demo.set_defaults(func=cmd_demo)

    runs = sub.add_parser("runs", help="inspect runs").add_subparsers(dest="runs_cmd", required=True)
    show = runs.add_parser("show", help="a run's lineage from its manifests")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_runs_show)

    from meshai_orchestrator.chat import register as register_chat
    from meshai_orchestrator.models_cli import register as register_models

    register_models(sub, _bucket, lambda args: _home(args) / "reports")
    register_chat(sub, _gateway_url, _gateway_key)

    # Each service contributes its own local tools.
    from meshai_data.cli import register as register_data
    from meshai_evaluator.cli import register as register_eval
    from meshai_gateway.cli import register as register_gateway
    from meshai_trainer.cli import register as register_train

    for register in (register_data, register_train, register_eval, register_gateway):
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("MESHAI_LOG_LEVEL", "WARNING").upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries while S3 starts are expected, not news
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MeshAIError as exc:
        print(f"meshai: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("meshai: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
