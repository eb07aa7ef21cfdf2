"""Which Engine serves now: `ModelManager` asks the ModelSource for the current model, loads a new version
next to the old one, then swaps the reference; requests that hold the old Engine finish on it, and it is
closed when the last one lets go. A version that fails to load is remembered, so a poller does not reload
it every interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from meshai_common.errors import MeshAIError, Unavailable
from meshai_gateway.engine import Engine, EngineFactory, release_freed_memory
from meshai_gateway.model_source import ModelSource, Progress
from meshai_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


class ModelManager:
    """Holds the current Engine and replaces it when the ModelSource points elsewhere."""

    def __init__(self, source: ModelSource, settings: GatewaySettings, factory: EngineFactory = Engine,
                 on_change: Callable[[Engine], None] | None = None) -> None:
        self.source = source
        self.settings = settings
        self.factory = factory
        self.on_change = on_change
        self._engine: Engine | None = None
        self._reason = "model not loaded yet"
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: dict[str, tuple[type[MeshAIError], str]] = {}
        # Why the latest refresh did not replace the model being served (None after a good one).
        self.refresh_error: str | None = None
        self.swaps = 0

    @property
    def ready(self) -> bool:
        return self._engine is not None

    @property
    def reason(self) -> str:
        return "ready" if self._engine is not None else self._reason

    @property
    def current(self) -> Engine | None:
        return self._engine

    def engine(self) -> Engine:
        engine = self._engine
        if engine is None:
            raise Unavailable(self._reason)
        return engine

    @contextmanager
    def use(self) -> Iterator[Engine]:
        engine = self.acquire()
        try:
            yield engine
        finally:
            engine.release()

    def acquire(self) -> Engine:
        """The current Engine, held until release(): a swap meanwhile does not close it."""
        while True:
            engine = self.engine()
            try:
                engine.acquire()
                return engine
            except Unavailable:
                if self._engine is engine:  # closed but still current: stopping
                    raise

    def refresh(self, progress: Progress | None = None, *, retry_refused: bool = True) -> Engine:
        """Ask the source for the current model; load and swap it in when it changed. Blocks while loading.

        A version that failed to load is remembered by sha256: the poller does not reload it every interval
        (retry_refused=False); an explicit refresh (pull, the Refresh RPC) tries again."""
        with self._refresh_lock:
            old = self._engine
            try:
                info = self.source.current(progress)
            except MeshAIError as exc:
                self._failed(old, f"no model: {exc}", f"cannot check the promoted model: {exc}")
                raise
            if old is not None and old.info.sha256 == info.sha256:
                self.refresh_error = None
                return old  # same bytes: nothing to do, wherever the file now lives
            refused = self._refused.get(info.sha256)
            if refused is not None and not retry_refused:
                kind, message = refused
                raise kind(message)  # a fresh error: re-raising one object would grow its traceback
            log.info("loading model %s (sha256 %s) from %s", info.name, info.sha256[:12], info.path)
            if old is None:
                self._reason = f"loading model {info.name}"
            if progress is not None:
                progress({"status": f"loading model {info.name}", "digest": f"sha256:{info.sha256}"})
            try:
                engine = self.factory(info, self.settings)
            except Exception as exc:
                err = exc if isinstance(exc, MeshAIError) else Unavailable(
                    f"model {info.name} failed to load: {type(exc).__name__}: {exc}")
                self._refused = {info.sha256: (type(err), str(err))}  # the latest refusal is what matters
                release_freed_memory()  # what the failed load allocated
                self._failed(old, f"model {info.name} failed to load: {exc}",
                             f"promoted version {info.sha256[:12]} refused: {err}")
                if err is exc:
                    raise
                raise err from exc
            self._engine = engine  # the swap: new requests get the new engine from here on
            self._refused.pop(info.sha256, None)
            self.refresh_error = None
            if old is not None:
                self.swaps += 1
                old.retire()
            log.info("serving model %s (sha256 %s), loaded in %.2fs", info.name, info.sha256[:12],
                     engine.load_ns / 1e9)
            if self.on_change is not None:
                self.on_change(engine)
            return engine

    def _failed(self, old: Engine | None, not_ready: str, still_serving: str) -> None:
        if old is None:
            self._reason = not_ready
        else:  # still serving the old version: /readyz says why the new one is not in
            self.refresh_error = f"{still_serving}; still serving sha256 {old.info.sha256[:12]}"

    def start(self) -> None:
        """Load in the background (so /healthz answers at once), then poll if the source asks for it."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="model-manager", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._engine is None and time.monotonic() < deadline:
            if self._thread is not None and not self._thread.is_alive():
                break
            time.sleep(0.05)
        return self._engine is not None

    def _loop(self) -> None:
        interval = self.source.poll_interval_s
        while not self._stop.is_set():
            try:
                self.refresh(retry_refused=False)
            except MeshAIError as exc:
                log.warning("model refresh failed: %s", exc)
            except Exception:  # keep serving the current model whatever the source does
                log.exception("model refresh crashed")
            if interval is None and self._engine is not None:
                return
            self._stop.wait(interval if interval is not None else 5.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        engine, self._engine = self._engine, None
        self._reason = "stopped"
        if engine is not None:
            engine.retire()
