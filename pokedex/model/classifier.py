"""The LightningModule: a 4-channel timm backbone (``backbone.py``) with normalisation inside ``forward``.

Because ``forward`` takes the canonical uint8 RGBA batch and normalises it itself, the exported ONNX graph and
the served model apply exactly the preprocessing that training did. Checkpoints carry class names, the
preprocessing spec and the resolved config under the ``"pokedex"`` key, so nothing else is needed to serve them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from pokedex.model.backbone import create_backbone
from pokedex.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "pokedex"  # where the self-describing metadata lives inside a checkpoint
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    top_k = min(5, num_classes)
    return MetricCollection(
        {
            "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes, top_k=top_k, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=prefix,
        # Compute groups would merge top-1 and top-5 when their first updates happen to agree (an untrained
        # model scoring 0 on both), after which top-5 silently reports top-1.
        compute_groups=False,
    )


def normalize(batch: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 (or [0, 1] float) NCHW batch → normalised float input of the backbone."""
    x = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()
    mean = torch.tensor(spec.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


class PokedexClassifier(L.LightningModule):
    def __init__(
        self,
        name: str = "resnet18",
        class_names: list[str] | None = None,
        image_size: int = 128,
        pretrained: bool | str = False,
        drop_rate: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        label_smoothing: float = 0.1,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        channels_last: bool = False,
        compile: bool = False,
        preprocess: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not class_names:
            raise ValueError("PokedexClassifier needs class_names (the train entry point takes them from the data)")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.class_names = list(class_names)
        self.spec = PreprocessSpec(**{**(preprocess or {}), "image_size": image_size})
        self.backbone = create_backbone(name, len(self.class_names), pretrained=pretrained, drop_rate=drop_rate)
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        # Not registered as a submodule: the state dict keeps plain, portable parameter names.
        object.__setattr__(self, "_forward_backbone", torch.compile(self.backbone) if compile else self.backbone)
        self.optimizer_factory = optimizer or torch.optim.AdamW
        self.scheduler_factory = scheduler
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last
        self.val_metrics = classification_metrics(len(self.class_names), "val/")
        self.test_metrics = classification_metrics(len(self.class_names), "test/")
        self.resolved_config: dict[str, Any] = {}

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 1] float) NCHW RGBA → logits."""
        x = normalize(images, self.spec)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._forward_backbone(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(dim=1) == labels).float().mean()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(labels), sync_dist=True)
        self.log("train/top1", acc, on_step=False, on_epoch=True, batch_size=len(labels), sync_dist=True)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logits, labels)
        self.log(f"{stage}/loss", loss, prog_bar=True, on_epoch=True, batch_size=len(labels), sync_dist=True)
        self.log_dict(metrics, prog_bar=stage == "val", on_epoch=True, batch_size=len(labels))
        return logits

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "val")  # logits reach callbacks that log sample predictions

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    # -- optimisation ----------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        decay, no_decay = [], []
        for param in self.backbone.parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 else decay).append(param)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = self.optimizer_factory(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.scheduler_factory is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- self-describing checkpoints -------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {
            "format": 1,
            "model_name": self.hparams.name,
            "class_names": self.class_names,
            "preprocess": self.spec.to_dict(),
            "config": self.resolved_config,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.metadata()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.resolved_config = checkpoint.get(CHECKPOINT_KEY, {}).get("config", {})
