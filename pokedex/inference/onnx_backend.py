"""The ONNX Runtime backend (CPU): the model file plus its JSON sidecar written by ``pokedex.export``.

Its sessions come from ``pokedex.onnx_session``, the one place an ONNX Runtime session is built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pokedex.inference.base import ONNX_EMBEDDINGS, ONNX_INPUT, ONNX_OUTPUT, Predictor, PredictorError, sidecar_path
from pokedex.io import file_sha256
from pokedex.onnx_session import onnx_session
from pokedex.preprocess import PreprocessSpec


def run_onnx(session: Any, batch: np.ndarray) -> np.ndarray:
    """Probabilities of one canonical uint8 batch."""
    (probs,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})
    return np.asarray(probs, dtype=np.float32)


def has_embeddings(session: Any) -> bool:
    return ONNX_EMBEDDINGS in {o.name for o in session.get_outputs()}


def run_onnx_embeddings(session: Any, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, embeddings) of one canonical uint8 batch, in one run (a model exported with both)."""
    probs, embeddings = session.run([ONNX_OUTPUT, ONNX_EMBEDDINGS], {ONNX_INPUT: batch})
    return np.asarray(probs, dtype=np.float32), np.asarray(embeddings, dtype=np.float32)


class OnnxPredictor(Predictor):
    """ONNX Runtime on the CPU; metadata comes from the JSON sidecar written by ``pokedex.export``."""

    backend = "onnx"

    def __init__(self, session: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self.has_embeddings = has_embeddings(session)

    @classmethod
    def from_path(cls, path: str | Path, *, threads: int | None = None) -> OnnxPredictor:
        """``threads`` sets ONNX Runtime's intra-op threads for this session (None: its default)."""
        path = Path(path)
        meta_path = sidecar_path(path)
        if not path.is_file():
            raise PredictorError(f"{path}: ONNX model not found")
        if not meta_path.is_file():
            raise PredictorError(f"{meta_path}: metadata sidecar not found (re-export with `python -m pokedex.export`)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            spec = PreprocessSpec.from_dict(meta["preprocess"])
            class_names = list(meta["class_names"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PredictorError(f"{meta_path}: invalid metadata ({exc})") from exc
        sha256 = file_sha256(path)
        if meta.get("onnx_sha256") not in (None, sha256):
            raise PredictorError(f"{meta_path}: onnx_sha256 does not match {path.name}; the pair is out of sync")
        try:
            session = onnx_session(path, threads=threads)
        except Exception as exc:
            raise PredictorError(f"{path}: ONNX Runtime cannot load the model ({exc})") from exc
        inputs = [i.name for i in session.get_inputs()]
        if inputs != [ONNX_INPUT]:
            raise PredictorError(f"{path}: expected one input named {ONNX_INPUT!r}, found {inputs}")
        return cls(
            session,
            name=meta.get("model_name", path.stem),
            class_names=class_names,
            spec=spec,
            sha256=sha256,
            path=path,
            data_config=meta.get("data"),
        )

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        return run_onnx(self.session, self.check_batch(batch))

    def predict_with_embeddings(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.has_embeddings:
            return self.predict_arrays(batch), None
        return run_onnx_embeddings(self.session, self.check_batch(batch))
