"""Training that survives preemption: ``last.ckpt`` is the true latest state, SIGTERM checkpoints, runs auto-resume.

Lightning 2.6 on its own gets all three wrong for us: ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only
when it also saves a top-k checkpoint (so with ``monitor=val/top1`` only when validation improves), and on SIGTERM
its loops raise ``SIGTERMException``, a ``SystemExit`` without a code: nothing is saved and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol, get_filesystem
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

RESUME_MODES = ("auto", "never")
# what a shell reports for a process that SIGTERM ended: schedulers and scripts see "interrupted", not "done"
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


class LatestCheckpoint(Checkpoint):
    """Keep ``<dirpath>/last.ckpt`` the latest training state, replaced atomically each time.

    Written at every training epoch end (after validation and early stopping, so a resumed run makes the same
    decisions), every ``every_n_train_steps`` optimizer steps (0: off) and when fitting is interrupted by SIGTERM
    (preemption) or Ctrl-C. Any other exception leaves the previous ``last.ckpt`` alone: the state that crashed is
    not one to resume from. A checkpoint written after early stopping remembers it, so resuming a finished run does
    not train further (unless early stopping is switched off).
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str, every_n_train_steps: int = 0) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps={every_n_train_steps}: expected 0 (off) or a positive step count")
        self.dirpath = str(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self._stopped = False  # trainer.should_stop when the checkpoint was written
        self._resumed_stopped = False

    @property
    def path(self) -> str:
        return os.path.join(self.dirpath, self.FILENAME)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path:
            epoch, step = trainer.current_epoch, trainer.global_step
            log.info("resumed from %s at epoch %d, step %d", trainer.ckpt_path, epoch, step)
        if self._resumed_stopped and any(isinstance(cb, EarlyStopping) for cb in trainer.callbacks):
            log.info("the run had already stopped early: no further training (callbacks.early_stopping=null trains on)")
            trainer.should_stop = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException | KeyboardInterrupt) and trainer.state.fn == TrainerFn.FITTING:
            self._save(trainer)
            log.warning(
                "%s at epoch %d, step %d: state saved to %s",
                "SIGTERM" if isinstance(exception, SIGTERMException) else "interrupted",
                trainer.current_epoch,
                trainer.global_step,
                self.path,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"stopped": self._stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_stopped = bool(state_dict.get("stopped", False))

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        self._stopped = trainer.should_stop
        save_atomically(trainer, self.path)


def save_atomically(trainer: L.Trainer, path: str) -> None:
    """``trainer.save_checkpoint`` to a temporary file beside ``path``, then one rename over it (fsynced).

    A kill mid-write leaves the previous file whole. Lightning's own writer stages the bytes in the system temp
    directory and moves them: a rename only when that is the same filesystem, otherwise a plain copy into place.
    An object store (``gs://``) replaces an object whole, so there the path is written directly.
    """
    if not _is_local_file_protocol(path):
        trainer.save_checkpoint(path)
        return
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    trainer.save_checkpoint(tmp)  # on every rank: the strategy writes on rank 0 (sharded ones need all ranks)
    if trainer.is_global_zero:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    trainer.strategy.barrier("pokedex.save_atomically")


def resume_checkpoint(resume: str, ckpt_path: str | None, callbacks: list[Any]) -> str | None:
    """The checkpoint ``trainer.fit`` starts from, or None for a fresh start.

    Precedence: an explicit ``ckpt_path`` always wins; then, with ``resume=auto``, the run directory's
    ``last.ckpt`` (the :class:`LatestCheckpoint` path) when it exists; ``resume=never`` always starts afresh.
    """
    if resume not in RESUME_MODES:
        raise ValueError(f"resume={resume!r}: expected one of {RESUME_MODES} (a checkpoint of your choice: ckpt_path=)")
    if ckpt_path:
        return str(ckpt_path)
    latest = next((cb for cb in callbacks if isinstance(cb, LatestCheckpoint)), None)
    if resume == "never" or latest is None or not get_filesystem(latest.path).exists(latest.path):
        return None
    log.info("resume=auto: %s exists, continuing from it (resume=never starts afresh)", latest.path)
    return latest.path


@contextmanager
def preemption_exit_code() -> Iterator[None]:
    """Turn Lightning's ``SIGTERMException`` (exit status 0) into exit status 143: the run was interrupted."""
    try:
        yield
    except SIGTERMException as exc:
        log.warning("stopped by SIGTERM; run the same command again to resume from last.ckpt")
        raise SystemExit(PREEMPTED_EXIT_CODE) from exc
