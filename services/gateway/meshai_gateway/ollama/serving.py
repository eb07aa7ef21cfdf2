"""Ollama API logic: requests in, NDJSON or one JSON object out, Ollama's field names and units."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshai_common.errors import InvalidInput, NotFound
from meshai_common.inference import ChatMessage, GenerationRequest, GenerationResult
from meshai_gateway.bridge import ThreadToLoop
from meshai_gateway.engine import Engine
from meshai_gateway.ollama.protocol import (
    ChatRequest,
    DeleteRequest,
    GenerateRequest,
    PullRequest,
    ShowRequest,
)
from meshai_gateway.service import check_model_ref, error_message
from meshai_gateway.serving_base import ServingBase, radio_fields
from meshai_gateway.web import NDJSON, WatchedStream, json_line

# The Ollama API version this gateway speaks (clients use it for feature checks).
OLLAMA_API_VERSION = "0.12.0"
# The model never unloads; Ollama shows a far-future expiry for keep_alive -1.
NEVER_EXPIRES = "2318-11-04T00:00:00Z"


class Forbidden(InvalidInput):
    status = 403


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ts(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _tag(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


class OllamaServing(ServingBase):
    media_type: ClassVar[str] = NDJSON
    encode = staticmethod(json_line)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pull_lock = asyncio.Lock()  # binds to the serving loop on first use

    @staticmethod
    def error_body(message: str, status: int, kind: str | None = None) -> dict[str, Any]:
        return {"error": message}

    # -- generation ------------------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        body = await self.parse(request, GenerateRequest)
        if body.images:
            raise InvalidInput(f"model '{body.model}' does not accept images")
        if body.suffix:
            raise InvalidInput(f"model '{body.model}' does not support insert (suffix)")
        if not body.prompt and not body.raw:
            # Ollama answers an empty prompt by (un)loading the model; ours is always resident.
            self.service.engine(body.model)
            reason = "unload" if body.keep_alive in (0, "0", "0s") else "load"
            return JSONResponse({"model": body.model, "created_at": now_rfc3339(), "response": "",
                                 "done": True, "done_reason": reason})
        req = GenerationRequest(
            prompt=body.prompt, system=body.system, raw=body.raw, template=body.template,
            options=body.options.as_dict() if body.options else {}, format=body.format or None,
        )
        gen = await self.service.start(body.model, req)
        name = body.model

        def piece(text: str) -> dict[str, Any]:
            return {"model": name, "created_at": now_rfc3339(), "response": text, "done": False}

        def final(r: GenerationResult, text: str) -> dict[str, Any]:
            return {"model": name, "created_at": now_rfc3339(), "response": text, "done": True,
                    "done_reason": r.done_reason, **gen.durations(), **radio_fields(r)}

        return await self.respond(request, gen, body.stream, piece=piece, finish=lambda r: [final(r, "")],
                                  whole=lambda r: final(r, r.text))

    async def chat(self, request: Request) -> Response:
        body = await self.parse(request, ChatRequest)
        if any(m.images for m in body.messages):
            raise InvalidInput(f"model '{body.model}' does not accept images")
        if body.tools:
            raise InvalidInput(f"model '{body.model}' does not support tools")
        if not body.messages:
            self.service.engine(body.model)
            reason = "unload" if body.keep_alive in (0, "0", "0s") else "load"
            return JSONResponse({"model": body.model, "created_at": now_rfc3339(),
                                 "message": {"role": "assistant", "content": ""}, "done": True,
                                 "done_reason": reason})
        req = GenerationRequest(
            messages=tuple(ChatMessage(m.role, m.content) for m in body.messages),
            options=body.options.as_dict() if body.options else {}, format=body.format or None,
        )
        gen = await self.service.start(body.model, req)
        name = body.model

        def piece(text: str) -> dict[str, Any]:
            return {"model": name, "created_at": now_rfc3339(), "message": {"role": "assistant", "content": text},
                    "done": False}

        def final(r: GenerationResult, text: str) -> dict[str, Any]:
            return {"model": name, "created_at": now_rfc3339(), "message": {"role": "assistant", "content": text},
                    "done": True, "done_reason": r.done_reason, **gen.durations(), **radio_fields(r)}

        return await self.respond(request, gen, body.stream, piece=piece, finish=lambda r: [final(r, "")],
                                  whole=lambda r: final(r, r.text))

    # -- models ----------------------------------------------------------------------------------------

    def _entry(self, engine: Engine) -> dict[str, Any]:
        info = engine.info
        return {
            "name": _tag(info.name),
            "model": _tag(info.name),
            "modified_at": _ts(info.modified_at),
            "size": info.size,
            "digest": info.sha256,
            "details": engine.details(),
        }

    async def tags(self, request: Request) -> Response:
        engine = self.service.manager.current
        return JSONResponse({"models": [self._entry(engine)] if engine is not None else []})

    async def ps(self, request: Request) -> Response:
        engine = self.service.manager.current
        if engine is None:
            return JSONResponse({"models": []})
        entry = self._entry(engine)
        entry.pop("modified_at")
        entry.update({"expires_at": NEVER_EXPIRES, "size_vram": 0, "context_length": engine.n_ctx})
        return JSONResponse({"models": [entry]})

    async def show(self, request: Request) -> Response:
        body = await self.parse(request, ShowRequest)
        engine = self.service.engine(body.target)
        info = engine.info
        params = info.parameters
        param_lines = []
        for key, value in params.items():
            for v in value if isinstance(value, list) else [value]:
                param_lines.append(f'{key:<30} "{v}"' if isinstance(v, str) else f"{key:<30} {v}")
        modelfile = info.modelfile.text or f"# Modelfile served by the Mesh-AI gateway\nFROM {info.path}\n"
        out: dict[str, Any] = {
            "license": engine.metadata.get("general.license", ""),
            "modelfile": modelfile,
            "parameters": "\n".join(param_lines),
            "template": info.modelfile.template or (engine.chat_template.source if engine.chat_template else ""),
            "system": engine.default_system or "",
            "details": engine.details(),
            "model_info": engine.model_info(),
            "capabilities": ["completion"],
            "modified_at": _ts(info.modified_at),
        }
        if info.run_id:
            out["run_id"] = info.run_id
        return JSONResponse(out)

    async def pull(self, request: Request) -> Response:
        """Models arrive by promotion. With a registry behind the gateway (the bucket), pulling the served
        name fetches the promoted version now (download, sha256 check, load, swap), streaming Ollama's pull
        statuses; with a local file it is a successful no-op."""
        body = await self.parse(request, PullRequest)
        name = check_model_ref(body.target)
        if not self.service.serves(name):
            raise NotFound(f"model '{name}' not found")
        manager = self.service.manager
        if not manager.source.fetches:
            self.service.engine(name)  # 503 with the reason while no model is loaded
            if not body.stream:
                return JSONResponse({"status": "success"})
            return Response(json_line({"status": "pulling manifest"}) + json_line({"status": "success"}),
                            media_type=NDJSON)

        # One fetch at a time (later pulls find the version already there), held until the fetch ends, not
        # until this response does: the fetch goes on if the client leaves, the model it brings is wanted.
        await self._pull_lock.acquire()
        try:
            updates = ThreadToLoop()
            work = asyncio.get_running_loop().run_in_executor(
                None, updates.run, lambda: manager.refresh(updates.put))
        except BaseException:
            self._pull_lock.release()
            raise
        work.add_done_callback(lambda _f: self._pull_lock.release())

        statuses = updates.items()
        # An error before any status is an HTTP status (404, 503, ...); after the first byte, a line.
        first = await anext(statuses, None)
        if not body.stream:
            async for _ in statuses:
                pass
            return JSONResponse({"status": "success"})

        async def lines() -> AsyncIterator[bytes]:
            if first is not None:
                yield json_line(first)
            try:
                async for status in statuses:
                    yield json_line(status)
            except Exception as exc:
                yield json_line({"error": error_message(exc)})
                return
            yield json_line({"status": "success"})

        return WatchedStream(lines(), media_type=NDJSON, on_close=lambda: None)

    async def delete(self, request: Request) -> Response:
        body = await self.parse(request, DeleteRequest)
        self.service.check_model(body.target)
        raise Forbidden(f"model '{body.target}' is managed by promotion in the model registry; "
                        "it cannot be deleted through this API")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": OLLAMA_API_VERSION})

