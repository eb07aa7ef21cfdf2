"""gRPC server bootstrap shared by every service.

- The standard health service reports SERVING only while the bucket answers (and the service's own
  readiness check, if any, passes).
- One interceptor turns domain errors into status codes; anything else is INTERNAL with a one-line reason.
- SIGTERM/SIGINT: report NOT_SERVING, cancel running jobs, drain in-flight calls, exit.
"""

from __future__ import annotations

import logging
import signal
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshai_common.errors import MeshAIError
from meshai_common.store import ArtifactStore

log = logging.getLogger(__name__)

STATUS = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "DATA_LOSS": grpc.StatusCode.DATA_LOSS,
    "CANCELLED": grpc.StatusCode.CANCELLED,
    "INTERNAL": grpc.StatusCode.INTERNAL,
}
HEALTH_INTERVAL_S = 3.0
DRAIN_GRACE_S = 20.0


def status_for(exc: MeshAIError) -> grpc.StatusCode:
    return STATUS.get(exc.code, grpc.StatusCode.INTERNAL)


class ErrorInterceptor(grpc.ServerInterceptor):
    """Map domain errors raised by handlers to gRPC status codes, once, for every method."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _abort(context: grpc.ServicerContext, exc: Exception, method: str) -> None:
    if isinstance(exc, MeshAIError):
        context.abort(status_for(exc), str(exc))
    log.error("unhandled error", extra={"method": method, "trace": traceback.format_exc()})
    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {type(exc).__name__}")


def _wrap_unary(fn: Callable, method: str) -> Callable:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(request, context)
        except Exception as exc:
            if isinstance(exc, grpc.RpcError) or type(exc).__name__ == "_AbortError":  # already aborted
                raise
            _abort(context, exc, method)

    return wrapper


def _wrap_stream(fn: Callable, method: str) -> Callable:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Iterable[Any]:
        try:
            yield from fn(request, context)
        except Exception as exc:
            if isinstance(exc, grpc.RpcError) or type(exc).__name__ == "_AbortError":
                raise
            _abort(context, exc, method)

    return wrapper


class GrpcService:
    """A started gRPC server with health tracking; `wait()` blocks until SIGTERM, `stop()` drains."""

    def __init__(
        self,
        name: str,
        listen: str,
        store: ArtifactStore,
        register: Callable[[grpc.Server], Iterable[str]],
        *,
        ready: Callable[[], str | None] | None = None,
        on_stop: Callable[[], None] | None = None,
        max_workers: int = 16,
        interceptors: Sequence[grpc.ServerInterceptor] = (),
    ) -> None:
        self.name = name
        self.store = store
        self._ready = ready
        self._on_stop = on_stop
        self._stopped = threading.Event()
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"{name}-rpc"),
            # Extra interceptors (the gateway's key check) run first: a refused call reaches no handler.
            interceptors=[*interceptors, ErrorInterceptor()],
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
        )
        self.service_names = list(register(self.server))
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(listen)
        if self.port == 0:
            raise MeshAIError(f"{name}: cannot listen on {listen}")
        self.listen = listen
        self.reason = "starting"
        self._set(False)

    def start(self) -> GrpcService:
        self.server.start()
        threading.Thread(target=self._health_loop, name=f"{self.name}-health", daemon=True).start()
        log.info("serving", extra={"service": self.name, "listen": self.listen, "port": self.port})
        return self

    def check(self) -> str | None:
        """None when ready, else the reason it is not."""
        try:
            self.store.ping()
        except MeshAIError as exc:
            return str(exc)
        return self._ready() if self._ready else None

    def _set(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for svc in ["", *self.service_names]:
            self.health.set(svc, status)

    def _health_loop(self) -> None:
        last = None
        while not self._stopped.is_set():
            reason = self.check()
            if reason != last:
                (log.info if reason is None else log.warning)(
                    "health changed", extra={"serving": reason is None, "reason": reason or ""}
                )
                last = reason
            self.reason = reason or ""
            self._set(reason is None)
            self._stopped.wait(HEALTH_INTERVAL_S)

    def stop(self, grace: float = DRAIN_GRACE_S) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        if self._on_stop:
            self._on_stop()
        self.server.stop(grace).wait()
        log.info("stopped", extra={"service": self.name})

    def wait(self) -> None:
        """Block until SIGTERM or SIGINT, then drain and return."""
        done = threading.Event()

        def handle(signum, _frame):
            log.info("signal received, draining", extra={"signal": signum})
            done.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        while not done.wait(0.5):
            pass
        self.stop()


def run_service(
    name: str,
    build: Callable[[ArtifactStore, str], tuple[Callable[[grpc.Server], Iterable[str]], Callable[[], None] | None]],
    *,
    ready: Callable[[], str | None] | None = None,
) -> int:
    """`python -m meshai_<name>`: read the environment, start the server, block until SIGTERM.

    `build(store, workdir)` returns the function that registers servicers and an optional stop hook.
    A missing variable exits 2 at once with a message naming it; an unreachable bucket does not stop
    start-up (health stays NOT_SERVING until it answers).
    """
    import sys

    from meshai_common.config import env
    from meshai_common.errors import ConfigError
    from meshai_common.logs import setup_logging

    setup_logging(name)
    try:
        store = ArtifactStore.from_env()
        listen = env("MESHAI_LISTEN")
        workdir = env("MESHAI_WORKDIR", f"/tmp/meshai/{name}")
    except ConfigError as exc:
        print(f"meshai-{name}: {exc}", file=sys.stderr)
        return 2
    try:
        store.ensure_bucket()
    except MeshAIError as exc:
        log.warning("bucket not ready yet", extra={"reason": str(exc)})
    register, on_stop = build(store, workdir)
    service = GrpcService(name, listen, store, register, ready=ready, on_stop=on_stop).start()
    service.wait()
    return 0
