"""The optional prediction log: bounded, rotating JSON Lines of what the model answered, never what it was sent.

Off unless ``prediction_log`` is set. Size-based rotation through the standard library's
``RotatingFileHandler`` (used directly, not through a global logger). Each entry records the answer and the
input facts (``PredictionRecord.to_log_dict``); never the image bytes, the client's filename or address.
Written by the service, read back by the offline drift report (``python -m pokedex.monitor``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class PredictionLog:
    """Append-only JSON Lines file, rotated at ``max_bytes`` keeping ``backups`` old files. Thread-safe.

    A failing disk never fails a prediction: write errors go to the handler's error path (stderr), once per
    entry, and serving goes on.
    """

    def __init__(self, path: str | Path, *, max_bytes: int = 10 * 2**20, backups: int = 3) -> None:
        if max_bytes <= 0 or backups < 1:
            raise ValueError(f"prediction log needs max_bytes > 0 and backups >= 1, got {max_bytes}, {backups}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = RotatingFileHandler(
            self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        self._handler.handle(logging.LogRecord("pokedex.predictions", logging.INFO, __file__, 0, line, None, None))

    def close(self) -> None:
        self._handler.close()


def log_files(path: str | Path) -> list[Path]:
    """The log and its rotated backups, oldest first (``log.3``, ``log.2``, ``log.1``, ``log``)."""
    path = Path(path)
    backups = sorted(
        (p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()),
        key=lambda p: int(p.suffix[1:]),
        reverse=True,
    )
    return [*backups, *([path] if path.exists() else [])]


def read_prediction_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """Entries of the log and its backups in write order; a torn last line (a crash mid-write) is skipped."""
    for file in log_files(path):
        with file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s:%d: skipping a malformed prediction log line", file, number)
