"""`meshai gateway --model PATH`: serve a local GGUF over Ollama's API on loopback.

The `meshai` CLI calls register(subparsers) and then `args.func(args)`, which returns the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from meshai_common.errors import MeshAIError
from meshai_common.logs import setup_logging
from meshai_gateway.auth import warn_if_open
from meshai_gateway.model_source import LocalFileSource, ModelSource, check_gguf
from meshai_gateway.settings import GatewaySettings, read_api_key

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "gateway", help="serve a GGUF model over Ollama's API (drop-in for Mesh-Master)",
        description="Serve a GGUF over Ollama's HTTP API (/api/generate, /api/chat, /api/tags, ...) and the "
                    "OpenAI chat API, keeping every reply within the radio budget.",
    )
    p.add_argument("--model", required=True, type=Path, help="GGUF file to serve")
    p.add_argument("--name", default="mesh-ai", help="model name clients ask for (default: mesh-ai)")
    p.add_argument("--alias", action="append", default=[], metavar="NAME",
                   help="another name accepted for the model, e.g. the bot's default llama3.2:1b (repeatable)")
    p.add_argument("--modelfile", type=Path, default=None,
                   help="Modelfile with SYSTEM/PARAMETER defaults (default: <model>.Modelfile or Modelfile "
                        "next to the GGUF, if present)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=11434, help="port (default: 11434, Ollama's)")
    p.add_argument("--chunk-bytes", type=int, default=None, help="radio chunk size in UTF-8 bytes (default 160)")
    p.add_argument("--max-chunks", type=int, default=None,
                   help="radio chunks a reply may take (default 2; 0 turns the budget off)")
    p.add_argument("--num-ctx", type=int, default=None, help="context size to load the model with (default 2048)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--instances", type=int, default=None, metavar="N",
                   help="model instances generating at once, the threads split among them (default 1)")
    p.add_argument("--max-queue", type=int, default=None, help="requests that may wait for the model (default 8)")
    p.add_argument("--constrain-commands", choices=["on", "off"], default=None,
                   help="radio replies may only name commands of the catalog, enforced while sampling "
                        "(default on; MESHAI_CONSTRAIN_COMMANDS)")
    p.add_argument("--grounding", choices=["auto", "off"], default=None,
                   help="auto: ground prompts when the Modelfile says the model was trained so (default auto; "
                        "MESHAI_GROUNDING)")
    p.add_argument("--api-key-file", type=Path, default=None, metavar="FILE",
                   help="require `Authorization: Bearer <key>` on every route but /healthz and /readyz, the key "
                        "read from FILE (default: the MESHAI_API_KEY variable, if set; else no key)")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                   help="re-check the model file this often and hot-swap it when it changes")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)
    return p


def serve(settings: GatewaySettings, source: ModelSource, host: str = "127.0.0.1", port: int = 11434,
          log_level: str = "info") -> None:
    """Run the gateway with uvicorn until interrupted (SIGTERM/SIGINT drain in-flight requests)."""
    import uvicorn

    from meshai_gateway.app import create_app

    app = create_app(settings, source)
    log.info("gateway for %s (%s) on http://%s:%d%s", source.name, source.describe(), host, port,
             ", API key required" if settings.api_key else "")
    warn_if_open(host, settings.api_key)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn drains, then re-raises the Ctrl-C it caught
        uvicorn.run(app, host=host, port=port, log_level=log_level, log_config=None, access_log=False,
                    timeout_graceful_shutdown=30)


def run(args: argparse.Namespace) -> int:
    setup_logging("gateway", args.log_level)
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2
    try:
        api_key = (read_api_key(args.api_key_file) if args.api_key_file
                   else os.environ.get("MESHAI_API_KEY", "").strip() or None)
        # The environment's settings (as documented for the service), then the flags given here.
        settings = GatewaySettings.from_env().with_overrides(
            model_name=args.name, aliases=tuple(args.alias) or None, chunk_bytes=args.chunk_bytes, max_chunks=args.max_chunks,
            num_ctx=args.num_ctx, num_threads=args.threads, num_instances=args.instances,
            max_queue=args.max_queue, api_key=api_key, grounding=args.grounding,
            constrain_commands=None if args.constrain_commands is None else args.constrain_commands == "on",
        )
        check_gguf(args.model.expanduser())
        source = LocalFileSource(args.model, args.name, modelfile=args.modelfile, poll_interval_s=args.watch)
        source.current()  # fail now, with the reason, rather than after the server is up
    except MeshAIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(settings, source, args.host, args.port, args.log_level)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m meshai_gateway.cli --model PATH ...`: the same command without the rest of `meshai`."""
    parser = argparse.ArgumentParser(prog="meshai")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["gateway", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
