"""The PyTorch backend of ``pokedex.predictor``: kept apart so the ONNX-only serving image needs no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pokedex.data.archive import file_sha256
from pokedex.model import PokedexClassifier, load_classifier
from pokedex.predictor import Predictor, PredictorError


def load_checkpoint(path: str | Path) -> tuple[PokedexClassifier, dict[str, Any]]:
    """Checkpoint → eval-mode ``PokedexClassifier`` and its ``"pokedex"`` metadata (``weights_only`` load)."""
    path = Path(path)
    if not path.is_file():
        raise PredictorError(f"{path}: checkpoint not found")
    try:
        model = load_classifier(path)
    except Exception as exc:  # UnpicklingError, RuntimeError (not a zip), KeyError, ValueError...
        raise PredictorError(f"{path}: cannot load checkpoint with weights_only=True ({exc})") from exc
    return model, model.metadata()


class ProbabilityModel(torch.nn.Module):
    """``PokedexClassifier`` + softmax: uint8 RGBA NCHW → probabilities. This is what gets exported."""

    def __init__(self, classifier: PokedexClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images).softmax(dim=1)


class TorchPredictor(Predictor):
    """Eager PyTorch on the CPU, straight from a Lightning checkpoint."""

    backend = "torch"

    def __init__(self, model: torch.nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model.eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, threads: int | None = None) -> TorchPredictor:
        """``threads`` sets torch's (process-wide) intra-op thread count; None leaves it alone."""
        path = Path(path)
        classifier, meta = load_checkpoint(path)
        if threads:
            torch.set_num_threads(threads)
        return cls(
            ProbabilityModel(classifier),
            name=meta["model_name"],
            class_names=list(meta["class_names"]),
            spec=classifier.spec,
            sha256=file_sha256(path),
            path=path,
        )

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_batch(batch)
        with torch.inference_mode():
            return self.model(torch.from_numpy(batch)).numpy().astype(np.float32, copy=False)
