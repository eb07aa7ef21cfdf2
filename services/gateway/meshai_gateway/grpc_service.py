"""The gateway's gRPC face (Generate, Status, Refresh) over the same core as the HTTP routes.

Generations go through the HTTP side's admission control (one model, a bounded queue), which lives on the
server's event loop: the gRPC thread reads the generation's events across the bridge (bridge.LoopToThread).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from meshai.v1 import gateway_pb2, gateway_pb2_grpc
from meshai_common.inference import GenerationRequest, GenerationResult, TextDelta
from meshai_gateway.bridge import LoopToThread
from meshai_gateway.model_manager import ModelManager
from meshai_gateway.service import GenerationService


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, manager: ModelManager, service: GenerationService, loop: asyncio.AbstractEventLoop) -> None:
        self.manager = manager
        self.service = service
        self.loop = loop

    def _status(self) -> gateway_pb2.GatewayStatus:
        engine = self.manager.current
        if engine is None:
            return gateway_pb2.GatewayStatus(model=self.service.served_name, ready=False, reason=self.manager.reason)
        return gateway_pb2.GatewayStatus(model=engine.name, sha256=engine.info.sha256, run_id=engine.info.run_id,
                                         ready=True, reason="ready")

    def Status(self, request: gateway_pb2.GatewayStatusRequest, context: Any) -> gateway_pb2.GatewayStatus:  # noqa: N802
        return self._status()

    def Refresh(self, request: gateway_pb2.GatewayStatusRequest, context: Any) -> gateway_pb2.GatewayStatus:  # noqa: N802
        self.manager.refresh()  # loads and swaps when the pointer moved; errors map to status codes
        return self._status()

    def Generate(self, request: gateway_pb2.GenerateRequest, context: grpc.ServicerContext) -> Iterator[gateway_pb2.GenerateChunk]:  # noqa: N802
        options: dict[str, Any] = {}
        if request.num_predict:
            options["num_predict"] = request.num_predict
        if request.HasField("temperature"):
            options["temperature"] = request.temperature
        if request.chunk_bytes:
            options["chunk_bytes"] = request.chunk_bytes
        if request.max_chunks:
            options["max_chunks"] = request.max_chunks
        req = GenerationRequest(prompt=request.prompt, system=request.system or None, options=options)

        async def events() -> AsyncIterator[TextDelta | GenerationResult]:
            gen = await self.service.start(request.model or self.service.served_name, req)
            try:
                async for event in gen.events():
                    yield event
            finally:
                gen.close()

        events_here = LoopToThread(events, self.loop)
        context.add_callback(events_here.cancel)  # the client went away: stop generating
        for item in events_here:
            if isinstance(item, TextDelta):
                yield gateway_pb2.GenerateChunk(text=item.text)
            elif isinstance(item, GenerationResult):
                yield gateway_pb2.GenerateChunk(
                    text=item.tail, done=True, done_reason=item.done_reason, trimmed=item.trimmed,
                    chunks=item.chunks, eval_count=item.completion_tokens,
                )
