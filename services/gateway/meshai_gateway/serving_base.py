"""What the API families (Ollama, OpenAI) share: the stream loop, error bodies, and the radio budget fields.

A family says how one object is framed on the wire (`encode`: an NDJSON line, an SSE event) and how its
errors look (`error_body`); `respond` turns a generation into a whole JSON reply or a stream in that family's
shape, one write per batch of tokens, an error after the first byte as one last framed object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshai_common.errors import MeshAIError
from meshai_common.inference import GenerationResult, TextDelta
from meshai_common.radio import utf8_len
from meshai_gateway.service import ClientGone, Generation, GenerationService, error_message
from meshai_gateway.web import WatchedStream, headers_for, parse_body, status_for

M = TypeVar("M", bound=BaseModel)
# HTTP status of a response whose client left before it was ready (nginx's convention; nobody reads it).
CLIENT_CLOSED = 499


def radio_fields(r: GenerationResult) -> dict[str, Any]:
    """The gateway's additions to a final reply object, in every API family: the reply as the bot will send
    it (its radio chunks), and what the radio budget did."""
    return {
        "chunks": r.chunks,
        "trimmed": r.trimmed,
        "radio": {
            **r.budget.as_dict(),
            "enforced": r.budget.enabled,
            "bytes": utf8_len(r.text),
            "chunk_count": len(r.chunks),
            "trimmed": r.trimmed,
            "stopped_by_budget": r.budget_stop,
            "removed": r.removed,
        },
    }


class ServingBase:
    """One API family's serving logic over the shared GenerationService."""

    media_type: ClassVar[str]  # of a streamed reply

    def __init__(self, service: GenerationService, max_body_bytes: int) -> None:
        self.service = service
        self.max_body_bytes = max_body_bytes

    # -- what a family defines -----------------------------------------------------------------------

    @staticmethod
    def encode(obj: Any) -> bytes:
        """One object framed for a stream."""
        raise NotImplementedError

    @staticmethod
    def error_body(message: str, status: int, kind: str | None = None) -> dict[str, Any]:
        """The family's error object for an HTTP status; `kind` overrides the family's name for the status."""
        raise NotImplementedError

    stream_end: ClassVar[bytes] = b""  # written after every stream, a failed one included

    # -- shared ----------------------------------------------------------------------------------------

    async def parse(self, request: Request, model: type[M]) -> M:
        return await parse_body(request, model, self.max_body_bytes)

    def error_response(self, exc: MeshAIError) -> JSONResponse:
        status = status_for(exc)
        return JSONResponse(self.error_body(str(exc), status), status_code=status, headers=headers_for(exc))

    async def respond(self, request: Request, gen: Generation, stream: bool, *,
                      piece: Callable[[str], Any],
                      finish: Callable[[GenerationResult], Sequence[Any]],
                      whole: Callable[[GenerationResult], Any],
                      opening: Sequence[Any] = ()) -> Response:
        """The generation as one JSON object (`whole` of the result) or as a stream: `opening`, a `piece` per
        text delta (the budget's tail included), the `finish` objects after the result, then `stream_end`."""
        if not stream:
            try:
                result = await self.service.run_to_end(gen, request)
            except ClientGone:
                return Response(status_code=CLIENT_CLOSED)
            return JSONResponse(whole(result))

        async def body() -> AsyncIterator[bytes]:
            if opening:
                yield b"".join(self.encode(obj) for obj in opening)
            try:
                async with aclosing(gen.batches()) as batches:
                    async for batch in batches:
                        out = bytearray()  # one write per batch
                        for event in batch:
                            if isinstance(event, TextDelta):
                                out += self.encode(piece(event.text))
                                continue
                            if event.tail:
                                out += self.encode(piece(event.tail))
                            for obj in finish(event):
                                out += self.encode(obj)
                        yield bytes(out)
            except Exception as exc:  # after the first byte an error can only be one more object
                yield self.encode(self.error_body(error_message(exc), 500, kind="server_error"))
            if self.stream_end:
                yield self.stream_end

        return WatchedStream(body(), media_type=self.media_type, on_close=gen.close)
