"""Micro-batching: gather concurrent single-image requests into one model call, off the event loop.

A model call on a batch of 8 costs less than 8 calls on one image, so requests that queue up while the model
is busy run together (up to ``max_batch_size``). A batch only waits (up to ``max_wait_ms``) for requests known to
be on their way (being decoded); a lone request is never delayed. The call runs in a dedicated
one-thread executor: the event loop keeps accepting, reading and decoding other requests meanwhile, and one
inference at a time keeps the model's own thread pool from being oversubscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

# a batch → one array with a row per image, or a tuple of such arrays (or None, an output the model lacks)
PredictFn = Callable[[np.ndarray], np.ndarray | tuple[np.ndarray | None, ...]]
Row = np.ndarray | tuple[np.ndarray | None, ...]
BatchObserver = Callable[[int, float], None]


class QueueFullError(RuntimeError):
    """More requests are waiting than ``max_queue`` allows; the caller should answer 503."""


@dataclass
class _Pending:
    array: np.ndarray
    future: asyncio.Future[Row]


def split_rows(outputs: np.ndarray | tuple[np.ndarray | None, ...], n: int) -> list[Row]:
    """The model's batch outputs → one entry per image: its row, or a tuple of its rows (None stays None)."""
    if not isinstance(outputs, tuple):
        return list(outputs)
    columns = [[None] * n if out is None else list(out) for out in outputs]
    return [tuple(column[i] for column in columns) for i in range(n)]


class MicroBatcher:
    """``await submit(array)`` → that array's row of the model output(s), computed in a shared batch."""

    def __init__(
        self,
        predict: PredictFn,
        executor: Executor,
        *,
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        workers: int = 1,
        on_batch: BatchObserver | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.predict = predict
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_queue = max_queue
        self.workers = workers
        self.on_batch = on_batch
        self.incoming = 0  # requests being read/decoded that will submit soon (see ``expect``)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    @contextlib.contextmanager
    def expect(self) -> Iterator[None]:
        """Mark a request that will ``submit`` soon, so a forming batch waits for it (up to ``max_wait_ms``)."""
        self.incoming += 1
        try:
            yield
        finally:
            self.incoming -= 1

    def start(self) -> None:
        """Start ``workers`` gathering loops on the running event loop (call from the app's lifespan): each forms
        a batch from the shared queue and runs it, so up to ``workers`` batches are in the model at once."""
        self._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name=f"pokedex-batcher-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._queue is not None and not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("server is shutting down"))

    async def submit(self, array: np.ndarray) -> Row:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() has not been called")
        if self._queue.qsize() >= self.max_queue:
            raise QueueFullError(f"server busy: {self._queue.qsize()} requests already queued")
        future: asyncio.Future[Row] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(array, future))
        return await future

    async def _gather(self, queue: asyncio.Queue[_Pending]) -> list[_Pending]:
        batch = [await queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.incoming == 0:  # nobody else on the way: don't make this one wait
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return [p for p in batch if not p.future.done()]  # drop requests whose client went away

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = await self._gather(self._queue)
            if batch:
                await self._run_batch(batch)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        """Run one batch; every future in it ends resolved, whatever happens (errors, cancellation)."""
        start = time.perf_counter()
        try:
            stacked = np.stack([p.array for p in batch])
            outputs = await asyncio.get_running_loop().run_in_executor(self.executor, self.predict, stacked)
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - start)
            for p, row in zip(batch, split_rows(outputs, len(batch)), strict=True):
                if not p.future.done():
                    p.future.set_result(row)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else RuntimeError("server is shutting down")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
