"""Test doubles for the gateway: a model source, and a token backend that replays scripted text (no model).

ScriptedBackend plugs into the generation core exactly where LlamaBackend does, so the gateway's Engine and
everything above it run for real: only the tokens are made up.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

from meshai_common.errors import NotFound
from meshai_common.inference import DecodeProgress, PreparedRequest
from meshai_common.inference.llama_backend import format_grammar
from meshai_common.modelfile import Modelfile
from meshai_gateway.engine import Engine
from meshai_gateway.model_source import ModelInfo, ModelSource
from meshai_gateway.settings import GatewaySettings

__all__ = ["FakeSource", "Modelfile", "Scripted", "ScriptedBackend", "scripted", "words"]


class FakeSource(ModelSource):
    def __init__(self, path, name: str = "mesh-ai", version: str = "v1", modelfile: Modelfile | None = None) -> None:
        self.path = path
        self.name = name
        self.version = version
        self.modelfile = modelfile or Modelfile()
        self.fail: str | None = None
        self.poll_interval_s = None

    def current(self, progress=None) -> ModelInfo:
        if self.fail:
            raise NotFound(self.fail)
        sha = hashlib.sha256(self.version.encode()).hexdigest()
        return ModelInfo(name=self.name, path=self.path, sha256=sha, size=1234, modified_at=1_700_000_000.0,
                         modelfile=self.modelfile)


class ScriptedBackend:
    """Replays `script` piece by piece (one "token" each), `delay_s` apart. Records the prompts it tokenized
    and every prepared request it generated for."""

    n_ctx = 512
    bos_text = ""
    eos_text = ""
    chat_template_source: str | None = None

    def __init__(self, script: list[str], delay_s: float = 0.0, name: str = "instance-0") -> None:
        self.script = list(script)
        self.delay_s = delay_s
        self.name = name
        self.metadata = {"general.architecture": "llama", "general.file_type": "15",
                         "general.size_label": "135M", "llama.context_length": "8192"}
        self.prompts: list[str] = []
        self.generated: list[PreparedRequest] = []
        self.started = threading.Event()
        self.closed = False

    def tokenize(self, text: str) -> list[int]:
        self.prompts.append(text)
        return list(range(len(text.split()) + 1))

    def check_format(self, spec) -> None:
        format_grammar(spec)  # the real schema converter; the vocabulary check needs a model (integration tests)

    def pieces(self, prep: PreparedRequest, cancel: threading.Event, progress: DecodeProgress) -> Iterator[str]:
        self.generated.append(prep)
        self.started.set()
        for piece in self.script:
            if progress.first_ns is None:
                progress.first_ns = time.perf_counter_ns()
            if cancel.is_set():
                progress.reason = "cancelled"
                return
            progress.n_out += 1
            yield piece
            if progress.n_out >= prep.max_tokens:
                progress.reason = "length"
                return
            if self.delay_s:
                time.sleep(self.delay_s)
        progress.reason = "stop"

    def close(self) -> None:
        self.closed = True


class Scripted:
    """An EngineFactory: real Engines on ScriptedBackends (one per configured instance). Keeps the engines
    it made."""

    def __init__(self, script: list[str], delay_s: float = 0.0, backend: type[ScriptedBackend] = ScriptedBackend,
                 ) -> None:
        self.script = script
        self.delay_s = delay_s
        self.backend = backend
        self.engines: list[Engine] = []

    def backends(self, info: ModelInfo, settings: GatewaySettings) -> list[ScriptedBackend]:
        return [self.backend(self.script, self.delay_s, f"instance-{i}") for i in range(settings.num_instances)]

    def __call__(self, info: ModelInfo, settings: GatewaySettings) -> Engine:
        engine = Engine(info, settings, load=self.backends)
        self.engines.append(engine)
        return engine


def scripted(script: list[str], delay_s: float = 0.0) -> Scripted:
    return Scripted(script, delay_s)


def prompts(engine: Engine) -> list[str]:
    """Every prompt the engine tokenized (prepare tokenizes on its first instance)."""
    return engine.backends[0].prompts


def words(text: str) -> list[str]:
    """Split text into token-like pieces that keep their leading space."""
    out, cur = [], ""
    for ch in text:
        if ch == " " and cur:
            out.append(cur)
            cur = ""
        cur += ch
    if cur:
        out.append(cur)
    return out
