"""Is today's traffic still the traffic the model was validated on? A sliding window against a stored reference.

At serving time a ``DriftMonitor`` keeps the last ``window`` requests and scores each signal
(``pokedex.drift.signals``) against the reference (``pokedex.drift.reference``) with the thresholds calibrated at
export time (``pokedex.drift.calibration``); ``report()`` is the body of ``GET /drift``. The Prometheus gauges
are the service's business (``pokedex.serve.telemetry``): this package stays free of serving dependencies so
that export (inference layer) and the service can share it.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from pokedex.drift.records import PredictionRecord
from pokedex.drift.signals import Signal, columns_of, make_signals


class DriftMonitor:
    """The last ``window`` predictions, scored against the reference on demand (thread-safe, O(1) ``add``).

    Scores are only computed when asked (``report``, a Prometheus scrape) and cached until the next ``add``,
    so the request path pays for one deque append under a lock. A window is judged only once full: thresholds
    were calibrated for exactly ``window`` requests, and a half-full window would alarm far more often.
    """

    def __init__(self, reference: Mapping[str, Any], *, window: int = 200) -> None:
        if window < 2:
            raise ValueError(f"drift window must be >= 2, got {window}")
        self.window = window
        self.signals = make_signals(reference)
        calibration = reference.get("calibration") or {}
        self.thresholds: dict[str, float] = dict((calibration.get("thresholds") or {}).get(str(window), {}))
        self._records: deque[PredictionRecord] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._seen = 0
        self._cache: tuple[int, dict[str, Any]] | None = None

    def add(self, record: PredictionRecord) -> None:
        with self._lock:
            self._records.append(record)
            self._seen += 1

    def extend(self, records: Iterable[PredictionRecord]) -> None:
        for record in records:
            self.add(record)

    def _snapshot(self) -> tuple[int, list[PredictionRecord]]:
        with self._lock:
            return self._seen, list(self._records)

    def _score(self, signal: Signal, records: list[PredictionRecord], columns: dict[str, np.ndarray]) -> float:
        column = columns.get(signal.field)
        if column is None or len(records) < self.window:
            return float("nan")
        return signal.score(signal.prepare(column))

    def report(self) -> dict[str, Any]:
        """The body of ``GET /drift``: window fill, per-signal score/threshold/verdict, an overall verdict."""
        seen, records = self._snapshot()
        cached = self._cache
        if cached is not None and cached[0] == seen:
            return cached[1]
        columns = columns_of(records) if len(records) >= self.window else {}
        signals = {name: self._signal_entry(signal, records, columns) for name, signal in self.signals.items()}
        judged = [s["verdict"] for s in signals.values() if s["verdict"] in ("ok", "drift")]
        if len(records) < self.window:
            verdict = "filling"
        elif not judged:
            verdict = "uncalibrated"
        else:
            verdict = "drift" if "drift" in judged else "ok"
        result = {
            "verdict": verdict,
            "alarm": verdict == "drift",
            "window_size": self.window,
            "filled": len(records),
            "requests_seen": seen,
            "signals": signals,
        }
        self._cache = (seen, result)
        return result

    def _signal_entry(
        self, signal: Signal, records: list[PredictionRecord], columns: dict[str, np.ndarray]
    ) -> dict[str, Any]:
        score = self._score(signal, records, columns)
        threshold = self.thresholds.get(signal.name)
        if len(records) < self.window:
            verdict = "filling"
        elif math.isnan(score):
            verdict = "unavailable"  # e.g. the model exports no embedding
        elif threshold is None:
            verdict = "uncalibrated"
        else:
            verdict = "drift" if score > threshold else "ok"
        return {
            "kind": signal.kind,
            "score": None if math.isnan(score) else round(score, 6),
            "threshold": threshold,
            "verdict": verdict,
        }

    @property
    def wants_embeddings(self) -> bool:
        """Whether the reference has an embedding signal (the service then asks the model for embeddings)."""
        return any(s.field == "embedding" for s in self.signals.values())
