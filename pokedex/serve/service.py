"""The per-app runtime behind the routes: model loading, decoding off the event loop and micro-batched inference."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pokedex.inference.base import Predictor
from pokedex.inference.loader import load_predictor
from pokedex.serve.batching import MicroBatcher
from pokedex.serve.prometheus import ServeMetrics
from pokedex.serve.settings import ServeSettings
from pokedex.serve.uploads import decode_upload

log = logging.getLogger(__name__)


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
