"""``python -m pokedex.evaluate ckpt_path=PATH [data=...] [split=test]``: judge a checkpoint.

Writes ``metrics.json`` (top-1, top-5, macro-F1, ECE), ``per_class.csv``, ``confusion.csv`` (for dvc plots),
``confusion.png`` and ``mistakes.png`` into ``output_dir``. Without ``data=...`` it evaluates on the data the
checkpoint was trained on (its config travels inside it).
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)
register_resolvers()


def collect(model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: str) -> tuple[np.ndarray, ...]:
    """Probabilities, labels and the uint8 images (kept for the mistakes grid) of a whole split."""
    probs, labels, images = [], [], []
    model.to(device)
    with torch.inference_mode():
        for batch, target in loader:
            probs.append(model(batch.to(device)).float().softmax(dim=1).cpu().numpy())
            labels.append(target.numpy())
            images.append(batch.numpy())
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(images)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    model = load_classifier(cfg.ckpt_path)
    data_cfg = cfg.get("data") or OmegaConf.create(model.resolved_config.get("data", {}))
    if not data_cfg:
        raise ValueError(f"{cfg.ckpt_path}: checkpoint carries no data config; pass data=<name> explicitly")
    datamodule = instantiate(data_cfg, augment=None, num_workers=cfg.num_workers, eval_batch_size=cfg.batch_size)
    datamodule.prepare_data()
    if datamodule.class_names != model.class_names:
        raise ValueError(
            f"{cfg.ckpt_path}: the checkpoint's {len(model.class_names)} classes differ from the data's "
            f"{datamodule.num_classes} classes in {datamodule.zip_path}; evaluate on the data it was trained on"
        )
    loader = {"test": datamodule.test_dataloader, "val": datamodule.val_dataloader}[cfg.split]()
    device = (
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    probs, labels, images = collect(model, loader, device)
    evaluation = Evaluation(probs, labels)

    out = Path(cfg.output_dir)
    names = model.class_names
    metrics = {**evaluation.summary(), "split": cfg.split, "checkpoint": str(cfg.ckpt_path)}
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
