"""Waiting for something to become true, with a deadline: a server answering, a file appearing, a job
finishing. Polling with a deadline instead of a fixed sleep: fast when the event is quick, bounded when not."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from meshai_common.errors import Unavailable

T = TypeVar("T")


class WaitTimeout(Unavailable):
    """The awaited condition did not hold before the deadline."""


def wait_until(probe: Callable[[], T], *, timeout: float, what: str, interval: float = 0.2,
               retry_on: tuple[type[BaseException], ...] = (), check: Callable[[], None] | None = None) -> T:
    """Call `probe` every `interval` s until it returns something truthy, and return that.

    Exceptions of the `retry_on` types count as "not yet" (the last one is named on timeout); `check` runs
    before each probe and may raise to give up early (e.g. the awaited process exited). WaitTimeout, naming
    `what`, after `timeout` s.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if check is not None:
            check()
        try:
            result = probe()
            if result:
                return result
        except retry_on as exc:
            last = f"{type(exc).__name__}: {exc}"
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"{what}: not after {timeout:g}s" + (f" (last error: {last})" if last else ""))
        time.sleep(min(interval, left))
