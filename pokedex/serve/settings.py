"""``ServeSettings``: the one place where the service's defaults live.

``python -m pokedex.serve`` registers this dataclass as the schema of ``conf/serve.yaml`` (Hydra structured
config), so every field is a command-line override (``max_batch_size=8``) with its default defined only here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pokedex.preprocess import DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class ServeSettings:
    """Everything the server and the app need; tuned with scripts/bench_serve.py on 2 CPU cores."""

    # the model: .onnx (ONNX Runtime; needs its .json sidecar from pokedex.export) or .ckpt (PyTorch)
    model_path: str = "models/model.onnx"
    # the HTTP server (uvicorn)
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    access_log: bool = True
    timeout_keep_alive: int = 5
    # limits on untrusted input
    max_upload_mb: float = 10.0  # whole request body; larger → 413 before it is read in full
    max_pixels: int = DEFAULT_MAX_PIXELS  # width × height from the image header; larger → 413, never decoded
    max_files: int = 32  # files per POST /predict/batch
    top_k_default: int = 5
    top_k_max: int = 50  # top_k outside [1, top_k_max] → 422
    # micro-batching and threads
    max_batch_size: int = 16  # images per model call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_queue: int = 1024  # images waiting for the model; more → 503
    intra_op_threads: int = 0  # model threads (ONNX Runtime session / torch); 0 = the runtime's default
    inference_workers: int = 1  # batches run at once (each with intra_op_threads); see docs/performance.md
    decode_threads: int = 2  # threads decoding uploads off the event loop
    warmup: bool = True  # run the model once per batch size before reporting ready
    # overload and shutdown
    max_inflight: int = 64  # /predict requests being read, decoded or predicted at once; more → 503 + Retry-After
    retry_after_s: int = 1  # the Retry-After of every 503 (busy, queue full, loading, shutting down)
    shutdown_grace_s: float = 30.0  # on SIGTERM: requests in flight get this long to finish, new ones get 503
    # monitoring (the drift reference and thumbnails come from the model's export, see pokedex.export)
    telemetry: bool = True  # per-prediction metrics and the drift window (off: only to measure their cost)
    drift_window: int = 200  # requests per drift window; the export calibrates thresholds for 200
    low_confidence: float = 0.5  # top-1 probability below this: counted, and the answer carries a notice
    prediction_log: str | None = None  # JSON Lines of answers and input facts (never images); None = off
    prediction_log_max_mb: float = 10.0  # rotate the log at this size ...
    prediction_log_backups: int = 3  # ... keeping this many old files

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ServeSettings:
        """Take the known keys (a Hydra config also has ``task``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)
