"""Admission control for the prediction routes: a cap on requests in flight, and no new work while draining.

Runs as ASGI middleware, *before* the request body is read: a request turned away costs a few hundred bytes,
whatever it was about to upload, so memory stays bounded by ``max_inflight`` × (``max_upload_mb`` + one decoded
image) however many clients connect. Uvicorn's own ``limit_concurrency`` would also answer 503, but counts every
connection (health checks and metrics scrapes included) and sends no ``Retry-After``.

While the service drains (SIGTERM received, ``pokedex.serve.server``) new prediction requests get 503 with
``Connection: close`` so that a load balancer retries them elsewhere, while the ones already admitted finish.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from pokedex.serve.service import Service

ADMITTED_PATHS = frozenset({"/predict", "/predict/batch"})


class AdmissionMiddleware:
    """503 + ``Retry-After`` for prediction requests beyond ``max_inflight``, or any while draining."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in ADMITTED_PATHS:
            await self.app(scope, receive, send)
            return
        service = self.service
        if service.draining:
            await self._reject(scope, receive, send, "server is shutting down; retry (another instance)", close=True)
            return
        if service.inflight >= service.settings.max_inflight:
            limit = service.settings.max_inflight
            await self._reject(scope, receive, send, f"server busy: {limit} requests already in progress; retry")
            return
        service.inflight += 1  # the event loop is single-threaded: no lock needed
        service.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            service.inflight -= 1
            service.metrics.inflight.dec()

    async def _reject(self, scope: Scope, receive: Receive, send: Send, detail: str, *, close: bool = False) -> None:
        self._label_route(scope)
        self.service.metrics.rejected.labels("503").inc()
        headers = {"Retry-After": str(self.service.settings.retry_after_s)}
        if close:
            headers["Connection"] = "close"
        await JSONResponse({"detail": detail}, status_code=503, headers=headers)(scope, receive, send)

    @staticmethod
    def _label_route(scope: Scope) -> None:
        """Label the 503 with its route (``RequestMetricsMiddleware`` reads ``scope["route"].path``, which routing
        would have set), so the overload alert (``route=~"/predict.*"``) sees it. The admitted paths have no
        parameters: each path is its route's template."""
        scope.setdefault("route", _RouteLabel(scope["path"]))


@dataclass(frozen=True)
class _RouteLabel:
    path: str
