"""OpenAI-compatible chat completions (older Mesh-Master versions read choices[0].message.content)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshai_common.errors import InvalidInput
from meshai_common.inference import ChatMessage, GenerationRequest, GenerationResult
from meshai_gateway.openai.protocol import ChatCompletionRequest
from meshai_gateway.serving_base import ServingBase, radio_fields
from meshai_gateway.web import SSE

FINISH = {"stop": "stop", "length": "length", "cancelled": "stop"}
# OpenAI's error `type` for an HTTP status (others: api_error).
ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error",
               503: "server_error"}


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


class OpenAIServing(ServingBase):
    media_type: ClassVar[str] = SSE
    encode = staticmethod(_sse)
    stream_end: ClassVar[bytes] = b"data: [DONE]\n\n"

    @staticmethod
    def error_body(message: str, status: int, kind: str | None = None) -> dict[str, Any]:
        return {"error": {"message": message, "type": kind or ERROR_TYPES.get(status, "api_error"), "param": None,
                          "code": None}}

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
        body = await self.parse(request, ChatCompletionRequest)
        gen = await self.service.start(body.model, self._request(body))
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        model = body.model
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def usage(r: GenerationResult) -> dict[str, int]:
            return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                    "total_tokens": r.prompt_tokens + r.completion_tokens}

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": "fp_meshai",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        def finish(r: GenerationResult) -> list[dict[str, Any]]:
            out = [chunk({}, FINISH.get(r.done_reason, "stop")) | radio_fields(r)]
            if include_usage:
                out.append({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [], "usage": usage(r)})
            return out

        def whole(r: GenerationResult) -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion", "created": created, "model": model,
                    "system_fingerprint": "fp_meshai",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text},
                                 "finish_reason": FINISH.get(r.done_reason, "stop")}],
                    "usage": usage(r), **radio_fields(r)}

        return await self.respond(request, gen, body.stream, piece=lambda text: chunk({"content": text}, None),
                                  finish=finish, whole=whole,
                                  opening=[chunk({"role": "assistant", "content": ""}, None)])

    async def models(self, request: Request) -> Response:
        engine = self.service.manager.current
        data = []
        if engine is not None:
            data.append({"id": engine.name, "object": "model", "created": int(engine.info.modified_at),
                         "owned_by": "meshai"})
        return JSONResponse({"object": "list", "data": data})
