"""Load a trained model (Lightning checkpoint or exported ONNX) and batch-predict class probabilities.

Every backend takes the canonical ``uint8`` RGBA NCHW batch produced by ``pokedex.preprocess`` and returns
softmax probabilities; normalisation happens inside the model (``PokedexClassifier.forward`` and therefore the
ONNX graph), so the HTTP service, export and the CLI all see exactly what training saw.

Checkpoints are read with ``torch.load(weights_only=True)``: a checkpoint from elsewhere can't run code.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pokedex.data.archive import file_sha256
from pokedex.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

ONNX_INPUT = "images"
ONNX_OUTPUT = "probabilities"


class PredictorError(ValueError):
    """A model file that cannot be served; the message says which and why."""


class Predictor(ABC):
    """A loaded model: ``predict_arrays`` on canonical uint8 batches, ``top_k`` to name the classes."""

    backend: ClassVar[str]

    def __init__(self, *, name: str, class_names: list[str], spec: PreprocessSpec, sha256: str, path: Path) -> None:
        self.name = name
        self.class_names = list(class_names)
        self.spec = spec
        self.sha256 = sha256
        self.path = path

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        """Refuse anything but the canonical input, so a caller can't silently feed un-preprocessed data."""
        size = self.spec.image_size
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (4, size, size):
            raise ValueError(f"expected a uint8 batch of shape (N, 4, {size}, {size}), got {batch.dtype} {batch.shape}")
        return np.ascontiguousarray(batch)

    @abstractmethod
    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, 4, S, S) → float32 probabilities (N, C)."""

    def top_k(self, probs: np.ndarray, k: int = 5) -> list[dict[str, Any]]:
        """One row of probabilities → the ``k`` most likely classes, best first."""
        probs = np.asarray(probs).reshape(-1)
        k = max(1, min(int(k), probs.shape[0]))
        order = np.argsort(-probs, kind="stable")[:k]
        return [{"label": self.class_names[i], "index": int(i), "probability": float(probs[i])} for i in order]

    def predict(self, arrays: np.ndarray, k: int = 5) -> list[list[dict[str, Any]]]:
        """Convenience for scripts: a batch of canonical arrays → top-k per image."""
        return [self.top_k(row, k) for row in self.predict_arrays(arrays)]

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` shows: enough for a client to check which model answered."""
        return {
            "name": self.name,
            "backend": self.backend,
            "file": self.path.name,
            "sha256": self.sha256,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "preprocess": self.spec.to_dict(),
        }


def sidecar_path(onnx_path: str | Path) -> Path:
    """``models/model.onnx`` → ``models/model.json``."""
    return Path(onnx_path).with_suffix(".json")


class OnnxPredictor(Predictor):
    """ONNX Runtime on the CPU; metadata comes from the JSON sidecar written by ``pokedex.export``."""

    backend = "onnx"

    def __init__(self, session: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session

    @classmethod
    def from_path(cls, path: str | Path, *, threads: int | None = None) -> OnnxPredictor:
        """``threads`` sets ONNX Runtime's intra-op threads for this session (None: its default)."""
        import onnxruntime as ort

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
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads spinning for work would steal the few cores from HTTP parsing and decoding.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
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
        )

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_batch(batch)
        (probs,) = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})
        return np.asarray(probs, dtype=np.float32)


def _load_checkpoint_predictor(path: Path, *, threads: int | None = None) -> Predictor:
    try:  # torch is imported only here, so the ONNX serving image needs none
        from pokedex.torch_predictor import TorchPredictor
    except ModuleNotFoundError as exc:
        raise PredictorError(
            f"{path}: serving a .ckpt needs PyTorch ({exc}); export it with `python -m pokedex.export "
            f"ckpt_path={path}` and serve the .onnx file instead"
        ) from exc
    return TorchPredictor.from_checkpoint(path, threads=threads)


_LOADERS = {".ckpt": _load_checkpoint_predictor, ".onnx": OnnxPredictor.from_path}


def load_predictor(path: str | Path, *, threads: int | None = None) -> Predictor:
    """Pick the backend by suffix: ``.ckpt`` → PyTorch, ``.onnx`` → ONNX Runtime."""
    path = Path(path)
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise PredictorError(f"{path}: unsupported model file; expected one of {sorted(_LOADERS)}")
    predictor = loader(path, threads=threads)
    log.info(
        "loaded %s (%s backend, %d classes, sha256 %s)",
        path,
        predictor.backend,
        predictor.num_classes,
        predictor.sha256[:12],
    )
    return predictor
