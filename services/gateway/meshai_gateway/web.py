"""HTTP plumbing shared by the API families: strict body parsing, error mapping, streaming responses that stop
work when the client goes away."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from meshai_common.errors import InvalidInput, MeshAIError
from meshai_gateway.scheduler import Overloaded

M = TypeVar("M", bound=BaseModel)

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
# Real requests nest a few levels (a JSON schema in `format` perhaps a dozen); deeper is an attack on the
# parser's recursion, refused before anything walks it.
MAX_JSON_DEPTH = 64

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "CANCELLED": 499,
    "INTERNAL": 500,
}


class PayloadTooLarge(InvalidInput):
    status = 413


class UnsupportedMediaType(InvalidInput):
    status = 415


def status_for(exc: MeshAIError) -> int:
    return getattr(exc, "status", None) or HTTP_STATUS.get(exc.code, 500)


def headers_for(exc: MeshAIError) -> dict[str, str]:
    if isinstance(exc, Overloaded):
        return {"Retry-After": str(exc.retry_after_s)}
    return {}


def json_line(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    msg = err.get("msg", "invalid")
    if err.get("type") == "missing":
        return f"{loc} is required"
    got = err.get("input")
    shown = json.dumps(got, ensure_ascii=False)[:40] if not isinstance(got, dict) else "an object"
    return f"{loc}: {msg} (got {shown})" if loc else msg


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON: size-capped, strict UTF-8, no lone surrogates; 4xx with a reason otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput(f"invalid Content-Length {declared!r}")
        if int(declared) > max_bytes:
            raise PayloadTooLarge(f"request body is {int(declared)} bytes; the limit is {max_bytes}")
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype and not ctype.startswith(("text/plain", "application/x-www-form")):
        # Ollama's clients send application/json; curl -d sends form encoding with a JSON body: both fine.
        raise UnsupportedMediaType(f"unsupported Content-Type {ctype!r}; send JSON")
    body = bytearray()
    try:
        async for part in request.stream():
            body += part
            if len(body) > max_bytes:
                raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
    except ClientDisconnect:
        raise InvalidInput("client disconnected while sending the request") from None
    if not body.strip():
        raise InvalidInput("request body is empty; send a JSON object")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"request body is not valid UTF-8 (byte {exc.start})") from None
    if _nesting(text) > MAX_JSON_DEPTH:
        raise InvalidInput(f"JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # guarded by _nesting; kept so no input can make this a 500
        raise InvalidInput(f"JSON is nested more than {MAX_JSON_DEPTH} levels deep") from None
    _check_strings(data)
    return data


def _no_constant(name: str) -> Any:
    raise InvalidInput(f"invalid JSON: {name} is not a JSON number")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _nesting(text: str) -> int:
    """Deepest bracket nesting outside strings, without recursion (the parser itself recurses)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be deeper than the number of opening brackets
    depth = deepest = 0
    for ch in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _check_strings(data: Any) -> None:
    """Every key and string must be sendable as UTF-8: a \\ud800 escape decodes to a lone surrogate."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput("request contains an invalid \\u escape (a lone UTF-16 surrogate)") from None


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise InvalidInput(f"request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        detail = "; ".join(_describe(e) for e in errors[:3])
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        raise InvalidInput(f"invalid request: {detail}{more}") from None


async def parse_body(request: Request, model: type[M], max_bytes: int) -> M:
    return validate(model, await read_json(request, max_bytes))


class WatchedStream(StreamingResponse):
    """A streaming response that always listens for the client disconnecting (cancelling the body
    iterator, whose cleanup stops generation) and always runs on_close, even if the body never started."""

    def __init__(self, content: AsyncIterator[bytes], *, media_type: str, on_close: Callable[[], None],
                 status_code: int = 200, headers: dict[str, str] | None = None) -> None:
        super().__init__(content, status_code=status_code, media_type=media_type, headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import anyio

        try:
            async with anyio.create_task_group() as tg:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # the client went away mid-write
                        await self.stream_response(send)
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                await self.listen_for_disconnect(receive)
                tg.cancel_scope.cancel()
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()
            self._on_close()


def plain(text: str, status: int = 200) -> Response:
    return Response(text, status_code=status, media_type="text/plain; charset=utf-8")
