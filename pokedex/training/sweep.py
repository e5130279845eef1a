"""A Hydra callback that writes ``summary.csv`` / ``summary.md`` / ``best.yaml`` into the sweep directory.

Every trial's ``pokedex.train`` returns its best val top-1; the table ranks trials by it, so a multirun
(grid or optuna) ends with one file that answers "which settings won?".
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pokedex.io import write_text_atomic

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    def __init__(self, objective: str = "best_val_top1") -> None:
        self.objective = objective
        self.trials: list[dict[str, Any]] = []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        ok = job_return.status == JobStatus.COMPLETED
        self.trials.append(
            {
                "job": job_return.hydra_cfg.hydra.job.num if job_return.hydra_cfg else len(self.trials),
                "overrides": " ".join(job_return.overrides or []),
                self.objective: float(job_return.return_value) if ok and job_return.return_value is not None else None,
                "status": "ok" if ok else f"failed: {job_return._return_value!r}"[:200],
                "output_dir": job_return.working_dir or "",
            }
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        ranked = sorted(self.trials, key=lambda t: -(t[self.objective] if t[self.objective] is not None else -1.0))
        fields = ["job", "overrides", self.objective, "status", "output_dir"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(ranked)
        write_text_atomic(sweep_dir / "summary.csv", buffer.getvalue())
        lines = [f"| rank | {' | '.join(fields[:4])} |", "|" + " --- |" * 5]
        for rank, trial in enumerate(ranked, 1):
            score = trial[self.objective]
            cells = [
                str(trial["job"]),
                f"`{trial['overrides']}`",
                "-" if score is None else f"{score:.4f}",
                trial["status"],
            ]
            lines.append(f"| {rank} | {' | '.join(cells)} |")
        write_text_atomic(sweep_dir / "summary.md", "\n".join(lines) + "\n")
        if ranked and ranked[0][self.objective] is not None:
            best = {
                "objective": self.objective,
                "value": ranked[0][self.objective],
                "overrides": ranked[0]["overrides"],
            }
            write_text_atomic(sweep_dir / "best.yaml", OmegaConf.to_yaml(OmegaConf.create(best)))
        log.info("sweep summary (%d trials) written to %s", len(ranked), sweep_dir / "summary.md")
