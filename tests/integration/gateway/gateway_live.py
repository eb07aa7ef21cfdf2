"""Helpers for gateway tests over real HTTP: the embedded SmolLM2 GGUF and an in-process uvicorn on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from meshai_common.embedded import embedded_gguf
from meshai_common.errors import NotFound
from meshai_common.radio import utf8_len
from meshai_common.waiting import WaitTimeout, wait_until


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
        def answering() -> bool:
            try:
                r = httpx.get(f"{base}{ready_path or '/healthz'}", timeout=2)
            except httpx.TransportError:
                return False
            return ready_path is None or r.status_code == 200

        try:
            wait_until(answering, timeout=timeout, what=f"gateway at {base}{ready_path}", interval=0.1)
        except WaitTimeout as exc:
            raise AssertionError(str(exc)) from None
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def assert_chunked_like_the_bot(reply: str, chunks: list[str], chunk_bytes: int, window: int = 30) -> None:
    """`chunks` is the reply cut into radio messages, checked without the splitter that made it (its exact
    cuts are pinned by hand-written cases in tests/unit/gateway/test_radio_budget.py): the chunks are the
    reply's text, in order, with only whitespace dropped between them, each stripped and at most
    chunk_bytes bytes; a rest that fits is one chunk, and a cut comes no earlier than `window` characters
    before the limit (Mesh-Master breaks at a space or '-' within the last 30, else at the limit)."""
    where = f"{reply!r} -> {chunks!r}"
    assert all(isinstance(c, str) and c and c == c.strip() for c in chunks), where
    assert all(utf8_len(c) <= chunk_bytes for c in chunks), where
    pos, starts = 0, []
    for chunk in chunks:
        start = reply.find(chunk, pos)
        assert start >= 0 and not reply[pos:start].strip(), where
        starts.append(start)
        pos = start + len(chunk)
    assert not reply[pos:].strip(), where
    for i, start in enumerate(starts[:-1]):
        rest = reply[start:]
        assert utf8_len(rest.strip()) > chunk_bytes, where  # else the rest would have been the last chunk
        fitting, size = 0, 0  # characters of the longest prefix within the byte limit
        while fitting < len(rest) and size + utf8_len(rest[fitting]) <= chunk_bytes:
            size += utf8_len(rest[fitting])
            fitting += 1
        assert starts[i + 1] - start >= fitting - window, where
