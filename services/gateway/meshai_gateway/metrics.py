"""Prometheus metrics, one registry per app (so several apps in one process, as in tests, do not clash)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30)
RATE_BUCKETS = (1, 2, 5, 10, 20, 40, 60, 80, 100, 150, 200, 400, 800)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("meshai_gateway_requests", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("meshai_gateway_request_duration_seconds",
                                 "HTTP request duration, until the last byte", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("meshai_gateway_time_to_first_token_seconds",
                              "From admission to the first generated token", buckets=TTFT_BUCKETS, registry=r)
        self.tokens_per_s = Histogram("meshai_gateway_generation_tokens_per_second",
                                      "Generation speed per request (completion tokens / eval time)",
                                      buckets=RATE_BUCKETS, registry=r)
        self.prompt_tokens = Counter("meshai_gateway_prompt_tokens", "Prompt tokens evaluated", registry=r)
        self.completion_tokens = Counter("meshai_gateway_completion_tokens", "Tokens generated", registry=r)
        self.generations = Counter("meshai_gateway_generations", "Finished generations by done_reason",
                                   ["done_reason"], registry=r)
        self.trims = Counter("meshai_gateway_radio_trims", "Replies cut to fit the radio budget", registry=r)
        self.budget_stops = Counter("meshai_gateway_radio_budget_stops",
                                    "Generations stopped early by the radio budget", registry=r)
        self.reply_chunks = Histogram("meshai_gateway_reply_chunks", "Radio chunks per reply",
                                      buckets=(1, 2, 3, 4, 5, 8, 16), registry=r)
        self.queue_depth = Gauge("meshai_gateway_queue_depth", "Requests waiting for a generation slot",
                                 registry=r)
        self.in_flight = Gauge("meshai_gateway_generations_in_flight", "Generations running", registry=r)
        self.rejected = Counter("meshai_gateway_rejected", "Requests refused because the queue was full",
                                registry=r)
        self.disconnects = Counter("meshai_gateway_client_disconnects",
                                   "Generations stopped because the client went away", registry=r)
        self.model_loaded = Gauge("meshai_gateway_model_loaded", "1 when a model is loaded and serving",
                                  registry=r)
        self.model_info = Gauge("meshai_gateway_model_info", "The served model version (value 1)",
                                ["name", "sha256"], registry=r)
        self.model_swaps = Counter("meshai_gateway_model_swaps", "Hot swaps to a new model version", registry=r)
        self.model_load_seconds = Gauge("meshai_gateway_model_load_seconds", "Time the current model took to load",
                                        registry=r)

    def queue_changed(self, waiting: int, running: int) -> None:
        self.queue_depth.set(waiting)
        self.in_flight.set(running)

    def model_changed(self, name: str, sha256: str, load_s: float, swapped: bool) -> None:
        self.model_info.clear()
        self.model_info.labels(name=name, sha256=sha256).set(1)
        self.model_loaded.set(1)
        self.model_load_seconds.set(load_s)
        if swapped:
            self.model_swaps.inc()


class MetricsMiddleware:
    """Counts every HTTP request by route template (not raw path) and times it to the last body byte."""

    def __init__(self, app: Any, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def wrapped_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, wrapped_send)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(route=name, method=scope.get("method", ""),
                                         status=str(status["code"])).inc()
            self.metrics.latency.labels(route=name).observe(time.perf_counter() - started)
