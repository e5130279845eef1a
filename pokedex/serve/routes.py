"""The HTTP routes, one ``APIRouter``; each handler gets the app's ``Service`` through ``Depends``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response

from pokedex.serve.schemas import BatchResponse, PredictResponse
from pokedex.serve.service import Service
from pokedex.serve.uploads import SUPPORTED_FORMATS, UploadError

STATIC_DIR = Path(__file__).resolve().parent / "static"
FORMATS = ", ".join(SUPPORTED_FORMATS)

router = APIRouter()


def get_service(request: Request) -> Service:
    """The service of the app that received the request (``create_app`` puts it on ``app.state``)."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_top_k(
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


@router.post("/predict", response_model=PredictResponse, tags=["predict"])
async def predict(
    service: ServiceDep, file: Annotated[UploadFile, File(description=f"one image ({FORMATS})")], top_k: TopK
) -> dict[str, Any]:
    """Classify one image."""
    start = time.perf_counter()
    predictor, _ = service.require_ready()
    array = await service.decode(await file.read(), "file")
    probs = await service.infer(array)
    return {
        "predictions": predictor.top_k(probs, top_k),
        "model": service.model_ref(),
        "elapsed_ms": _elapsed_ms(start),
    }


@router.post("/predict/batch", response_model=BatchResponse, tags=["predict"])
async def predict_batch(
    service: ServiceDep,
    files: Annotated[list[UploadFile], File(description=f"several images ({FORMATS}); results keep their order")],
    top_k: TopK,
) -> dict[str, Any]:
    """Classify several images; one result per file, in the order sent. One bad file fails the request."""
    start = time.perf_counter()
    predictor, _ = service.require_ready()
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
    probs = await asyncio.gather(*(service.infer(a) for a in decoded))
    results = [{"index": i, "predictions": predictor.top_k(p, top_k)} for i, p in enumerate(probs)]
    return {"results": results, "model": service.model_ref(), "elapsed_ms": _elapsed_ms(start)}


@router.get("/health", tags=["ops"])
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready", tags=["ops"], responses={503: {"description": "model loading or failed to load"}})
async def ready(service: ServiceDep) -> dict[str, Any]:
    """Readiness: the model is loaded and warmed up."""
    return {"status": "ready", "model": service.model_ref()}


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
