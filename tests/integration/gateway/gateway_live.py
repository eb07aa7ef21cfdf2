"""Helpers for gateway tests over real HTTP: the embedded SmolLM2 GGUF and an in-process uvicorn on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from meshai_common.embedded import embedded_gguf
from meshai_common.errors import NotFound


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct, the embedded default's GGUF; skips where the package is missing."""
    try:
        return embedded_gguf()
    except NotFound as exc:
        pytest.skip(str(exc))


@contextmanager
def serve_app(app: FastAPI, ready_path: str | None = "/readyz", timeout: float = 60) -> Iterator[str]:
    """Serve the app on a free loopback port in this process; yields the base URL once ready_path answers 200
    (with ready_path None: once the server answers at all)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = httpx.get(f"{base}{ready_path or '/healthz'}", timeout=2)
                if ready_path is None or r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway did not become ready at {base}{ready_path}")
            time.sleep(0.1)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
