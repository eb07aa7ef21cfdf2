"""The thread/event-loop bridge, both ways: order, batching, failures, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from meshai_gateway.bridge import LoopToThread, ThreadToLoop


def test_thread_to_loop_keeps_order_and_raises_the_failure_after_the_items_before_it() -> None:
    async def scenario() -> tuple[list[list[object]], BaseException | None]:
        feed = ThreadToLoop()

        def work() -> None:
            for i in range(5):
                feed.put(i)
            raise ValueError("disk full")

        batches: list[list[object]] = []
        loop = asyncio.get_running_loop()
        worker = loop.run_in_executor(None, feed.run, work)
        try:
            async for batch in feed.batches():
                batches.append(batch)
        except ValueError as exc:
            await worker
            return batches, exc
        return batches, None

    batches, failure = asyncio.run(scenario())
    assert [i for b in batches for i in b] == [0, 1, 2, 3, 4]
    assert isinstance(failure, ValueError) and str(failure) == "disk full"


def test_thread_to_loop_coalesces_non_urgent_items_until_an_urgent_one() -> None:
    async def scenario() -> list[list[object]]:
        feed = ThreadToLoop(coalesce_s=60.0)  # nothing but an urgent put wakes the loop

        def work() -> None:
            feed.put("first")  # urgent: at once
            for i in range(10):
                feed.put(i, urgent=False)
            feed.put("last")  # urgent: flushes the ten waiting with it

        asyncio.get_running_loop().run_in_executor(None, feed.run, work)
        return [b async for b in feed.batches()]

    batches = asyncio.run(scenario())
    assert [i for b in batches for i in b] == ["first", *range(10), "last"]
    assert len(batches) <= 2  # two urgent puts, two wake-ups at most: the ten others rode along


def test_thread_to_loop_says_when_the_loop_is_gone() -> None:
    holder: list[ThreadToLoop] = []

    async def make() -> None:
        holder.append(ThreadToLoop())

    asyncio.run(make())  # the loop closes with asyncio.run
    assert holder[0].put("late") is False


def test_loop_to_thread_reads_an_async_iterator_from_a_plain_thread() -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        async def numbers():
            for i in range(4):
                await asyncio.sleep(0)
                yield i

        assert list(LoopToThread(numbers, loop)) == [0, 1, 2, 3]

        async def broken():
            yield "a"
            raise KeyError("gone")

        seen = []
        with pytest.raises(KeyError):
            for item in LoopToThread(broken, loop):
                seen.append(item)
        assert seen == ["a"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()


def test_loop_to_thread_cancel_stops_the_source_and_never_leaves_the_reader_hanging() -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    cleaned = threading.Event()
    try:
        async def endless():
            try:
                while True:
                    await asyncio.sleep(0.01)
                    yield "tick"
            finally:
                cleaned.set()  # the source's cleanup runs on the loop

        events = LoopToThread(endless, loop)
        reader = iter(events)
        assert next(reader) == "tick"
        events.cancel()
        started = time.monotonic()
        rest = list(reader)  # ends: no hang after cancel
        assert time.monotonic() - started < 5 and all(x == "tick" for x in rest)
        assert cleaned.wait(5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()
