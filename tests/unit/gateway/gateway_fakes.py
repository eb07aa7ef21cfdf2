"""Test doubles for the gateway: a model source and an engine that replays scripted text (no model)."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from meshai_common.errors import NotFound
from meshai_common.modelfile import Modelfile  # noqa: F401  (re-exported for tests)
from meshai_gateway.engine import Engine, Lifecycle, PreparedRequest, _Progress
from meshai_gateway.model_source import ModelInfo, ModelSource
from meshai_gateway.settings import GatewaySettings


class FakeSource(ModelSource):
    def __init__(self, path: Path, name: str = "mesh-ai", version: str = "v1",
                 modelfile: Modelfile | None = None) -> None:
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


class ScriptedEngine(Engine):
    """Replays `script` piece by piece (one "token" each), `delay_s` apart; records prompts it was given."""

    script: list[str] = ["Use /nodes to see nodes heard in the last 24 hours."]
    delay_s: float = 0.0
    instances: list[ScriptedEngine] = []

    def __init__(self, info: ModelInfo, settings: GatewaySettings) -> None:
        # Placeholders stand for the llama.cpp instances a real Engine loads.
        Lifecycle.__init__(self, [f"instance-{i}" for i in range(settings.num_instances)])
        self.info = info
        self.settings = settings
        self.load_ns = 1_000
        self.loaded_at = time.time()
        self.metadata = {"general.architecture": "llama", "general.file_type": "15",
                         "general.size_label": "135M", "llama.context_length": "8192"}
        self.n_ctx = 512
        self.chat_template = None
        self.bos_text = ""
        self._grammars = {}
        self._grammar_lock = threading.Lock()
        self.prompts: list[str] = []
        self.unloaded = False
        self.started = threading.Event()
        ScriptedEngine.instances.append(self)

    def _tokenize(self, prompt: str) -> list[int]:
        self.prompts.append(prompt)
        return list(range(len(prompt.split()) + 1))

    def _pieces(self, llama: object, prep: PreparedRequest, cancel: threading.Event, progress: _Progress):
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

    def _check_grammar(self, grammar: object) -> None:
        pass  # no llama.cpp vocabulary here; the real check runs in the integration tests

    def _unload(self) -> None:
        self.unloaded = True


def scripted(script: list[str], delay_s: float = 0.0) -> type[ScriptedEngine]:
    return type("Scripted", (ScriptedEngine,), {"script": script, "delay_s": delay_s})


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
