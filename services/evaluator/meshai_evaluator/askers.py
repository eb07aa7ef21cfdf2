"""Who answers the suite: a local GGUF through the gateway's own generation core, or any Ollama-compatible server
over HTTP. Both are asked exactly as Mesh-Master asks: its prompt shape, its options, streaming.

- `LocalAsker` opens the GGUF with `meshai_common.inference.local.LocalModel`: the same template rendering,
  Modelfile parameters, grounding, command constraint and radio budget the gateway serves with.
- `HttpAsker` POSTs `/api/generate` with `stream: true` and concatenates the NDJSON `response` fields until
  `done: true`, as the bot does; a line with `error` is an error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from meshai_common.errors import InvalidInput
from meshai_common.modelfile import Modelfile, parse_modelfile
from meshai_common.ollama_client import BOT_OPTIONS, generate_url, stream_generate

__all__ = ["BOT_OPTIONS", "Asker", "HttpAsker", "LocalAsker", "Reply"]



@dataclass(frozen=True)
class Reply:
    text: str
    latency_s: float  # request sent -> last byte
    first_token_s: float | None  # request sent -> first text (streaming only)
    tokens: int  # completion tokens, when the server says


class Asker(Protocol):
    label: str  # what was asked: a file name or "NAME at URL"
    identity: str  # what makes its replies what they are (model digest, settings): the reply cache's key part

    def ask(self, prompt: str, options: Mapping[str, Any]) -> Reply: ...

    def close(self) -> None: ...


class LocalAsker:
    """A GGUF file through the generation core the gateway serves with."""

    def __init__(self, gguf: Path, modelfile: Modelfile | None = None, *, n_threads: int = 0,
                 constrain_commands: bool = True, sha256: str = "") -> None:
        from meshai_common.inference.local import LocalModel
        from meshai_common.store import sha256_file

        self.gguf = Path(gguf)
        if not self.gguf.is_file():
            raise InvalidInput(f"model file {self.gguf} does not exist")
        self.modelfile = modelfile or Modelfile()
        self.label = self.gguf.name
        digest = sha256 or sha256_file(self.gguf)
        ext = ",".join(f"{k}={v}" for k, v in sorted(self.modelfile.extensions.items()))
        params = json.dumps(self.modelfile.parameters, sort_keys=True)
        self.identity = f"gguf:{digest}|system:{self.modelfile.system!r}|params:{params}|ext:{ext}" \
                        f"|constrain:{constrain_commands}"
        self._model = LocalModel.open(self.gguf, self.modelfile, n_ctx=int(BOT_OPTIONS["num_ctx"]),
                                      n_threads=n_threads, constrain_commands=constrain_commands)

    @classmethod
    def from_files(cls, gguf: Path, modelfile_path: Path | None = None, **kw: Any) -> LocalAsker:
        mf = parse_modelfile(Path(modelfile_path).read_text(), str(modelfile_path)) if modelfile_path else None
        return cls(gguf, mf, **kw)

    def ask(self, prompt: str, options: Mapping[str, Any]) -> Reply:
        t0 = time.perf_counter()
        result = self._model.generate(prompt, options)
        dt = time.perf_counter() - t0
        first = result.prompt_eval_ns / 1e9 if result.prompt_eval_ns else None
        return Reply(text=result.text, latency_s=dt, first_token_s=first, tokens=result.completion_tokens)

    def close(self) -> None:
        self._model.close()


class HttpAsker:
    """Any Ollama-compatible endpoint (the gateway, a real Ollama), called the way the bot calls it."""

    def __init__(self, url: str, model: str, *, timeout_s: float = 120.0, api_key: str | None = None) -> None:
        self.url = generate_url(url)
        base = self.url.removesuffix("/api/generate")
        self.model = model
        self.timeout_s = timeout_s
        self.api_key = api_key
        self.label = f"{model} at {base}"
        self.identity = ""  # a remote model can change under the same name: its replies are never cached

    def ask(self, prompt: str, options: Mapping[str, Any]) -> Reply:
        t0 = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        tokens = 0
        for line in stream_generate(self.url, self.model, prompt, options, api_key=self.api_key,
                                    timeout_s=self.timeout_s):
            text = line.get("response", "")
            if text and first is None:
                first = time.perf_counter() - t0
            parts.append(text)
            if line.get("done"):
                tokens = int(line.get("eval_count", 0) or 0)
        return Reply(text="".join(parts), latency_s=time.perf_counter() - t0, first_token_s=first, tokens=tokens)

    def close(self) -> None:
        pass
