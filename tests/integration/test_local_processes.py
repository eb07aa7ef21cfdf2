"""The shared helpers for servers started on this machine: free loopback ports, waiting with a deadline,
stopping processes known by pid (real sockets, real child processes)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from meshai_common.net import free_port, port_free
from meshai_common.pids import alive, stop_pids
from meshai_common.waiting import WaitTimeout, wait_until


def test_free_port_is_bindable_and_honours_taken_and_its_grpc_twin() -> None:
    taken: set[int] = set()
    ports = [free_port(True, taken) for _ in range(3)]
    assert len(set(ports)) == 3
    assert all(p in taken and p + 10000 in taken and p + 10000 <= 65000 for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))
        s.listen()
        assert not port_free(ports[0])
    assert port_free(ports[0])


def test_wait_until_returns_the_value_retries_named_errors_and_names_what_it_waited_for() -> None:
    calls = []

    def flaky() -> str | None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return "ready"

    assert wait_until(flaky, timeout=5, what="server", interval=0.01, retry_on=(ConnectionError,)) == "ready"
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"server: not after 0.2s \(last error: ConnectionError: refused\)"):
        wait_until(lambda: (_ for _ in ()).throw(ConnectionError("refused")), timeout=0.2, what="server",
                   interval=0.05, retry_on=(ConnectionError,))
    assert time.monotonic() - started < 2
    with pytest.raises(RuntimeError, match="exited"):  # `check` gives up early
        wait_until(lambda: False, timeout=30, what="x", check=lambda: (_ for _ in ()).throw(RuntimeError("exited")))


def test_stop_pids_terminates_then_kills_what_ignores_sigterm() -> None:
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                               "print('ready', flush=True); time.sleep(60)"],
        start_new_session=True, stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"  # its handler is installed
    try:
        assert alive(polite.pid) and alive(stubborn.pid)
        started = time.monotonic()
        killed = stop_pids([polite.pid, stubborn.pid], grace=1.0, poll=0.05)
        assert killed == [stubborn.pid]
        assert time.monotonic() - started < 10
        # Both are gone (alive() reaped them: they are our children, so no zombies are left behind).
        assert not alive(polite.pid) and not alive(stubborn.pid)
    finally:
        for p in (polite, stubborn):
            if p.poll() is None:
                p.kill()
                p.wait()
        stubborn.stdout.close()
