"""``python -m pokedex.train``: fit, then test the best checkpoint. Returns best val top-1 for sweepers."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from pokedex.config import CONFIG_PATH, register_resolvers
from pokedex.evaluation.suite import run_suite, summarize
from pokedex.inference.loader import load_predictor
from pokedex.io import write_json_atomic
from pokedex.model.checkpoint import read_checkpoint
from pokedex.training.checkpointing import preemption_exit_code, resume_checkpoint

log = logging.getLogger(__name__)
register_resolvers()


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Each entry of a dict-shaped group (callbacks, loggers) with a ``_target_``; null entries switch off."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node]


def train(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    model = instantiate(
        cfg.model, class_names=datamodule.class_names, image_size=datamodule.image_size, _convert_="all"
    )
    model.resolved_config = OmegaConf.to_container(cfg, resolve=True)

    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = [  # a learning-rate monitor has nowhere to write without a logger
        cb for cb in _instantiate_all(cfg.get("callbacks")) if loggers or not isinstance(cb, LearningRateMonitor)
    ]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(model.resolved_config)

    resume_from = resume_checkpoint(cfg.get("resume", "never"), cfg.get("ckpt_path"), callbacks)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    checkpoint = trainer.checkpoint_callback
    best_path = getattr(checkpoint, "best_model_path", "") or None
    best_val = getattr(checkpoint, "best_model_score", None)
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    test_metrics: dict[str, float] = {}
    if cfg.get("test", True) and not trainer.fast_dev_run:
        # Test on one device so every sample counts exactly once (a DistributedSampler pads the last batch).
        tester = trainer
        if trainer.world_size > 1:
            single = {"devices": 1, "num_nodes": 1, "strategy": "auto", "logger": False, "callbacks": []}
            tester = instantiate(cfg.trainer, **single, enable_checkpointing=False)
        results = tester.test(model, datamodule=datamodule, ckpt_path=best_path or None)
        test_metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}

    epochs, global_step = _progress(trainer)
    suite = _robustness(cfg, best_path, datamodule, loggers) if trainer.is_global_zero else {}
    summary = {
        "best_checkpoint": _relative_to(best_path, output_dir),  # the run directory moves (dvc pull, copies)
        "best_val_top1": float(best_val) if best_val is not None else fit_metrics.get("val/top1"),
        "epochs": epochs,
        "global_step": global_step,
        "fit": fit_metrics,
        "test": test_metrics,
        "suite": suite,
    }
    if trainer.is_global_zero:  # with ddp_spawn this is the launching process, after the workers joined
        write_json_atomic(output_dir / "metrics.json", summary)
        log.info(
            "best val top-1 %.4f; test %s; outputs in %s", summary["best_val_top1"] or 0.0, test_metrics, output_dir
        )
    return summary


def _robustness(cfg: DictConfig, best_path: str | None, datamodule: Any, loggers: list[Any]) -> dict[str, Any]:
    """The best checkpoint on the robustness suite (docs/robustness.md): every run measures real uploads too."""
    if not (cfg.get("suite") and cfg.get("suite_images") and best_path and cfg.get("test", True)):
        return {}
    predictor = load_predictor(best_path, device="cuda" if torch.cuda.is_available() else "cpu")
    test = datamodule.load_index().split("test")
    results = run_suite(predictor, datamodule.zip_path, test, instantiate(cfg.suite), limit=cfg.suite_images)
    flat = {f"suite/{name}/{k}": r[k] for name, r in results.items() for k in ("top1", "top5")}
    for lg in loggers:
        lg.log_metrics(flat)
        lg.save()
    return {"conditions": results, **summarize(results)}


def _relative_to(path: str | None, root: Path) -> str | None:
    return os.path.relpath(Path(path).resolve(), root.resolve()) if path else None


def _progress(trainer: L.Trainer) -> tuple[int, int]:
    """Epochs run and optimizer steps. Spawned DDP workers don't send their loop counters back to the launching
    process (only the best path, weights and metrics), so there they are read from the last checkpoint."""
    dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
    if trainer.global_step == 0 and dirpath and (Path(dirpath) / "last.ckpt").is_file():
        checkpoint = read_checkpoint(Path(dirpath) / "last.ckpt")
        return int(checkpoint["epoch"]) + 1, int(checkpoint["global_step"])
    return trainer.current_epoch, trainer.global_step


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    if HydraConfig.initialized():
        OmegaConf.save(cfg, Path(cfg.paths.output_dir) / "config_resolved.yaml", resolve=True)
    with preemption_exit_code():  # SIGTERM (preemption): exit 143 after the checkpoint, not 0
        summary = train(cfg)
    return float(summary["best_val_top1"] or 0.0)


if __name__ == "__main__":
    main()
