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
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pokedex.config import CONFIG_PATH, register_resolvers
from pokedex.evaluation import reports
from pokedex.evaluation.metrics import Evaluation
from pokedex.inference.base import Predictor
from pokedex.inference.loader import load_predictor
from pokedex.io import write_json_atomic

log = logging.getLogger(__name__)
register_resolvers()


def collect(score: Callable[[np.ndarray], np.ndarray], loader: torch.utils.data.DataLoader) -> tuple[np.ndarray, ...]:
    """Probabilities, labels and the uint8 images (kept for the mistakes grid) of a whole split."""
    probs, labels, images = [], [], []
    for batch, target in loader:
        array = batch.numpy()
        probs.append(score(array))
        labels.append(target.numpy())
        images.append(array)
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(images)


def _device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def _datamodule(cfg: DictConfig, model: Predictor):
    """The data to judge ``model`` on: ``data=...`` if given, else what the model file says it was trained on."""
    data_cfg = cfg.get("data") or (OmegaConf.create(model.data_config) if model.data_config else None)
    if not data_cfg:
        raise ValueError(
            f"{cfg.ckpt_path}: the model file carries no data config; pass the data it was trained on, "
            "e.g. data=sprites (the input size comes from the model)"
        )
    datamodule = instantiate(
        data_cfg, augment=None, num_workers=cfg.num_workers, eval_batch_size=cfg.batch_size,
        image_size=model.spec.image_size,
    )  # fmt: skip
    datamodule.prepare_data()
    if datamodule.class_names != model.class_names:
        raise ValueError(
            f"{cfg.ckpt_path}: the model's {model.num_classes} classes differ from the data's "
            f"{datamodule.num_classes} classes in {datamodule.zip_path}; evaluate on the data it was trained on"
        )
    return datamodule


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    model = load_predictor(cfg.ckpt_path, device=_device(cfg.device))
    datamodule = _datamodule(cfg, model)
    loader = {"test": datamodule.test_dataloader, "val": datamodule.val_dataloader}[cfg.split]()
    probs, labels, images = collect(model.predict_arrays, loader)
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
