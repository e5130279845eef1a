"""Fault injection for the preemption tests: a run that signals itself at an exact optimizer step.

Added to a real ``python -m pokedex.train`` run with ``+callbacks.fault._target_=tests.helpers.faults.SignalAtStep``;
the signal goes through the real path (Lightning's SIGTERM handler, or the kernel for SIGKILL), only its timing is
chosen, so the expected step counts are exact instead of depending on how fast this machine is.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L


class SignalAtStep(L.Callback):
    """Send signal ``signame`` (``SIGTERM``, ``SIGKILL``) to this process after optimizer step ``step``, once:
    the file ``once`` marks that it fired, so the very same command run again goes through, as a restarted job."""

    def __init__(self, step: int, signame: str, once: str) -> None:
        self.step = step
        self.signum = signal.Signals[signame]
        self.once = Path(once)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step == self.step and not self.once.exists():
            self.once.write_text(f"{self.signum.name} at step {self.step}\n")
            os.kill(os.getpid(), self.signum)
