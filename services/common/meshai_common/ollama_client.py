"""Calling an Ollama-compatible `/api/generate` the way Mesh-Master does: one client for every caller that
asks a served model (the evaluator's HTTP asker, `meshai chat`), so they read a URL and a stream alike.

- `BOT_OPTIONS`: what the bot sends in `options` (reference: mesh-master.md, section 1; num_ctx: the typical 1024).
- `generate_url(url)`: an operator's `--url` (with or without `/api/generate`) -> the endpoint; a scheme is required.
- `stream_generate(...)`: POST with `stream: true` and yield each NDJSON line until `done: true`; a line with
  `error`, an HTTP error, an unreachable server or a line that is not JSON each raise, naming model and URL.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from meshai_common.errors import InvalidInput, MeshAIError, Unavailable

BOT_OPTIONS: dict[str, Any] = {"num_ctx": 1024, "num_predict": 80, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                               "repeat_penalty": 1.1}


def generate_url(url: str) -> str:
    """The `/api/generate` endpoint for a server address given as the bot's `ollama_url` or its base."""
    base = url.rstrip("/")
    for suffix in ("/api/generate", "/api"):
        base = base.removesuffix(suffix)
    if not base.startswith(("http://", "https://")):
        raise InvalidInput(f"--url must start with http:// or https://, got {url!r}")
    return base + "/api/generate"


def stream_generate(url: str, model: str, prompt: str, options: Mapping[str, Any], *,
                    api_key: str | None = None, timeout_s: float = 120.0) -> Iterator[dict[str, Any]]:
    """Each streamed line (a dict) of one generation at `url` (an /api/generate endpoint), the last one `done`."""
    label = f"{model} at {url}"
    body = json.dumps({"model": model, "prompt": prompt, "stream": True, "options": dict(options)}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - the operator's URL
            for raw in resp:
                if not raw.strip():
                    continue
                line = json.loads(raw)
                if line.get("error"):
                    raise Unavailable(f"{label}: {line['error']}")
                yield line
                if line.get("done"):
                    return
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise Unavailable(f"{label}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"{label}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise MeshAIError(f"{label}: a streamed line is not JSON: {exc}") from None
