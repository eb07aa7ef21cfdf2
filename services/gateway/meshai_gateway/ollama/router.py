"""Ollama routes: thin, every decision is in serving.py."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from meshai_gateway.ollama.serving import OllamaServing
from meshai_gateway.web import plain


def ollama_router(serving: OllamaServing) -> APIRouter:
    router = APIRouter()

    @router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def root() -> Response:
        return plain("Ollama is running")

    @router.post("/api/generate")
    async def generate(request: Request) -> Response:
        return await serving.generate(request)

    @router.post("/api/chat")
    async def chat(request: Request) -> Response:
        return await serving.chat(request)

    @router.get("/api/tags")
    async def tags(request: Request) -> Response:
        return await serving.tags(request)

    @router.post("/api/show")
    async def show(request: Request) -> Response:
        return await serving.show(request)

    @router.get("/api/ps")
    async def ps(request: Request) -> Response:
        return await serving.ps(request)

    @router.get("/api/version")
    async def version(request: Request) -> Response:
        return await serving.version(request)

    @router.post("/api/pull")
    async def pull(request: Request) -> Response:
        return await serving.pull(request)

    @router.delete("/api/delete")
    async def delete(request: Request) -> Response:
        return await serving.delete(request)

    return router
