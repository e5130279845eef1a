"""Lightning callbacks: pictures (sample predictions, confusion matrix) where the logger can show them, the best
checkpoint as a W&B artifact, and each epoch's training time."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from pokedex.evaluation.metrics import confusion_matrix, row_normalised


class LogValidationImages(L.Callback):
    """At each validation end: a grid of sample predictions and the confusion matrix, for W&B / TensorBoard."""

    def __init__(self, num_samples: int = 16, every_n_epochs: int = 1) -> None:
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self._samples: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._preds: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    @staticmethod
    def _supported(trainer: L.Trainer) -> list[Any]:
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger | TensorBoardLogger)]

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._samples, self._preds, self._labels = None, [], []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not self._supported(trainer) or not isinstance(outputs, torch.Tensor):
            return
        images, labels = batch
        preds = outputs.argmax(dim=1)
        self._preds.append(preds.cpu())
        self._labels.append(labels.cpu())
        if self._samples is None:
            n = self.num_samples
            self._samples = (images[:n].cpu(), labels[:n].cpu(), outputs[:n].softmax(dim=1).float().cpu())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._samples is None or trainer.current_epoch % self.every_n_epochs or not trainer.is_global_zero:
            return
        names = pl_module.class_names
        images, labels, probs = self._samples
        conf, pred = probs.max(dim=1)
        captions = [f"{names[t]} → {names[p]} ({c:.2f})" for t, p, c in zip(labels, pred, conf, strict=True)]
        preds, targets = torch.cat(self._preds).numpy(), torch.cat(self._labels).numpy()
        for lg in self._supported(trainer):
            if isinstance(lg, WandbLogger):
                import wandb

                lg.log_image("val/samples", [img.permute(1, 2, 0).numpy() for img in images], caption=captions)
                lg.experiment.log(
                    {
                        "val/confusion_matrix": wandb.plot.confusion_matrix(
                            y_true=targets.tolist(), preds=preds.tolist(), class_names=names
                        ),
                        "trainer/global_step": trainer.global_step,
                    }
                )
            else:
                lg.experiment.add_images("val/samples", images, trainer.global_step, dataformats="NCHW")
                matrix = row_normalised(confusion_matrix(targets, preds, len(names)))
                lg.experiment.add_image("val/confusion_matrix", matrix[None], trainer.global_step, dataformats="CHW")


class LogBestCheckpointArtifact(L.Callback):
    """Log the best checkpoint as a W&B model artifact; works offline too (synced with the run later).

    Lightning's own ``log_model`` refuses offline mode, which is our default.
    """

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if not best or not trainer.is_global_zero:
            return
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                import wandb

                score = trainer.checkpoint_callback.best_model_score
                artifact = wandb.Artifact(
                    name=f"model-{lg.experiment.id}",
                    type="model",
                    metadata={
                        "val/top1": float(score) if score is not None else None,
                        "classes": len(pl_module.class_names),
                    },
                )
                artifact.add_file(best, name="best.ckpt")
                lg.experiment.log_artifact(artifact, aliases=["best", "latest"])


class EpochTimer(L.Callback):
    """Log each training epoch's wall time and throughput (``time/epoch_s``, ``time/images_per_s``) with the
    losses, in every logger: how fast a run trains is a result too, and on a GPU the figure a recipe is judged
    by. The clock runs from the epoch's start to its last training batch (loading, augmentation and steps; not
    validation), the device synchronised at both ends. Under DDP both are per process (the mean over processes).
    """

    def __init__(self) -> None:
        self._start, self._images = 0.0, 0
        self._end: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronise(pl_module)
        self._start, self._end, self._images = time.perf_counter(), None, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[1])
        if batch_idx + 1 >= trainer.num_training_batches:  # the epoch's last step may still be queued on the device
            _synchronise(pl_module)
        self._end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._end is None:  # no training batch ran
            return
        seconds = self._end - self._start
        pl_module.log_dict({"time/epoch_s": seconds, "time/images_per_s": self._images / seconds}, sync_dist=True)


def _synchronise(pl_module: L.LightningModule) -> None:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
