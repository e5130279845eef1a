"""``python -m pokedex.evaluate ckpt_path=PATH [data=...] [split=test]``: judge a checkpoint or an exported model.

Writes ``metrics.json`` (top-1, top-5, macro-F1, ECE), ``per_class.csv``, ``confusion.csv`` (for dvc plots),
``confusion.png`` and ``mistakes.png`` into ``output_dir``. Without ``data=...`` a checkpoint is evaluated on the
data it was trained on (its config travels inside it). ``ckpt_path`` may also be an exported ``.onnx`` model
(fp32 or int8): the file that will be served is then judged through ONNX Runtime, on ``data=...`` at the input
size recorded in its sidecar, so a quantised model's accuracy delta is one command away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pokedex import reports
from pokedex.config import CONFIG_PATH, register_resolvers
from pokedex.io import write_json_atomic
from pokedex.metrics import Evaluation
from pokedex.model import load_classifier
from pokedex.predictor import OnnxPredictor

log = logging.getLogger(__name__)
register_resolvers()

Scorer = Callable[[np.ndarray], np.ndarray]
"""A canonical uint8 (N, 4, S, S) batch → float32 probabilities (N, C)."""


@dataclass
class LoadedModel:
    """What evaluation needs from a model file, whichever runtime executes it."""

    score: Scorer
    class_names: list[str]
    image_size: int
    backend: str
    data: DictConfig | None  # the data it was trained on, when the file records it


def torch_scorer(model: torch.nn.Module, device: str) -> Scorer:
    model.to(device).eval()

    def score(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch).to(device)).float().softmax(dim=1).cpu().numpy()

    return score


def load_model(path: str | Path, device: str) -> LoadedModel:
    """``.onnx`` → ONNX Runtime (CPU); anything else → the Lightning checkpoint on ``device``."""
    if Path(path).suffix.lower() == ".onnx":
        predictor = OnnxPredictor.from_path(path)
        return LoadedModel(predictor.predict_arrays, predictor.class_names, predictor.spec.image_size, "onnx", None)
    model = load_classifier(path)
    data = OmegaConf.create(model.resolved_config.get("data", {})) or None
    return LoadedModel(torch_scorer(model, device), model.class_names, model.spec.image_size, "torch", data)


def collect(score: Scorer, loader: torch.utils.data.DataLoader) -> tuple[np.ndarray, ...]:
    """Probabilities, labels and the uint8 images (kept for the mistakes grid) of a whole split."""
    probs, labels, images = [], [], []
    for batch, target in loader:
        array = batch.numpy()
        probs.append(score(array))
        labels.append(target.numpy())
        images.append(array)
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(images)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    device = (
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    model = load_model(cfg.ckpt_path, device)
    data_cfg = cfg.get("data") or model.data
    if not data_cfg:
        raise ValueError(
            f"{cfg.ckpt_path}: the model file carries no data config; pass the data it was trained on, "
            "e.g. data=sprites (the input size comes from the model)"
        )
    datamodule = instantiate(
        data_cfg,
        augment=None,
        num_workers=cfg.num_workers,
        eval_batch_size=cfg.batch_size,
        image_size=model.image_size,
    )
    datamodule.prepare_data()
    if datamodule.class_names != model.class_names:
        raise ValueError(
            f"{cfg.ckpt_path}: the model's {len(model.class_names)} classes differ from the data's "
            f"{datamodule.num_classes} classes in {datamodule.zip_path}; evaluate on the data it was trained on"
        )
    loader = {"test": datamodule.test_dataloader, "val": datamodule.val_dataloader}[cfg.split]()
    probs, labels, images = collect(model.score, loader)
    evaluation = Evaluation(probs, labels)

    out = Path(cfg.output_dir)
    names = model.class_names
    metrics = {**evaluation.summary(), "split": cfg.split, "checkpoint": str(cfg.ckpt_path), "backend": model.backend}
    write_json_atomic(out / "metrics.json", metrics)
    reports.write_per_class_csv(evaluation, names, out / "per_class.csv")
    reports.write_confusion_csv(evaluation, names, out / "confusion.csv")
    reports.plot_confusion(evaluation, names, out / "confusion.png")
    reports.plot_mistakes(images, evaluation, evaluation.worst_mistakes(cfg.worst_k), names, out / "mistakes.png")
    log.info("%s on %s: %s -> %s", cfg.ckpt_path, cfg.split, metrics, out)
    return metrics


@hydra.main(config_path=CONFIG_PATH, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
