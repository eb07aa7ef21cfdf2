"""Processes known only by their pid, such as the embedded stack's services, which outlive the command that
started them: is one alive, and stop several the way an orchestrator does (SIGTERM to each process group, a
grace period to drain, then SIGKILL). Children started in this process use meshai_common.process instead."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence

KILL_WAIT_S = 5.0


def alive(pid: int) -> bool:
    """Whether `pid` runs; reaps it first when it is our own exited child, so it does not linger as a zombie."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pid: int, sig: int) -> None:
    """`sig` to the process group led by `pid`, or to `pid` alone when it leads none; gone is fine."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_pids(pids: Sequence[int], grace: float = 30.0, poll: float = 0.2) -> list[int]:
    """SIGTERM to every pid's group at once, up to `grace` s together for them to exit, SIGKILL for the rest;
    the pids that had to be killed."""
    for pid in pids:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    killed = []
    for pid in pids:
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(poll)
        if alive(pid):
            signal_group(pid, signal.SIGKILL)
            killed.append(pid)
    # SIGKILL cannot be refused, but the exit takes a moment: wait for it, so the ports are free on return.
    gone_by = time.monotonic() + KILL_WAIT_S
    for pid in killed:
        while alive(pid) and time.monotonic() < gone_by:
            time.sleep(poll)
    return killed
