"""Admission control: a bounded number of generations at once, a bounded queue, 503 beyond it.

Runs on the event loop. A slot is a Lease released exactly once: by the worker thread finishing (through its
future's done callback, on the loop) or by the response closing before any work started.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from meshai_common.errors import Unavailable


class Overloaded(Unavailable):
    """Too many requests waiting: HTTP 503 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Lease:
    def __init__(self, callbacks: list[Callable[[], None]]) -> None:
        self._callbacks = callbacks
        self.released = False

    def add(self, callback: Callable[[], None]) -> None:
        if self.released:
            callback()
        else:
            self._callbacks.append(callback)

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        for callback in reversed(self._callbacks):
            callback()


class Scheduler:
    def __init__(self, max_concurrent: int = 1, max_queue: int = 8, queue_timeout_s: float = 120.0,
                 on_change: Callable[[int, int], None] | None = None) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.on_change = on_change  # (waiting, running) for the queue-depth gauge
        self.waiting = 0
        self.running = 0
        self._sem: asyncio.Semaphore | None = None
        self._avg_s = 2.0  # moving average of how long a slot is held, for Retry-After

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:  # created on the serving loop, not at import
            self._sem = asyncio.Semaphore(self.max_concurrent)
        return self._sem

    def retry_after(self) -> int:
        return max(1, math.ceil(self._avg_s * (self.waiting + 1) / self.max_concurrent))

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.waiting, self.running)

    async def admit(self) -> Lease:
        sem = self._semaphore()
        if sem.locked() and self.waiting >= self.max_queue:
            raise Overloaded(f"server busy: {self.running} generating, {self.waiting} waiting "
                             f"(queue limit {self.max_queue}); retry later", self.retry_after())
        self.waiting += 1
        self._changed()
        try:
            await asyncio.wait_for(sem.acquire(), self.queue_timeout_s)
        except asyncio.TimeoutError:
            raise Overloaded(f"server busy: waited {self.queue_timeout_s:.0f}s for a free slot",
                             self.retry_after()) from None
        finally:
            self.waiting -= 1
            self._changed()
        self.running += 1
        self._changed()
        started = time.monotonic()

        def free() -> None:
            self.running -= 1
            self._avg_s = 0.8 * self._avg_s + 0.2 * (time.monotonic() - started)
            sem.release()
            self._changed()

        return Lease([free])
