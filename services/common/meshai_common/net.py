"""Loopback ports for servers started on this machine (the embedded stack, benchmarks, tests)."""

from __future__ import annotations

import socket

from meshai_common.errors import Unavailable

# SeaweedFS binds each server's gRPC port at its http port + 10000.
GRPC_TWIN_OFFSET = 10000


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:`port` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(plus_grpc: bool = False, taken: set[int] | None = None) -> int:
    """A free loopback port not in `taken` (which it joins); with plus_grpc, one whose +10000 twin is free
    too (SeaweedFS needs both)."""
    taken = taken if taken is not None else set()
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        twin = port + GRPC_TWIN_OFFSET
        if port in taken or (plus_grpc and (twin > 65000 or not port_free(twin) or twin in taken)):
            continue
        taken.update({port, twin} if plus_grpc else {port})
        return port
    raise Unavailable("no free loopback port found")
