"""The PyTorch backend: a Lightning checkpoint served eagerly. Kept apart so the ONNX serving image needs no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pokedex.inference.base import Predictor, PredictorError
from pokedex.io import file_sha256
from pokedex.model.checkpoint import load_classifier
from pokedex.model.classifier import PokedexClassifier, normalize


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


def has_pre_logits(classifier: PokedexClassifier) -> bool:
    """timm backbones split into ``forward_features`` + ``forward_head(pre_logits=...)``; other modules may not."""
    backbone = classifier.backbone
    return callable(getattr(backbone, "forward_features", None)) and callable(getattr(backbone, "forward_head", None))


class ExportModel(torch.nn.Module):
    """What gets exported: uint8 RGBA NCHW → (probabilities, embeddings).

    ``embeddings`` are the backbone's pre-logits features (after global pooling, and the head's norm where the
    architecture has one), the input of the last linear layer: the drift monitor compares their distribution
    with the validation split's. The probabilities go through ``forward_head`` itself (not a re-implemented
    classifier call), and the export's parity check compares them with ``PokedexClassifier.forward``.
    """

    def __init__(self, classifier: PokedexClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        classifier = self.classifier
        x = normalize(images, classifier.spec)
        if classifier.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = classifier.backbone.forward_features(x)
        embeddings = classifier.backbone.forward_head(features, pre_logits=True).flatten(1)
        logits = classifier.backbone.forward_head(features)
        return logits.softmax(dim=1), embeddings


class TorchPredictor(Predictor):
    """Eager PyTorch straight from a Lightning checkpoint, on the CPU or a GPU."""

    backend = "torch"

    def __init__(self, model: torch.nn.Module, *, device: str = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, threads: int | None = None, device: str | None = None
    ) -> TorchPredictor:
        """``threads`` sets torch's (process-wide) intra-op thread count; None leaves it alone."""
        path = Path(path)
        classifier, meta = load_checkpoint(path)
        if threads:
            torch.set_num_threads(threads)
        return cls(
            ProbabilityModel(classifier),
            device=device or "cpu",
            name=meta["model_name"],
            class_names=list(meta["class_names"]),
            spec=classifier.spec,
            sha256=file_sha256(path),
            path=path,
            data_config=(meta.get("config") or {}).get("data"),
        )

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_batch(batch)
        with torch.inference_mode():
            probs = self.model(torch.from_numpy(batch).to(self.device, non_blocking=True))
            return probs.cpu().numpy().astype(np.float32, copy=False)
