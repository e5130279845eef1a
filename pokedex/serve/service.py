"""The per-app runtime behind the routes: model loading, decoding off the event loop, micro-batched inference
and per-prediction telemetry (metrics, drift window, optional prediction log)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pokedex.drift.monitor import DriftMonitor
from pokedex.drift.predlog import PredictionLog
from pokedex.drift.records import PredictionRecord, UploadFacts
from pokedex.drift.reference import SIDECAR_KEY, reference_share_below
from pokedex.inference.base import Predictor, sidecar_path
from pokedex.inference.loader import load_predictor
from pokedex.serve.batching import MicroBatcher
from pokedex.serve.prometheus import ServeMetrics
from pokedex.serve.settings import ServeSettings
from pokedex.serve.telemetry import Telemetry
from pokedex.serve.uploads import UploadError, decode_upload

log = logging.getLogger(__name__)
INFER_THREAD, DECODE_THREAD = "pokedex-infer", "pokedex-decode"  # thread names, also for the OS (/proc)


def _name_pool_thread(name: str) -> None:
    """Name the calling thread for the OS (Linux; a no-op elsewhere): ``top -H``, py-spy and
    ``scripts/bench_serve.py`` then tell model, decoding and event-loop CPU apart. The threads ONNX Runtime
    starts from the inference thread inherit its name."""
    with contextlib.suppress(OSError):
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(name[:15])


class NotReadyError(Exception):
    """The model is still loading (or failed to load)."""


class PreprocessingError(Exception):
    """Preprocessing failed on an image that decoded fine: a bug on our side (500), never the client's fault."""


