"""Training that survives preemption: last.ckpt every epoch, a checkpoint on SIGTERM, ``resume=auto``.

The interrupted runs are killed at an exact optimizer step (tests/helpers/faults.py) and then rerun with the very
same command; they must end where an uninterrupted run ends, with exactly as many optimizer steps.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pokedex.model.checkpoint import read_checkpoint
from pokedex.train import train
from pokedex.training.checkpointing import PREEMPTED_EXIT_CODE, LatestCheckpoint, resume_checkpoint
from tests.helpers.hydra import compose_config, run_module, synthetic_overrides

EPOCHS = 3


def _overrides(synthetic_zip: Path, *extra: str) -> list[str]:
    return synthetic_overrides(
        synthetic_zip,
        "model=mobilenetv3_small_100",  # the smallest checkpoint: every epoch writes one
        f"trainer.max_epochs={EPOCHS}",
        "logger=none",
        "test=false",
        "suite_images=0",
        *extra,
    )


def _fault(run: Path, step: int, signame: str) -> list[str]:
    return [
        "+callbacks.fault._target_=tests.helpers.faults.SignalAtStep",
        f"+callbacks.fault.step={step}",
        f"+callbacks.fault.signame={signame}",
        f"+callbacks.fault.once={run / 'fault.done'}",
    ]


def _last(run: Path) -> tuple[int, int]:
    checkpoint = read_checkpoint(run / "checkpoints" / "last.ckpt")
    return int(checkpoint["epoch"]), int(checkpoint["global_step"])


def _resumed_at(log: str) -> int | None:
    """The optimizer step a run reported it resumed at (LatestCheckpoint.on_train_start)."""
    match = re.search(r"resumed from \S*last\.ckpt at epoch \d+, step (\d+)", log)
    return int(match.group(1)) if match else None


def _metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(synthetic_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """The run every interrupted one must match: EPOCHS epochs, never stopped."""
    run = tmp_path_factory.mktemp("uninterrupted")
    summary = train(compose_config("train", _overrides(synthetic_zip), run))
    steps = summary["global_step"]
    assert summary["epochs"] == EPOCHS and steps % EPOCHS == 0 and steps // EPOCHS >= 3
    assert _last(run) == (EPOCHS - 1, steps)
    return {"global_step": steps, "per_epoch": steps // EPOCHS}


def test_resume_precedence(tmp_path: Path) -> None:
    latest = LatestCheckpoint(str(tmp_path))
    explicit = str(tmp_path / "other.ckpt")
    assert resume_checkpoint("auto", None, [latest]) is None  # nothing there yet: a fresh start
    Path(latest.path).write_bytes(b"")
    assert resume_checkpoint("auto", None, [latest]) == latest.path
    assert resume_checkpoint("never", None, [latest]) is None
    assert resume_checkpoint("never", explicit, [latest]) == explicit  # an explicit ckpt_path always wins
    assert resume_checkpoint("auto", explicit, [latest]) == explicit
    assert resume_checkpoint("auto", None, []) is None  # last_checkpoint switched off
    with pytest.raises(ValueError, match="expected one of"):
        resume_checkpoint("always", None, [latest])


def test_pipeline_never_resumes(tmp_path: Path, hydra_config) -> None:
    cfg = hydra_config("pipeline", [], tmp_path)
    assert cfg.resume == "never" and cfg.callbacks.last_checkpoint is None
    assert hydra_config("train", [], tmp_path).resume == "auto"


def test_last_checkpoint_is_the_latest_epoch_not_the_best(synthetic_zip: Path, tmp_path: Path, hydra_config) -> None:
    # best.ckpt follows a monitor that never improves after epoch 0; last.ckpt must still follow every epoch
    never_improves = ["callbacks.model_checkpoint.monitor=epoch", "callbacks.model_checkpoint.mode=min"]
    summary = train(hydra_config("train", _overrides(synthetic_zip, *never_improves), tmp_path))
    assert read_checkpoint(tmp_path / "checkpoints" / "best.ckpt")["epoch"] == 0
    assert _last(tmp_path) == (EPOCHS - 1, summary["global_step"])
    assert not list((tmp_path / "checkpoints").glob(".*.tmp")), "no temporary file left behind"


def test_sigterm_mid_epoch_in_process(
    uninterrupted: dict[str, int], synthetic_zip: Path, tmp_path: Path, hydra_config, caplog
) -> None:
    """The fast variant: SIGTERM through Lightning's handler inside this process, then ``train`` again."""
    per_epoch = uninterrupted["per_epoch"]
    stop = per_epoch + 2  # two steps into the second epoch
    cfg = hydra_config("train", _overrides(synthetic_zip, *_fault(tmp_path, stop, "SIGTERM")), tmp_path)
    with pytest.raises(SIGTERMException):
        train(cfg)
    assert _last(tmp_path) == (1, stop)  # the state at the signal, not the epoch-end one (step per_epoch)
    assert not (tmp_path / "metrics.json").exists()

    caplog.set_level(logging.INFO, logger="pokedex.training.checkpointing")
    summary = train(hydra_config("train", _overrides(synthetic_zip, *_fault(tmp_path, stop, "SIGTERM")), tmp_path))
    assert _resumed_at(caplog.text) == stop  # continued, not started over (that too ends at the same step)
    assert summary["epochs"] == EPOCHS
    assert summary["global_step"] == uninterrupted["global_step"]
    assert _last(tmp_path) == (EPOCHS - 1, uninterrupted["global_step"])
    assert summary["best_checkpoint"] == "checkpoints/best.ckpt"  # the restored callback reuses its file


