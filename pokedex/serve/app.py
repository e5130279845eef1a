"""The FastAPI app factory: routes, limits, micro-batching, metrics and the static web page.

``create_app(settings)`` builds everything (no module-level state); the model is loaded and warmed up in the
background after startup, so ``/health`` answers at once and ``/ready`` turns 200 when predictions can be made.
"""

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

import pokedex
from pokedex.predictor import Predictor, load_predictor
from pokedex.preprocess import DEFAULT_MAX_PIXELS
from pokedex.serve.batching import MicroBatcher, QueueFullError
from pokedex.serve.metrics import RequestMetricsMiddleware, ServeMetrics
from pokedex.serve.uploads import SUPPORTED_FORMATS, BodySizeLimitMiddleware, UploadError, decode_upload

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
ROUTES = frozenset({"/", "/predict", "/predict/batch", "/health", "/ready", "/model", "/metrics", "/docs",
                    "/openapi.json"})  # fmt: skip


@dataclass(frozen=True)
class ServeSettings:
    """Everything the app needs; built from ``conf/serve.yaml`` by ``python -m pokedex.serve``."""

    model_path: str = "models/model.onnx"
    max_upload_mb: float = 10.0  # whole request body; larger → 413 before it is read
    max_pixels: int = DEFAULT_MAX_PIXELS  # width × height from the image header; larger → 413, never decoded
    max_files: int = 32  # files per /predict/batch request
    max_batch_size: int = 16  # images per model call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_queue: int = 1024  # images waiting for the model; more → 503
    top_k_default: int = 5
    top_k_max: int = 50
    intra_op_threads: int = 0  # model threads (ONNX Runtime session / torch); 0 = library default
    decode_threads: int = 2  # threads decoding uploads off the event loop
    warmup: bool = True

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "ServeSettings":
        """Take the known keys (a Hydra config also has host, port, ...)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


class Prediction(BaseModel):
    label: str
    index: int
    probability: float


class ModelRef(BaseModel):
    name: str
    sha256: str


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: ModelRef
    elapsed_ms: float


class BatchItem(BaseModel):
    index: int
    predictions: list[Prediction]


class BatchResponse(BaseModel):
    results: list[BatchItem]
    model: ModelRef
    elapsed_ms: float


class NotReadyError(Exception):
    """The model is still loading (or failed to load)."""


class Service:
    """Per-app runtime: the predictor, the batcher, the executors and the metrics."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = ServeMetrics()
        self.predictor: Predictor | None = None
        self.batcher: MicroBatcher | None = None
        self.load_error: str | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._infer_pool: ThreadPoolExecutor | None = None
        self._decode_pool: ThreadPoolExecutor | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="pokedex-infer")
        self._decode_pool = ThreadPoolExecutor(
            max(1, self.settings.decode_threads), thread_name_prefix="pokedex-decode"
        )
        self._load_task = asyncio.get_running_loop().create_task(self._load(), name="pokedex-load")

    async def _load(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        try:
            threads = s.intra_op_threads or None
            predictor = await loop.run_in_executor(
                self._infer_pool, functools.partial(load_predictor, s.model_path, threads=threads)
            )
            if s.warmup:  # first calls allocate memory and pick kernels; do it before taking traffic
                size = predictor.spec.image_size
                for n in sorted({1, s.max_batch_size}):
                    warm = np.zeros((n, 4, size, size), dtype=np.uint8)
                    await loop.run_in_executor(self._infer_pool, predictor.predict_arrays, warm)
            assert self._infer_pool is not None
            batcher = MicroBatcher(
                predictor.predict_arrays,
                self._infer_pool,
                max_batch_size=s.max_batch_size,
                max_wait_ms=s.max_wait_ms,
                max_queue=s.max_queue,
                on_batch=self.metrics.observe_batch,
            )
            batcher.start()
            self.batcher, self.predictor = batcher, predictor
            self.metrics.ready.set(1)
            log.info("ready: %s (%s backend)", predictor.name, predictor.backend)
        except Exception as exc:
            self.load_error = f"model failed to load: {exc}"
            log.error("%s", self.load_error, exc_info=True)

    async def stop(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task
        if self.batcher is not None:
            await self.batcher.stop()
        for pool in (self._infer_pool, self._decode_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self.metrics.ready.set(0)

    # -- request helpers -------------------------------------------------------------------------------
    def require_ready(self) -> tuple[Predictor, MicroBatcher]:
        if self.predictor is None or self.batcher is None:
            raise NotReadyError(self.load_error or "model is loading; try again shortly")
        return self.predictor, self.batcher

    def model_ref(self) -> dict[str, str]:
        predictor, _ = self.require_ready()
        return {"name": predictor.name, "sha256": predictor.sha256}

    async def decode(self, data: bytes, name: str) -> np.ndarray:
        """Decode off the event loop with the shared preprocessing; ``UploadError`` on bad input."""
        predictor, batcher = self.require_ready()
        job = functools.partial(
            decode_upload, data, image_size=predictor.spec.image_size, max_pixels=self.settings.max_pixels, name=name
        )
        with batcher.expect():
            return await asyncio.get_running_loop().run_in_executor(self._decode_pool, job)

    async def infer(self, array: np.ndarray) -> np.ndarray:
        _, batcher = self.require_ready()
        return await batcher.submit(array)


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """Build a self-contained app (own metrics registry, executors and model) from ``settings``."""
    settings = settings or ServeSettings()
    service = Service(settings)

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
        summary="Which Pokémon is this? Upload a sprite, get the top-k names with probabilities.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=service.metrics, routes=ROUTES)  # outermost
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        service.metrics.rejected.labels(str(exc.status_code)).inc()
        return _error(exc.status_code, exc.detail)

    @app.exception_handler(NotReadyError)
    async def not_ready(request: Request, exc: NotReadyError) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(QueueFullError)
    async def queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        return _error(503, str(exc))

    TopK = Annotated[int, Query(ge=1, le=settings.top_k_max, description="how many classes to return, best first")]
    formats = ", ".join(SUPPORTED_FORMATS)

    @app.post("/predict", response_model=PredictResponse, tags=["predict"])
    async def predict(
        file: Annotated[UploadFile, File(description=f"one image ({formats})")],
        top_k: TopK = settings.top_k_default,
    ) -> dict[str, Any]:
        """Classify one image."""
        start = time.perf_counter()
        predictor, _ = service.require_ready()
        array = await service.decode(await file.read(), "file")
        probs = await service.infer(array)
        return {
            "predictions": predictor.top_k(probs, top_k),
            "model": service.model_ref(),
            "elapsed_ms": round((time.perf_counter() - start) * 1000, 3),
        }

    @app.post("/predict/batch", response_model=BatchResponse, tags=["predict"])
    async def predict_batch(
        files: Annotated[list[UploadFile], File(description=f"several images ({formats}); results keep their order")],
        top_k: TopK = settings.top_k_default,
    ) -> dict[str, Any]:
        """Classify several images; one result per file, in the order sent. One bad file fails the request."""
        start = time.perf_counter()
        predictor, _ = service.require_ready()
        if len(files) > settings.max_files:
            raise UploadError(413, f"files: {len(files)} files exceeds the limit of {settings.max_files} per request")
        blobs = [await f.read() for f in files]
        decoded = await asyncio.gather(
            *(service.decode(b, f"files[{i}]") for i, b in enumerate(blobs)), return_exceptions=True
        )
        for outcome in decoded:  # report the first bad file in upload order, not in completion order
            if isinstance(outcome, BaseException):
                raise outcome
        probs = await asyncio.gather(*(service.infer(a) for a in decoded))
        return {
            "results": [{"index": i, "predictions": predictor.top_k(p, top_k)} for i, p in enumerate(probs)],
            "model": service.model_ref(),
            "elapsed_ms": round((time.perf_counter() - start) * 1000, 3),
        }

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], responses={503: {"description": "model loading or failed to load"}})
    async def ready() -> dict[str, Any]:
        """Readiness: the model is loaded and warmed up."""
        return {"status": "ready", "model": service.model_ref()}

    @app.get("/model", tags=["ops"])
    async def model() -> dict[str, Any]:
        """The served model: name, backend, sha256, classes, preprocessing, and the request limits."""
        predictor, _ = service.require_ready()
        limits = {
            "max_upload_mb": settings.max_upload_mb,
            "max_pixels": settings.max_pixels,
            "max_files": settings.max_files,
            "top_k_default": settings.top_k_default,
            "top_k_max": settings.top_k_max,
            "formats": list(SUPPORTED_FORMATS),
        }
        return {**predictor.describe(), "limits": limits}

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        """Prometheus text format."""
        service.metrics.queue_depth.set(service.batcher.queue_depth if service.batcher else 0)
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    return app
