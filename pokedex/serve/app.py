"""The FastAPI app factory: one ``Service``, the routes, limits, error mapping, metrics and the static web page.

``create_app(settings)`` builds everything (no module-level state); the model is loaded and warmed up in the
background after startup, so ``/health`` answers at once and ``/ready`` turns 200 when predictions can be made.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

import pokedex
from pokedex.serve.admission import AdmissionMiddleware
from pokedex.serve.batching import QueueFullError
from pokedex.serve.prometheus import RequestMetricsMiddleware
from pokedex.serve.routes import STATIC_DIR, retry_after, router
from pokedex.serve.service import NotReadyError, PreprocessingError, Service
from pokedex.serve.settings import ServeSettings
from pokedex.serve.uploads import BodySizeLimitMiddleware, UploadError


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI, service: Service) -> None:
    """Map the service's exceptions to HTTP statuses with a message that says what to do."""

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        service.metrics.rejected.labels(str(exc.status_code)).inc()
        return _error(exc.status_code, exc.detail)

    @app.exception_handler(NotReadyError)
    async def not_ready(request: Request, exc: NotReadyError) -> JSONResponse:
        return _error(503, str(exc), retry_after(service))

    @app.exception_handler(QueueFullError)
    async def queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        return _error(503, str(exc), retry_after(service))

    @app.exception_handler(PreprocessingError)
    async def preprocessing_bug(request: Request, exc: PreprocessingError) -> JSONResponse:
        return _error(500, f"{exc} (logged; not a problem with your upload)")


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """Build a self-contained app (own metrics registry, executors and model) from ``settings``."""
    service = Service(settings or ServeSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from files in the package, not from a CDN
    app = FastAPIOffline(
        title="pokedex",
        version=pokedex.__version__,
        summary="Which Pokémon is this? Upload a sprite, a screenshot or a photo of a screen (PNG, JPEG, GIF, WebP, "
        "BMP); get the top-k names with probabilities, and a notice when the model is unsure.",
        lifespan=lifespan,
    )
    app.state.service = service  # what routes.get_service hands to every handler
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=service.settings.max_upload_bytes)
    app.add_middleware(AdmissionMiddleware, service=service)  # before any body is read: bounded memory
    app.add_middleware(RequestMetricsMiddleware, metrics=service.metrics)  # outermost: counts 413s too
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(router)
    _add_error_handlers(app, service)
    return app