def test_early_stopped_run_is_not_trained_further(synthetic_zip: Path, tmp_path: Path, hydra_config) -> None:
    stop_at_once = ["+callbacks.early_stopping.stopping_threshold=0.0"]  # val/top1 >= 0: stops after epoch 0
    first = train(hydra_config("train", _overrides(synthetic_zip, *stop_at_once), tmp_path))
    assert first["epochs"] == 1
    again = train(hydra_config("train", _overrides(synthetic_zip, *stop_at_once), tmp_path))  # resume=auto
    assert again["global_step"] == first["global_step"]  # without the remembered stop: one more epoch
    assert _last(tmp_path)[1] == first["global_step"]


def _run(run: Path, synthetic_zip: Path, *extra: str) -> Any:
    return run_module("pokedex.train", *_overrides(synthetic_zip, f"hydra.run.dir={run}", *extra), timeout=400)


@pytest.mark.slow
def test_sigkill_after_an_epoch_then_the_same_command_resumes(
    uninterrupted: dict[str, int], synthetic_zip: Path, tmp_path: Path
) -> None:
    per_epoch = uninterrupted["per_epoch"]
    fault = _fault(tmp_path, per_epoch + 2, "SIGKILL")  # mid-way through the second epoch: two steps are lost
    killed = _run(tmp_path, synthetic_zip, *fault)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert _last(tmp_path) == (0, per_epoch)  # the end of epoch 0, written before the kill

    resumed = _run(tmp_path, synthetic_zip, *fault)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _resumed_at(resumed.stdout + resumed.stderr) == per_epoch
    metrics = _metrics(tmp_path)
    assert (metrics["epochs"], metrics["global_step"]) == (EPOCHS, uninterrupted["global_step"])
    assert _last(tmp_path) == (EPOCHS - 1, uninterrupted["global_step"])


@pytest.mark.slow
def test_sigterm_mid_epoch_checkpoints_exits_143_and_resumes(
    uninterrupted: dict[str, int], synthetic_zip: Path, tmp_path: Path
) -> None:
    per_epoch = uninterrupted["per_epoch"]
    fault = _fault(tmp_path, per_epoch + 2, "SIGTERM")
    stopped = _run(tmp_path, synthetic_zip, *fault)
    assert stopped.returncode == PREEMPTED_EXIT_CODE == 143, stopped.stderr[-3000:]
    assert f"SIGTERM at epoch 1, step {per_epoch + 2}: state saved" in stopped.stdout + stopped.stderr
    assert _last(tmp_path) == (1, per_epoch + 2)  # more than the epoch-end step
    assert not (tmp_path / "metrics.json").exists()

    resumed = _run(tmp_path, synthetic_zip, *fault)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _resumed_at(resumed.stdout + resumed.stderr) == per_epoch + 2
    metrics = _metrics(tmp_path)
    assert (metrics["epochs"], metrics["global_step"]) == (EPOCHS, uninterrupted["global_step"])
    assert _last(tmp_path) == (EPOCHS - 1, uninterrupted["global_step"])
