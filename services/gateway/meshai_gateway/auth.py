"""Optional API key: when the gateway has one, every HTTP route but the probes needs it, and so does gRPC.

Accepted forms:
- `Authorization: Bearer <key>` (the Ollama and OpenAI clients: `Client(headers=...)`, `api_key=...`);
- `Authorization: Basic base64(<any user>:<key>)`, which HTTP libraries send for a URL with credentials,
  `http://meshai:<key>@host:11434/api/generate`, for clients that can only be given a URL.

/healthz and /readyz stay open (orchestrator probes carry no secrets). /metrics needs the key: it shows
the served model's digest and the traffic; Prometheus sends it with `authorization: {credentials_file: ...}`.
On gRPC, every method but the standard health service needs `authorization: Bearer <key>` metadata.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

import grpc
from starlette.types import ASGIApp, Receive, Scope, Send

from meshai_gateway.ollama.serving import OllamaServing
from meshai_gateway.openai.serving import OpenAIServing

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
PUBLIC_GRPC_PREFIX = "/grpc.health.v1.Health/"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _digest(secret: bytes) -> bytes:
    # Comparing fixed-size digests keeps the comparison constant-time whatever the lengths involved.
    return hashlib.sha256(secret).digest()


def presented_key(authorization: str) -> bytes | None:
    """The key a client presented in an Authorization header value, or None if it presented none."""
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if not value:
        return None
    if scheme.lower() == "bearer":
        return value.encode("utf-8", "surrogateescape")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        _user, sep, password = decoded.partition(b":")
        return password if sep else None
    return None


class KeyCheck:
    """Whether an Authorization value carries the gateway's key (compared in constant time)."""

    def __init__(self, api_key: str) -> None:
        self._want = _digest(api_key.encode("utf-8"))

    def __call__(self, authorization: str) -> bool:
        key = presented_key(authorization)
        return key is not None and hmac.compare_digest(_digest(key), self._want)


class ApiKeyMiddleware:
    """Refuses requests without the key: 401, Ollama's `{"error": ...}` (OpenAI's shape under /v1/)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._check = KeyCheck(api_key)

    def allowed(self, scope: Scope) -> bool:
        return any(name == b"authorization" and self._check(value.decode("latin-1"))
                   for name, value in scope.get("headers", ()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        message = "unauthorized: this gateway needs an API key (Authorization: Bearer <key>)"
        if scope["path"].startswith("/v1/"):
            body = OpenAIServing.error_body(message, 401, kind="authentication_error")
            body["error"]["code"] = "invalid_api_key"
        else:
            body = OllamaServing.error_body(message, 401)
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"www-authenticate", b'Bearer realm="meshai-gateway"'),
        ]})
        await send({"type": "http.response.body", "body": payload})


class GrpcApiKeyInterceptor(grpc.ServerInterceptor):
    """gRPC's side of the key: UNAUTHENTICATED for a call without it; the health service stays open."""

    def __init__(self, api_key: str) -> None:
        self._check = KeyCheck(api_key)

    def intercept_service(self, continuation: Callable, handler_call_details: Any) -> Any:
        if handler_call_details.method.startswith(PUBLIC_GRPC_PREFIX):
            return continuation(handler_call_details)
        if any(k == "authorization" and self._check(v if isinstance(v, str) else v.decode("latin-1"))
               for k, v in handler_call_details.invocation_metadata or ()):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None

        def refuse(_request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "this gateway needs an API key (metadata authorization: Bearer <key>)")

        # Same call shape as the method, so the client reads a status rather than a protocol error.
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(refuse, handler.request_deserializer,
                                                        handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)


def warn_if_open(host: str, api_key: str | None) -> None:
    """A gateway reachable beyond this machine with no key serves anyone who finds the port."""
    if not api_key and host not in LOOPBACK:
        log.warning("listening on %s without an API key: anyone who can reach the port can use the model "
                    "(set MESHAI_API_KEY, MESHAI_API_KEY_FILE or --api-key-file)", host)
