"""The HTTP routes, one ``APIRouter``; each handler gets the app's ``Service`` through ``Depends``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response

from pokedex.serve.schemas import BatchResponse, PredictResponse
from pokedex.serve.service import Service
from pokedex.serve.uploads import SUPPORTED_FORMATS, UploadError

STATIC_DIR = Path(__file__).resolve().parent / "static"
FORMATS = ", ".join(SUPPORTED_FORMATS)
UNSURE = (
    "Low confidence: this doesn't look like the sprites I was trained on. Try a tighter crop of one Pokémon, "
    "with less background."
)

router = APIRouter()


def retry_after(service: Service) -> dict[str, str]:
    return {"Retry-After": str(service.settings.retry_after_s)}


async def get_service(request: Request) -> Service:
    """The service of the app that received the request (``create_app`` puts it on ``app.state``).

    ``async`` (like ``get_top_k``) although it never awaits: FastAPI runs a plain ``def`` dependency in its
    thread pool, two thread hand-offs per request for nothing (measured in docs/performance.md)."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_top_k(
    service: ServiceDep,
    top_k: Annotated[
        int | None, Query(ge=1, description="how many classes to return, best first (at most `top_k_max`, GET /model)")
    ] = None,
) -> int:
    """``top_k`` with the app's own default and upper bound (settings differ per app, so no static ``le=``)."""
    settings = service.settings
    if top_k is None:
        return settings.top_k_default
    if top_k > settings.top_k_max:
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("query", "top_k"),
                    "input": top_k,
                    "msg": f"Input should be less than or equal to {settings.top_k_max}",
                    "ctx": {"le": settings.top_k_max},
                }
            ]
        )
    return top_k


TopK = Annotated[int, Depends(get_top_k)]


def _elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _answer(service: Service, probs: np.ndarray, top_k: int) -> dict[str, Any]:
    predictor, _ = service.require_ready()
    unsure = service.is_unsure(probs)
    return {
        "predictions": predictor.top_k(probs, top_k),
        "low_confidence": unsure,
        "notice": UNSURE if unsure else None,
    }


async def _classify(service: Service, data: bytes, name: str) -> np.ndarray:
    """Decode, predict and account one image (telemetry: metrics, drift window, log); its probabilities."""
    array, facts = await service.decode(data, name)
    probs, embedding = await service.infer(array)
    service.observe(probs, facts, embedding)
    return probs


@router.post("/predict", response_model=PredictResponse, tags=["predict"])
async def predict(
    service: ServiceDep, file: Annotated[UploadFile, File(description=f"one image ({FORMATS})")], top_k: TopK
) -> dict[str, Any]:
    """Which Pokémon is this? A sprite, a screenshot, a photo of a screen: the top-k names with probabilities.

    ``low_confidence`` is true (with a ``notice``) when the best guess is below the service's
    ``low_confidence`` threshold: then the picture probably does not look like the sprites the model learnt.
    """
    start = time.perf_counter()
    service.require_ready()
    probs = await _classify(service, await file.read(), "file")
    return {**_answer(service, probs, top_k), "model": service.model_ref(), "elapsed_ms": _elapsed_ms(start)}


@router.post("/predict/batch", response_model=BatchResponse, tags=["predict"])
async def predict_batch(
    service: ServiceDep,
    files: Annotated[list[UploadFile], File(description=f"several images ({FORMATS}); results keep their order")],
    top_k: TopK,
) -> dict[str, Any]:
    """Classify several images; one result per file, in the order sent. One bad file fails the request."""
    start = time.perf_counter()
    service.require_ready()
    limit = service.settings.max_files
    if len(files) > limit:
        raise UploadError(413, f"files: {len(files)} files exceeds the limit of {limit} per request")
    blobs = [await f.read() for f in files]
    decoded = await asyncio.gather(
        *(service.decode(b, f"files[{i}]") for i, b in enumerate(blobs)), return_exceptions=True
    )
    for outcome in decoded:  # report the first bad file in upload order, not in completion order
        if isinstance(outcome, BaseException):
            raise outcome
    outputs = await asyncio.gather(*(service.infer(array) for array, _ in decoded))  # type: ignore[misc]
    for (_, facts), (probs, embedding) in zip(decoded, outputs, strict=True):  # type: ignore[misc]
        service.observe(probs, facts, embedding)
    results = [{"index": i, **_answer(service, probs, top_k)} for i, (probs, _) in enumerate(outputs)]
    return {"results": results, "model": service.model_ref(), "elapsed_ms": _elapsed_ms(start)}


@router.get("/health", tags=["ops"], responses={503: {"description": "the model failed to load"}})
async def health(service: ServiceDep) -> Any:
    """Liveness: 200 while the process works or is still loading its model; 503 once the model failed to load.

    ``python -m pokedex.serve`` exits non-zero right after such a failure anyway (so an orchestrator restarts
    it); the 503 covers an app embedded in another server.
    """
    if service.load_error is not None:
        return JSONResponse({"status": "failed", "detail": service.load_error}, status_code=503)
    return {"status": "ok"}


@router.get("/ready", tags=["ops"], responses={503: {"description": "model loading, failed, or shutting down"}})
async def ready(service: ServiceDep) -> Any:
    """Readiness: the model is loaded and warmed up, and the service is not draining (what probes should use)."""
    if service.draining:
        return JSONResponse({"detail": "server is shutting down"}, status_code=503, headers=retry_after(service))
    return {"status": "ready", "model": service.model_ref()}


@router.get("/drift", tags=["ops"], responses={404: {"description": "the model's sidecar has no drift reference"}})
async def drift(service: ServiceDep) -> Any:
    """Drift of the last ``drift_window`` predictions against the model's validation split: per signal the
    score, its calibrated threshold and a verdict, and an overall verdict (``filling`` until the window is full)."""
    service.require_ready()
    if service.drift is None:
        detail = "no drift monitoring: the model was exported without a drift reference, or telemetry=false"
        return JSONResponse({"detail": detail}, status_code=404)
    return service.drift.report()


@router.get(
    "/classes/{index}/thumbnail",
    tags=["predict"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"description": "no such class, or no thumbnails"}},
)
async def thumbnail(service: ServiceDep, index: int) -> Response:
    """A training sprite of class ``index`` (small PNG), so a person can check an answer at a glance."""
    service.require_ready()
    png = service.thumbnails.get(index)
    if png is None:
        return JSONResponse({"detail": f"no thumbnail for class {index}"}, status_code=404)
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/model", tags=["ops"])
async def model(service: ServiceDep) -> dict[str, Any]:
    """The served model: name, backend, sha256, classes, preprocessing, and the request limits."""
    predictor, _ = service.require_ready()
    s = service.settings
    limits = {
        "max_upload_mb": s.max_upload_mb,
        "max_pixels": s.max_pixels,
        "max_files": s.max_files,
        "top_k_default": s.top_k_default,
        "top_k_max": s.top_k_max,
        "formats": list(SUPPORTED_FORMATS),
    }
    return {**predictor.describe(), "limits": limits}


@router.get("/metrics", tags=["ops"])
async def metrics(service: ServiceDep) -> Response:
    """Prometheus text format."""
    service.metrics.queue_depth.set(service.batcher.queue_depth if service.batcher else 0)
    return Response(service.metrics.render(), media_type=service.metrics.content_type)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
