"""Prometheus metrics on a per-app ``CollectorRegistry``: nothing global, so apps (and tests) never collide."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.175, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    """The service's metrics; ``render()`` is the body of ``GET /metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "pokedex_http_requests_total",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pokedex_http_request_duration_seconds",
            "HTTP request latency by route (whole request, including upload and queueing).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "pokedex_batch_size",
            "Images per model call (micro-batching).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "pokedex_inference_duration_seconds",
            "Time of one batched model call.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "pokedex_rejected_uploads_total",
            "Uploads refused, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.queue_depth = Gauge("pokedex_queue_depth", "Images waiting for a model call.", registry=self.registry)
        self.ready = Gauge(
            "pokedex_model_ready", "1 once the model is loaded and warmed up; 0 again while draining.",
            registry=self.registry,
        )  # fmt: skip
        self.inflight = Gauge(
            "pokedex_inflight_requests", "Prediction requests admitted and not yet answered.", registry=self.registry
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Counts every HTTP request (including ones answered by inner middleware, such as 413s) by route label.

    The label is the path template of the route that matched (``/predict``, ``/static``, ``/docs``...), read
    from the ASGI scope after routing, so new routes label themselves and arbitrary client URLs can't blow up
    label cardinality: anything unmatched is ``unmatched``.
    """

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    @staticmethod
    def route_label(scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None)
        return path if isinstance(path, str) and path else "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = self.route_label(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
