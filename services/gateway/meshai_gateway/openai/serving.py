"""OpenAI-compatible chat completions (older Mesh-Master versions read choices[0].message.content)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshai_common.errors import InvalidInput, MeshAIError
from meshai_common.inference import ChatMessage, GenerationRequest, GenerationResult, TextDelta
from meshai_gateway.ollama.serving import radio_fields
from meshai_gateway.openai.protocol import ChatCompletionRequest
from meshai_gateway.service import ClientGone, GenerationService, error_message
from meshai_gateway.web import SSE, WatchedStream, headers_for, parse_body, status_for

FINISH = {"stop": "stop", "length": "length", "cancelled": "stop"}


def openai_error(exc: MeshAIError) -> JSONResponse:
    status = status_for(exc)
    kind = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error",
            503: "server_error"}.get(status, "api_error")
    return JSONResponse({"error": {"message": str(exc), "type": kind, "param": None, "code": None}},
                        status_code=status, headers=headers_for(exc))


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


class OpenAIServing:
    def __init__(self, service: GenerationService, max_body_bytes: int) -> None:
        self.service = service
        self.max_body_bytes = max_body_bytes

    def _request(self, body: ChatCompletionRequest) -> GenerationRequest:
        if body.tools:
            raise InvalidInput(f"model '{body.model}' does not support tools")
        try:
            messages = tuple(
                ChatMessage("system" if m.role == "developer" else m.role, m.text()) for m in body.messages
            )
        except ValueError as exc:
            raise InvalidInput(f"messages: {exc}") from None
        options: dict[str, Any] = {
            "num_predict": body.max_completion_tokens or body.max_tokens,
            "temperature": body.temperature, "top_p": body.top_p, "seed": body.seed,
            "presence_penalty": body.presence_penalty, "frequency_penalty": body.frequency_penalty,
            "stop": body.stop, "chunk_bytes": body.chunk_bytes, "max_chunks": body.max_chunks,
        }
        fmt: str | dict[str, Any] | None = None
        if body.response_format is not None and body.response_format.type != "text":
            if body.response_format.type == "json_object":
                fmt = "json"
            else:
                schema = (body.response_format.json_schema or {}).get("schema")
                if not isinstance(schema, dict):
                    raise InvalidInput("response_format.json_schema.schema must be a JSON schema object")
                fmt = schema
        return GenerationRequest(messages=messages, options={k: v for k, v in options.items() if v is not None},
                                 format=fmt)

    async def chat_completions(self, request: Request) -> Response:
        body = await parse_body(request, ChatCompletionRequest, self.max_body_bytes)
        gen = await self.service.start(body.model, self._request(body))
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        model = body.model

        def usage(r: GenerationResult) -> dict[str, int]:
            return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                    "total_tokens": r.prompt_tokens + r.completion_tokens}

        if not body.stream:
            try:
                r = await self.service.run_to_end(gen, request)
            except ClientGone:
                return Response(status_code=499)
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": "fp_meshai",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text},
                             "finish_reason": FINISH.get(r.done_reason, "stop")}],
                "usage": usage(r), **radio_fields(r),
            })

        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": "fp_meshai",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        async def events() -> AsyncIterator[bytes]:
            yield _sse(chunk({"role": "assistant", "content": ""}, None))
            try:
                async with aclosing(gen.batches()) as batches:
                    async for batch in batches:
                        out = bytearray()  # one write per batch
                        for event in batch:
                            if isinstance(event, TextDelta):
                                out += _sse(chunk({"content": event.text}, None))
                                continue
                            if event.tail:
                                out += _sse(chunk({"content": event.tail}, None))
                            last = chunk({}, FINISH.get(event.done_reason, "stop"))
                            last.update(radio_fields(event))
                            out += _sse(last)
                            if include_usage:
                                out += _sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                                             "model": model, "choices": [], "usage": usage(event)})
                        yield bytes(out)
            except Exception as exc:
                yield _sse({"error": {"message": error_message(exc), "type": "server_error"}})
            yield b"data: [DONE]\n\n"

        return WatchedStream(events(), media_type=SSE, on_close=gen.close)

    async def models(self, request: Request) -> Response:
        engine = self.service.manager.current
        data = []
        if engine is not None:
            data.append({"id": engine.name, "object": "model", "created": int(engine.info.modified_at),
                         "owned_by": "meshai"})
        return JSONResponse({"object": "list", "data": data})
