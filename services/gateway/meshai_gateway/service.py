"""The async face of the engine, shared by every API family: name checks, admission, running a generation
in a worker thread, and stopping it when the client goes away."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing

from starlette.requests import Request

from meshai_common.errors import InvalidInput, MeshAIError, NotFound
from meshai_common.inference import GenerationRequest, GenerationResult, PreparedRequest, TextDelta
from meshai_gateway.bridge import ThreadToLoop
from meshai_gateway.engine import Engine
from meshai_gateway.metrics import GatewayMetrics
from meshai_gateway.model_manager import ModelManager
from meshai_gateway.scheduler import Lease, Overloaded, Scheduler
from meshai_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


# Ollama's model references: [host/][namespace/]model[:tag], letters, digits, '_', '.', '-'. Anything else
# (path tricks, control characters, megabyte names) is refused before it is looked up or echoed back.
MODEL_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*){0,2}(:[A-Za-z0-9_][A-Za-z0-9_.\-]*)?")
MAX_MODEL_REF = 256


def base_name(name: str) -> str:
    """Ollama model names are name[:tag]; the tag is informational here ("mesh-ai" == "mesh-ai:latest")."""
    return name.strip().lower().split(":", 1)[0]


def check_model_ref(name: str | None) -> str:
    """The requested model name, stripped; InvalidInput when missing or not a model name."""
    if not name or not name.strip():
        raise InvalidInput("model is required")
    name = name.strip()
    if len(name) > MAX_MODEL_REF or not MODEL_REF.fullmatch(name) or ".." in name:
        shown = name[:40] + ("..." if len(name) > 40 else "")
        raise InvalidInput(f"invalid model name {shown!r}: use [namespace/]name[:tag] with letters, digits, "
                           "'_', '.' or '-'")
    return name


class ClientGone(Exception):
    """The client disconnected before its non-streaming reply was ready."""


# Streamed text reaches the client in batches at most this far apart (plus one token): the first piece goes
# at once, so time to first token is unchanged, and 40 ms is below what a reader of a stream notices.
FLUSH_S = 0.04


class Generation:
    """One admitted generation. Iterate events() once; call close() when the response is done."""

    def __init__(self, engine: Engine, prep: PreparedRequest, lease: Lease, executor: ThreadPoolExecutor,
                 metrics: GatewayMetrics, received_ns: int) -> None:
        self.engine = engine
        self.prep = prep
        self.lease = lease
        self.executor = executor
        self.metrics = metrics
        self.received_ns = received_ns
        self.admitted_ns = time.perf_counter_ns()
        self.cancel = threading.Event()
        self.result: GenerationResult | None = None
        self._future: asyncio.Future[None] | None = None
        self._finished = False
        self._abandoned = False

    @property
    def model(self) -> str:
        return self.engine.name

    async def batches(self) -> AsyncIterator[list[TextDelta | GenerationResult]]:
        """The generation's events in batches: the first text at once, then whatever arrived in the last
        FLUSH_S, the result last. One event-loop wake-up and one write per batch, not per token: on a small
        CPU every wake-up is time taken from llama.cpp's threads."""
        feed = ThreadToLoop(coalesce_s=FLUSH_S)

        def work() -> None:
            first = True
            for event in self.engine.run(self.prep, self.cancel):
                if not feed.put(event, urgent=first or isinstance(event, GenerationResult)):
                    self.cancel.set()  # the loop is gone (shutdown): nobody is listening
                first = False

        self._future = asyncio.get_running_loop().run_in_executor(self.executor, feed.run, work)
        # The slot and the engine are freed when the worker really stops, not when the client leaves.
        self._future.add_done_callback(lambda _f: self.lease.release())
        first = True
        try:
            async for batch in feed.batches():
                for item in batch:
                    if first:
                        first = False
                        self.metrics.ttft.observe((time.perf_counter_ns() - self.admitted_ns) / 1e9)
                    if isinstance(item, GenerationResult):
                        self.result = item
                        self._record(item)
                yield batch
        finally:
            self._finished = feed.ended
            if not feed.ended:
                self._abandon()

    async def events(self) -> AsyncIterator[TextDelta | GenerationResult]:
        """The events one by one (for consumers that do not write per batch)."""
        async with aclosing(self.batches()) as batches:
            async for batch in batches:
                for event in batch:
                    yield event

    def _abandon(self) -> None:
        """The client is gone before the end: stop the worker (it checks between tokens), count it once."""
        self.cancel.set()
        if self.result is None and not self._abandoned:
            self._abandoned = True
            self.metrics.disconnects.inc()

    def _record(self, r: GenerationResult) -> None:
        m = self.metrics
        m.prompt_tokens.inc(r.prompt_tokens)
        m.completion_tokens.inc(r.completion_tokens)
        m.generations.labels(done_reason=r.done_reason).inc()
        if r.completion_tokens and r.eval_ns > 0:
            m.tokens_per_s.observe(r.tokens_per_s)
        if r.trimmed:
            m.trims.inc()
        if r.budget_stop:
            m.budget_stops.inc()
        if r.chunks:
            m.reply_chunks.observe(len(r.chunks))

    def close(self) -> None:
        """Free the slot if the work never started (e.g. the client left before the first byte)."""
        if self._future is None:
            self.lease.release()
        elif not self._finished:
            self._abandon()

    def durations(self) -> dict[str, int]:
        """Ollama's timing fields, integer nanoseconds. load_duration is the wait before generation could
        start (the model is resident, so this is admission and prompt preparation)."""
        r = self.result
        return {
            "total_duration": time.perf_counter_ns() - self.received_ns,
            "load_duration": max(0, self.admitted_ns - self.received_ns),
            "prompt_eval_count": r.prompt_tokens if r else 0,
            "prompt_eval_duration": r.prompt_eval_ns if r else 0,
            "eval_count": r.completion_tokens if r else 0,
            "eval_duration": r.eval_ns if r else 0,
        }


