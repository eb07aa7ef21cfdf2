"""One loaded version of the served model: the generation core (meshai_common.inference) on a pool of
llama.cpp instances, with reference counting so that a hot swap never cuts a running generation.

Nothing here knows HTTP. `Engine.prepare` checks a request and builds its prompt (cheap; errors become 400s
before any byte is sent); `Engine.run` generates on a free instance, yielding TextDelta events and one
GenerationResult. A llama_cpp.Llama is not thread-safe, so each generation checks out one instance for
itself; an Engine holds `num_instances` of them (one by default). `model_manager.ModelManager` swaps them.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from meshai_common.errors import InvalidInput, Unavailable
from meshai_common.inference import (
    GenerationCore,
    GenerationRequest,
    GenerationResult,
    PreparedRequest,
    RadioBudget,
    TextDelta,
    TokenBackend,
)
from meshai_common.inference.core import resolve_grounder
from meshai_gateway.model_source import ModelInfo
from meshai_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# llama.cpp file types (general.file_type) as Ollama names them.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}

class Lifecycle:
    """Reference counting for a loaded model: a retired version is unloaded when its last user lets go.

    Generation runs on an instance checked out of a pool (`instance()`); unloading takes every instance
    back first, so it waits for generations still running."""

    def __init__(self, instances: Sequence[Any] | None = None) -> None:
        self._lock = threading.Lock()  # serializes close()
        self._state_lock = threading.Lock()
        self._users = 0
        self._retired = False
        self._closed = False
        self._all = list(instances) if instances else [None]
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for inst in self._all:
            self._free.put(inst)

    @property
    def num_instances(self) -> int:
        return len(self._all)

    @contextmanager
    def instance(self) -> Iterator[Any]:
        """One model instance for one generation (waits while all are busy)."""
        inst = self._free.get()
        try:
            if self._closed:
                raise Unavailable("that model version was unloaded")
            yield inst
        finally:
            self._free.put(inst)

    @property
    def closed(self) -> bool:
        return self._closed

    def acquire(self) -> None:
        with self._state_lock:
            if self._closed:
                raise Unavailable("that model version was unloaded")
            self._users += 1

    def release(self) -> None:
        with self._state_lock:
            self._users -= 1
            close = self._retired and self._users == 0
        if close:
            self.close()

    def retire(self) -> None:
        """A newer version took over: close once the last request using this one is done."""
        with self._state_lock:
            self._retired = True
            close = self._users == 0
        if close:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            taken = [self._free.get() for _ in self._all]  # waits for running generations to end
            try:
                self._unload()
            finally:
                for inst in taken:  # a late generation then fails with "unloaded", it does not hang
                    self._free.put(inst)

    def _unload(self) -> None:
        raise NotImplementedError


def load_llama(info: ModelInfo, settings: GatewaySettings) -> list[TokenBackend]:
    """The served GGUF as `num_instances` llama.cpp instances."""
    from meshai_common.inference.llama_backend import open_backends

    wanted_ctx = max(settings.num_ctx, int(info.parameters.get("num_ctx", 0) or 0))
    return list(open_backends(info.path, instances=settings.num_instances, n_ctx=wanted_ctx,
                              n_threads=settings.num_threads, n_batch=settings.num_batch,
                              use_mmap=settings.use_mmap, name=info.name))


BackendLoader = Callable[[ModelInfo, GatewaySettings], Sequence[TokenBackend]]


class Engine(Lifecycle):
    """One loaded model version. Thread-safe: each generation runs on an instance (a TokenBackend) of its
    own; more generations wait for a free instance. `load` makes the instances: llama.cpp by default
    (`load_llama`), scripted token backends in tests; everything else (the core) is the same."""

    def __init__(self, info: ModelInfo, settings: GatewaySettings, load: BackendLoader = load_llama) -> None:
        self.info = info
        self.settings = settings
        started = time.perf_counter_ns()
        backends = list(load(info, settings))
        try:
            spec = info.modelfile.extensions.get("grounding") if settings.grounding != "off" else None
            self.core = GenerationCore(backends[0], info.modelfile, settings.core(), resolve_grounder(spec))
        except BaseException:
            for backend in backends:
                backend.close()
            raise
        super().__init__(backends)
        self.backends = backends
        self.load_ns = time.perf_counter_ns() - started
        self.loaded_at = time.time()
        self.metadata = dict(backends[0].metadata)  # the same in every instance
        self.n_ctx = backends[0].n_ctx
        self.chat_template = self.core.chat_template
        if self.core.grounder is not None:
            log.info("model %s: prompts are grounded (grounding=%s)", info.name, spec)

    # -- facts -----------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "llama")

    @property
    def default_system(self) -> str:
        return self.core.default_system

    def details(self) -> dict[str, Any]:
        ftype = self.metadata.get("general.file_type", "")
        quant = FILE_TYPES.get(int(ftype), f"type{ftype}") if ftype.isdigit() else "unknown"
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.architecture,
            "families": [self.architecture],
            "parameter_size": self.metadata.get("general.size_label", ""),
            "quantization_level": quant,
        }

    def model_info(self) -> dict[str, Any]:
        """GGUF key/values for /api/show (the chat template is shown separately)."""
        return {k: _number(v) for k, v in self.metadata.items() if not k.startswith("tokenizer.chat_template")}

    # -- requests --------------------------------------------------------------------------------------

    def budget_for(self, options: Mapping[str, Any]) -> RadioBudget:
        return self.core.budget_for(options)

    def render_prompt(self, req: GenerationRequest) -> str:
        return self.core.render_prompt(req)

    def check_prompt_size(self, req: GenerationRequest) -> None:
        """Refuse prompts over the deployment's limit before spending CPU on templates and tokenizing."""
        limit = self.settings.max_prompt_chars
        size = (len(req.prompt or "") + len(req.system or "") + len(req.template or "")
                + sum(len(m.content) for m in req.messages))
        if size > limit:
            raise InvalidInput(f"prompt is {size} characters; the limit is {limit} "
                               "(max_prompt_chars, MESHAI_MAX_PROMPT_CHARS)")

    def prepare(self, req: GenerationRequest) -> PreparedRequest:
        """Check options, render and tokenize the prompt. Raises InvalidInput (a 400) on bad requests."""
        self.check_prompt_size(req)
        return self.core.prepare(req)

    def run(self, prep: PreparedRequest, cancel: threading.Event | None = None
            ) -> Iterator[TextDelta | GenerationResult]:
        """Generate on a free instance (see GenerationCore.run)."""
        with self.instance() as backend:
            yield from self.core.run(prep, cancel, backend=backend)

    def _unload(self) -> None:
        for backend in self._all:
            backend.close()
        release_freed_memory()
        log.info("unloaded model %s (sha256 %s)", self.name, self.info.sha256[:12])


def release_freed_memory() -> None:
    """Give pages freed by an unloaded (or refused) model back to the OS. glibc keeps freed heap for reuse:
    measured with SmolLM2-135M, resident memory went 239 -> 258 MiB after one swap and 268 MiB after eight
    without this, and stayed at 240-245 MiB with it."""
    with suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


EngineFactory = Callable[[ModelInfo, GatewaySettings], Engine]
