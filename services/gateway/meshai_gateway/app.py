"""The app factory: one core (ModelManager + GenerationService), thin routers per API family, health, metrics.

    app = create_app(GatewaySettings(), LocalFileSource("model.gguf", "mesh-ai"))
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshai_common.errors import MeshAIError
from meshai_gateway.auth import ApiKeyMiddleware
from meshai_gateway.engine import Engine, EngineFactory
from meshai_gateway.metrics import GatewayMetrics, MetricsMiddleware
from meshai_gateway.model_manager import ModelManager
from meshai_gateway.model_source import ModelSource
from meshai_gateway.ollama.router import ollama_router
from meshai_gateway.ollama.serving import OllamaServing
from meshai_gateway.openai.router import openai_router
from meshai_gateway.openai.serving import OpenAIServing
from meshai_gateway.service import GenerationService
from meshai_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


def create_app(settings: GatewaySettings, model_source: ModelSource, *,
               engine_factory: EngineFactory = Engine) -> FastAPI:
    """Build the gateway. The model loads in the background at start-up: /healthz answers at once,
    /readyz and generation routes answer 503 until the model is loaded."""
    metrics = GatewayMetrics()

    def on_model(engine: Engine) -> None:
        metrics.model_changed(engine.name, engine.info.sha256, engine.load_ns / 1e9, swapped=manager.swaps > 0)

    manager = ModelManager(model_source, settings, factory=engine_factory, on_change=on_model)
    service = GenerationService(manager, settings, metrics, served_name=model_source.name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager.start()
        try:
            yield
        finally:
            manager.stop()
            service.shutdown()
            metrics.model_loaded.set(0)

    app = FastAPI(title="Mesh-AI gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.manager = manager
    app.state.service = service
    app.state.metrics = metrics

    ollama = OllamaServing(service, settings.max_body_bytes)
    openai = OpenAIServing(service, settings.max_body_bytes)
    app.include_router(ollama_router(ollama))
    app.include_router(openai_router(openai))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        engine = manager.current
        if engine is None:
            return JSONResponse({"status": "not ready", "reason": manager.reason}, status_code=503)
        body = {"status": "ready", "model": engine.name, "sha256": engine.info.sha256,
                "run_id": engine.info.run_id, "loaded_at": engine.loaded_at}
        if manager.refresh_error:  # serving, but the latest promotion was not taken: say why
            body["refresh_error"] = manager.refresh_error
        return JSONResponse(body)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def family(request: Request) -> OllamaServing | OpenAIServing:
        """Errors answer in the shape of the API the client speaks."""
        return openai if request.url.path.startswith("/v1/") else ollama

    @app.exception_handler(MeshAIError)
    async def domain_error(request: Request, exc: MeshAIError) -> Response:
        return family(request).error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: f"not found: {request.method} {request.url.path}",
                   405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                         str(exc.detail))
        body = family(request).error_body(message, exc.status_code, kind="invalid_request_error")
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts refused requests too
    return app
