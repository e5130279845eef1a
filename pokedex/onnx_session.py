"""``onnx_session``: the one place an ONNX Runtime session is built, so thread settings are decided once.

A leaf module: the preprocessing's segmentation network (``pokedex.segmenter``) runs on it as well as the
classifiers of serving, evaluation, export parity checks and int8 comparisons (``pokedex.inference``).
onnxruntime is imported when a session is built, so importing the preprocessing stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def onnx_session(model: str | Path | bytes, *, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU; ``threads`` sets intra-op threads (None: its default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads spinning for work would steal the few cores from HTTP parsing and decoding.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
