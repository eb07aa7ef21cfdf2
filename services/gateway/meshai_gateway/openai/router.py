"""OpenAI-compatible routes under /v1: thin, the logic is in serving.py."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from meshai_gateway.openai.serving import OpenAIServing


def openai_router(serving: OpenAIServing) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await serving.chat_completions(request)

    @router.get("/models")
    async def models(request: Request) -> Response:
        return await serving.models(request)

    return router
