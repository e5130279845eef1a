"""Synthetic prediction streams for the drift tests: an in-distribution "world" and shifted versions of it.

The world mimics the real one where it matters for the statistics: 649 classes, every upload a 128×128 PNG with
transparency (so the format/size signals are degenerate, as with sprites), a skewed confidence distribution and
class-dependent embeddings. Shifts change one aspect at a time, so each test shows which signal reacts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from pokedex.drift.monitor import DriftMonitor
from pokedex.drift.records import PredictionRecord, UploadFacts

NUM_CLASSES = 649
EMBED_DIM = 64
SPRITE = UploadFacts(128, 128, "PNG", True, 0.3)


@dataclass
class World:
    """Draws synthetic prediction records; ``shift`` names what differs from the in-distribution traffic."""

    seed: int = 0
    class_means: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.class_means = np.random.default_rng(12345).normal(0.0, 1.0, (NUM_CLASSES, EMBED_DIM))

    def records(self, n: int, shift: str = "none", *, rng: np.random.Generator) -> list[PredictionRecord]:
        classes = rng.integers(0, NUM_CLASSES, n)
        confidence = rng.beta(6.0, 1.2, n)
        foreground = rng.beta(4.0, 8.0, n)
        noise = rng.normal(0.0, 1.0, (n, EMBED_DIM))
        facts = [SPRITE] * n
        if shift == "low_confidence":
            confidence = rng.beta(2.0, 2.0, n)
        elif shift == "class_collapse":
            classes = rng.integers(0, 15, n)
        elif shift == "embedding":
            noise = noise + 0.5  # every feature moves by half a noise standard deviation
        elif shift == "photos":
            classes = rng.integers(0, 30, n)
            confidence = rng.beta(2.0, 3.0, n)
            noise = rng.normal(0.0, 2.0, (n, EMBED_DIM))
            facts = [UploadFacts(640, 480, "JPEG", False, 0.75)] * n
        elif shift != "none":
            raise ValueError(shift)
        embeddings = self.class_means[classes] + noise
        return [
            PredictionRecord(
                int(c),
                float(p),
                1.0 - float(p),
                UploadFacts(
                    f.width, f.height, f.format, f.had_alpha, float(g) if f is SPRITE else f.foreground_fraction
                ),
                e,
            )
            for c, p, g, f, e in zip(classes, confidence, foreground, facts, embeddings, strict=True)
        ]


def detection_delay(monitor: DriftMonitor, shifted: Iterable[PredictionRecord], limit: int) -> int | None:
    """Requests of the shifted stream until the monitor's overall verdict turns to drift (None: not in ``limit``)."""
    for i, record in enumerate(shifted, start=1):
        monitor.add(record)
        if monitor.report()["alarm"]:
            return i
        if i >= limit:
            return None
    return None


def alarm_rate(make_monitor: Callable[[], DriftMonitor], windows: Iterable[list[PredictionRecord]]) -> float:
    """Share of independent full windows on which a fresh monitor alarms."""
    outcomes = []
    for records in windows:
        monitor = make_monitor()
        monitor.extend(records)
        outcomes.append(monitor.report()["alarm"])
    return float(np.mean(outcomes))
