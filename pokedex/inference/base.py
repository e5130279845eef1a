"""What every model backend offers, with no torch and no ONNX Runtime import: the ``Predictor`` interface.

Every backend takes the canonical ``uint8`` RGBA NCHW batch produced by ``pokedex.preprocess`` and returns
softmax probabilities; normalisation happens inside the model (``PokedexClassifier.forward`` and therefore the
ONNX graph), so the HTTP service, export and the CLI all see exactly what training saw.

Checkpoints are read with ``torch.load(weights_only=True)``: a checkpoint from elsewhere can't run code.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pokedex.preprocess import PREPROCESS_VERSION, PreprocessSpec

log = logging.getLogger(__name__)

ONNX_INPUT = "images"
ONNX_OUTPUT = "probabilities"
ONNX_EMBEDDINGS = "embeddings"  # second output (pre-logits features) of models exported with a drift reference


class PredictorError(ValueError):
    """A model file that cannot be served; the message says which and why."""


def check_preprocess_version(spec: PreprocessSpec, path: Path) -> None:
    """Refuse a model trained on other pixels than this pokedex makes: it would answer confidently and wrongly."""
    if spec.preprocess_version != PREPROCESS_VERSION:
        raise PredictorError(
            f"{path}: trained with preprocessing version {spec.preprocess_version}, but this pokedex preprocesses "
            f"images with version {PREPROCESS_VERSION} (pokedex.preprocess.PREPROCESS_VERSION); it would see "
            "different pixels than it learnt from. Retrain it (python -m pokedex.train) and export it again."
        )


class Predictor(ABC):
    """A loaded model: ``predict_arrays`` on canonical uint8 batches, ``top_k`` to name the classes."""

    backend: ClassVar[str]

    def __init__(
        self,
        *,
        name: str,
        class_names: list[str],
        spec: PreprocessSpec,
        sha256: str,
        path: Path,
        data_config: dict[str, Any] | None = None,
    ) -> None:
        check_preprocess_version(spec, path)
        self.name = name
        self.data_config = data_config  # the `data` config it was trained with, when the file records it
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

    def predict_with_embeddings(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, pre-logits embeddings or None): the drift monitor's embedding signal reads the latter.

        Backends without an embedding output return None, and the service's embedding signal says "unavailable".
        """
        return self.predict_arrays(batch), None

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