class GenerationService:
    def __init__(self, manager: ModelManager, settings: GatewaySettings, metrics: GatewayMetrics,
                 served_name: str) -> None:
        self.manager = manager
        self.settings = settings
        self.metrics = metrics
        self.served_name = served_name
        self.names = {base_name(served_name), *(base_name(a) for a in settings.aliases)}
        slots = settings.generation_slots
        self.scheduler = Scheduler(slots, settings.max_queue, settings.queue_timeout_s,
                                   on_change=metrics.queue_changed)
        # Exactly one thread per slot, so generations keep running on the same threads: llama.cpp's CPU
        # backend (OpenMP) keeps a team of worker threads per calling thread, and a spare executor thread that
        # took every other request gave the model two teams fighting over the cores (25-40 % slower decoding
        # on 2 cores, measured with services/gateway/benchmarks/bench_latency.py).
        self.executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="generate")

    def serves(self, name: str) -> bool:
        return base_name(name) in self.names

    def check_model(self, name: str | None) -> None:
        name = check_model_ref(name)
        if not self.serves(name):
            raise NotFound(f"model '{name}' not found")

    def engine(self, name: str | None) -> Engine:
        self.check_model(name)
        return self.manager.engine()

    async def start(self, model: str | None, req: GenerationRequest) -> Generation:
        """Check, prepare and admit a generation. Every failure here is an HTTP status before the first byte."""
        received = time.perf_counter_ns()
        self.check_model(model)
        engine = self.manager.acquire()
        try:
            prep = engine.prepare(req)  # a bad request is refused before it waits in the queue
            try:
                slot = await self.scheduler.admit()
            except Overloaded:
                self.metrics.rejected.inc()
                raise
        except BaseException:
            engine.release()
            raise
        engine, prep = self._newest(engine, prep, req)
        lease = Lease([engine.release, slot.release])  # released in reverse: the slot, then the engine
        if prep.truncated:
            log.warning("prompt truncated to fit the %d-token context", engine.n_ctx)
        return Generation(engine, prep, lease, self.executor, self.metrics, received)

    def _newest(self, engine: Engine, prep: PreparedRequest, req: GenerationRequest) -> tuple[Engine, PreparedRequest]:
        """A model swap while the request waited in the queue: run it on the new version, so the old one is
        unloaded once the generations already running end, not once the whole queue has drained."""
        current = self.manager.current
        if current is None or current is engine:
            return engine, prep
        try:
            newer = self.manager.acquire()
        except MeshAIError:
            return engine, prep
        try:
            newer_prep = newer.prepare(req)
        except MeshAIError:  # the new version does not take this request: the old one still can
            newer.release()
            return engine, prep
        engine.release()
        return newer, newer_prep

    async def run_to_end(self, gen: Generation, request: Request) -> GenerationResult:
        """Run a non-streaming generation; stop it if the client disconnects meanwhile."""

        async def consume() -> GenerationResult:
            result = None
            async for event in gen.events():
                if isinstance(event, GenerationResult):
                    result = event
            assert result is not None
            return result

        async def disconnected() -> None:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    return

        task = asyncio.ensure_future(consume())
        watcher = asyncio.ensure_future(disconnected())
        try:
            done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if task not in done:
                task.cancel()
                raise ClientGone()
            return task.result()
        finally:
            watcher.cancel()
            gen.close()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def error_message(exc: BaseException) -> str:
    """What a client sees for a failure after the stream started."""
    if isinstance(exc, MeshAIError):
        return str(exc)
    log.error("generation failed", exc_info=exc)
    return f"generation failed: {type(exc).__name__}"