class Service:
    """Per-app runtime: the predictor, the batcher, the executors, the metrics and the telemetry."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = ServeMetrics()
        self.predictor: Predictor | None = None
        self.batcher: MicroBatcher | None = None
        self.load_error: str | None = None
        self.telemetry: Telemetry | None = None
        self.drift: DriftMonitor | None = None
        self.thumbnails: dict[int, bytes] = {}
        self.inflight = 0  # prediction requests admitted (pokedex.serve.admission)
        self.draining = False  # SIGTERM received: no new prediction requests (pokedex.serve.server)
        self._load_task: asyncio.Task[None] | None = None
        self._infer_pool: ThreadPoolExecutor | None = None
        self._decode_pool: ThreadPoolExecutor | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._infer_pool = ThreadPoolExecutor(
            max(1, self.settings.inference_workers),
            thread_name_prefix=INFER_THREAD,
            initializer=_name_pool_thread,
            initargs=(INFER_THREAD,),
        )
        self._decode_pool = ThreadPoolExecutor(
            max(1, self.settings.decode_threads),
            thread_name_prefix=DECODE_THREAD,
            initializer=_name_pool_thread,
            initargs=(DECODE_THREAD,),
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
            self._start_monitoring(predictor)
            predict = predictor.predict_with_embeddings if self._wants_embeddings() else predictor.predict_arrays
            if s.warmup:  # first calls allocate memory and pick kernels; do it before taking traffic
                size = predictor.spec.image_size
                for n in sorted({1, s.max_batch_size}):
                    warm = np.zeros((n, 4, size, size), dtype=np.uint8)
                    await loop.run_in_executor(self._infer_pool, predict, warm)
            assert self._infer_pool is not None
            batcher = MicroBatcher(
                predict,
                self._infer_pool,
                max_batch_size=s.max_batch_size,
                max_wait_ms=s.max_wait_ms,
                max_queue=s.max_queue,
                workers=s.inference_workers,
                on_batch=self.metrics.observe_batch,
            )
            batcher.start()
            self.batcher, self.predictor = batcher, predictor
            self.metrics.ready.set(1)
            log.info("ready: %s (%s backend)", predictor.name, predictor.backend)
        except Exception as exc:  # the CLI exits non-zero on this (pokedex.serve.server); /health says 503
            self.load_error = f"model failed to load: {exc}"
            log.error("%s", self.load_error, exc_info=True)

    def _wants_embeddings(self) -> bool:
        return self.drift is not None and self.drift.wants_embeddings

    def _start_monitoring(self, predictor: Predictor) -> None:
        """Telemetry, the drift monitor (if the sidecar has a reference) and the thumbnails (if exported)."""
        s = self.settings
        meta = _read_json(sidecar_path(predictor.path)) if predictor.backend == "onnx" else {}
        self.thumbnails = _read_thumbnails(predictor, meta)
        if not s.telemetry:
            return
        reference = meta.get(SIDECAR_KEY)
        self.drift = DriftMonitor(reference, window=s.drift_window) if reference else None
        if self.drift is None:
            log.warning("%s: no drift reference in the sidecar; GET /drift answers 404", predictor.path.name)
        elif not self.drift.thresholds:
            log.warning("drift reference not calibrated for drift_window=%d: verdicts say 'uncalibrated'",
                        s.drift_window)  # fmt: skip
        prediction_log = None
        if s.prediction_log:
            max_bytes = int(s.prediction_log_max_mb * 2**20)
            prediction_log = PredictionLog(s.prediction_log, max_bytes=max_bytes, backups=s.prediction_log_backups)
        self.telemetry = Telemetry(
            self.metrics.registry,
            predictor.class_names,
            low_confidence=s.low_confidence,
            drift=self.drift,
            prediction_log=prediction_log,
            model_id=predictor.sha256[:12],
            reference_low_confidence=(
                reference_share_below(reference, "confidence", s.low_confidence) if reference else None
            ),
        )

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
        if self.telemetry is not None:
            self.telemetry.close()
        self.metrics.ready.set(0)

    def begin_drain(self) -> None:
        """SIGTERM: stop admitting prediction requests and say not-ready; the ones in flight finish."""
        self.draining = True
        self.metrics.ready.set(0)

    # -- request helpers -------------------------------------------------------------------------------
    def require_ready(self) -> tuple[Predictor, MicroBatcher]:
        if self.predictor is None or self.batcher is None:
            raise NotReadyError(self.load_error or "model is loading; try again shortly")
        return self.predictor, self.batcher

    def model_ref(self) -> dict[str, str]:
        predictor, _ = self.require_ready()
        return {"name": predictor.name, "sha256": predictor.sha256}

    async def decode(self, data: bytes, name: str) -> tuple[np.ndarray, UploadFacts]:
        """Decode off the event loop with the shared preprocessing.

        ``UploadError`` (4xx) for bad input; anything else raised while preprocessing is our bug: logged at ERROR
        with its traceback and answered 500 (``PreprocessingError``), never blamed on the upload.
        """
        predictor, batcher = self.require_ready()
        job = functools.partial(
            decode_upload, data, image_size=predictor.spec.image_size, max_pixels=self.settings.max_pixels, name=name
        )
        with batcher.expect():
            try:
                return await asyncio.get_running_loop().run_in_executor(self._decode_pool, job)
            except UploadError:
                raise
            except Exception as exc:
                log.error("%s: preprocessing failed on a decodable image", name, exc_info=True)
                raise PreprocessingError(f"{name}: internal error while preprocessing the image") from exc

    async def infer(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, embedding or None) of one canonical array, computed in a shared batch."""
        _, batcher = self.require_ready()
        row = await batcher.submit(array)
        return row if isinstance(row, tuple) else (row, None)

    def observe(self, probs: np.ndarray, facts: UploadFacts, embedding: np.ndarray | None) -> None:
        """Account one served image in the telemetry (metrics, drift window, log); a no-op when it is off."""
        if self.telemetry is not None:
            self.telemetry.observe(PredictionRecord.from_probs(probs, facts, embedding))

    def is_unsure(self, probs: np.ndarray) -> bool:
        return float(np.max(probs)) < self.settings.low_confidence


def _read_json(path: Any) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _read_thumbnails(predictor: Predictor, meta: dict[str, Any]) -> dict[int, bytes]:
    """Class index → PNG bytes from the export's ``<stem>.thumbs.json`` (empty when there is none or it is stale)."""
    entry = meta.get("thumbnails") or {}
    if not entry.get("file"):
        return {}
    thumbs = _read_json(predictor.path.parent / str(entry["file"]))
    if thumbs.get("class_names") != predictor.class_names:
        log.warning("%s: thumbnails missing or for other classes; the page shows none", entry["file"])
        return {}
    return {int(k): base64.b64decode(v) for k, v in thumbs.get("thumbnails", {}).items()}
