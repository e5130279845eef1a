"""Reading checkpoints safely (``weights_only``) and rebuilding the classifier from one, without network access."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pokedex.model.classifier import CHECKPOINT_KEY, PokedexClassifier
from pokedex.preprocess import PreprocessSpec


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code (``weights_only``): safe for files from elsewhere."""
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    if CHECKPOINT_KEY not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{path}: not a pokedex checkpoint (no {CHECKPOINT_KEY!r} metadata); train one first")
    return checkpoint


def load_classifier(path: str | os.PathLike) -> PokedexClassifier:
    """A ready-to-use (eval mode, CPU) classifier from a checkpoint, without any network access."""
    checkpoint = read_checkpoint(path)
    hparams = {**checkpoint["hyper_parameters"], "pretrained": False, "compile": False}
    model = PokedexClassifier(**hparams)
    model.load_state_dict(checkpoint["state_dict"])
    model.resolved_config = checkpoint[CHECKPOINT_KEY].get("config", {})
    if "preprocess" in checkpoint[CHECKPOINT_KEY]:  # the version it was trained with, not today's default
        model.spec = PreprocessSpec.from_dict(checkpoint[CHECKPOINT_KEY]["preprocess"])
    return model.eval()
