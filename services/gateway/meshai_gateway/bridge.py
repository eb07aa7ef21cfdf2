"""The one bridge between threads and the server's event loop, both ways.

Generation runs in worker threads (llama.cpp blocks) while HTTP requests live on the event loop; the gRPC
service is the other way round (its handlers are threads, the generations they start live on the loop).

    feed = ThreadToLoop(coalesce_s=0.04)       # worker thread -> event loop
    loop.run_in_executor(executor, feed.run, work)   # work() calls feed.put(item) from its thread
    async for batch in feed.batches(): ...     # on the loop; the work's failure is raised here

    for item in LoopToThread(agen_factory, loop):   # event loop -> a plain thread (gRPC handler)
        ...
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _End:
    """The producer is done: the last item of every feed."""


END = _End()


@dataclass
class Failed:
    """The producer raised: handed across to the consumer, which raises it in its own thread or task."""

    exc: BaseException


class ThreadToLoop:
    """Items put by worker threads, read on the event loop in batches.

    Each put wakes the loop unless it is not `urgent` and the last wake-up was under `coalesce_s` ago: then
    the item waits for the next one (the producer's end at the latest), so a stream of tokens costs one
    loop wake-up per `coalesce_s`, not one per token. Create it on the loop.
    """

    def __init__(self, coalesce_s: float = 0.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._pending: list[Any] = []
        self._lock = threading.Lock()
        self._last_wake = 0.0
        self.coalesce_s = coalesce_s
        # Set once the consumer has seen the producer's end or failure: anything less is an abandoned read.
        self.ended = False

    def put(self, item: Any, urgent: bool = True) -> bool:
        """From any thread. False when the loop is gone (shutdown): nobody is listening any more."""
        with self._lock:
            self._pending.append(item)
            now = time.monotonic()
            if not urgent and now - self._last_wake < self.coalesce_s:
                return True  # a later put flushes this one
            self._last_wake = now
        try:
            self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError:
            return False
        return True

    def _flush(self) -> None:  # on the loop
        with self._lock:
            batch = self._pending[:]
            self._pending.clear()
        if batch:
            self._queue.put_nowait(batch)

    def run(self, work: Callable[[], object]) -> None:
        """The body of a worker thread: `work()`, then its end, or its failure, goes into the feed last."""
        try:
            work()
        except BaseException as exc:  # handed to the event loop, which decides how to report it
            self.put(Failed(exc))
        else:
            self.put(END)

    async def batches(self) -> AsyncIterator[list[Any]]:
        """The items in the batches they arrived in, until the producer's end; its failure is raised after
        the items put before it."""
        while not self.ended:
            out: list[Any] = []
            for item in await self._queue.get():
                if item is END:
                    self.ended = True
                    break
                if isinstance(item, Failed):
                    self.ended = True
                    if out:
                        yield out
                    raise item.exc
                out.append(item)
            if out:
                yield out

    async def items(self) -> AsyncIterator[Any]:
        """The items one by one."""
        async for batch in self.batches():
            for item in batch:
                yield item


class LoopToThread(Generic[T]):
    """An async iterator run on `loop`, read as a plain iterator from another thread. cancel() stops it on the
    loop (its `finally` blocks run there); the reader then sees the end."""

    def __init__(self, source: Callable[[], AsyncIterator[T]], loop: asyncio.AbstractEventLoop) -> None:
        self._items: queue.Queue[Any] = queue.Queue()

        async def pump() -> None:
            try:
                async for item in source():
                    self._items.put(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which re-raises it
                self._items.put(Failed(exc))
            finally:
                self._items.put(END)

        self._future = asyncio.run_coroutine_threadsafe(pump(), loop)

    def cancel(self) -> None:
        self._future.cancel()
        self._items.put(END)  # a pump cancelled before it started puts nothing: the reader must not hang

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._items.get()
            if item is END:
                return
            if isinstance(item, Failed):
                if isinstance(item.exc, asyncio.CancelledError):
                    return
                raise item.exc
            yield item
