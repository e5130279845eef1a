"""What one prediction tells us about the traffic: the facts drift detection, telemetry and the log share.

One small record per request, computed once, so that the Prometheus histograms, the sliding drift window, the
prediction log and the reference built at export time can never disagree about what "confidence" or
"foreground fraction" means. Nothing here identifies the client: no image bytes, no filename, no address.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@dataclass(frozen=True)
class InputFacts:
    """Facts about an upload that are cheap to read and that change when the kind of traffic changes.

    ``had_alpha``: the file declared transparency (alpha channel or a transparent palette entry). Sprites do;
    photos and screenshots usually don't, which is exactly the shift we want to see.
    ``foreground_fraction``: share of the canonical (fitted, centred) array that is not transparent.
    """

    width: int
    height: int
    format: str
    had_alpha: bool
    foreground_fraction: float

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def log10_pixels(self) -> float:
        """Image sizes span orders of magnitude; a log scale keeps a KS test from being all about the tail."""
        return math.log10(max(1, self.pixels))

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "had_alpha": self.had_alpha,
            "foreground_fraction": round(self.foreground_fraction, 5),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputFacts:
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            format=str(data["format"]),
            had_alpha=bool(data["had_alpha"]),
            foreground_fraction=float(data["foreground_fraction"]),
        )


def input_facts(data: bytes, array: np.ndarray, *, formats: tuple[str, ...] | None = None) -> InputFacts:
    """Facts of an upload that has already been decoded into ``array`` (canonical uint8 RGBA, (4, S, S)).

    Only the image header is read again (Pillow opens lazily), so this costs microseconds; call it after the
    upload passed ``decode_upload``, which has already applied the size and format limits to these bytes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=formats) as image:
            width, height = image.size
            fmt = image.format or "OTHER"
            had_alpha = image.mode in ALPHA_MODES or "transparency" in image.info
    return InputFacts(width, height, fmt, had_alpha, foreground_fraction(array))


def foreground_fraction(array: np.ndarray) -> float:
    """Alpha coverage of a canonical RGBA array (channel-first): mean opacity, 1 for a full-frame photo.

    Mean alpha rather than a count of non-zero pixels: resizing leaves a faint halo of low-alpha pixels around
    a sprite, which a count would take for foreground (+40% on a small sprite, measured).
    """
    return float(np.asarray(array[3], dtype=np.float64).mean() / 255.0)


def entropy(probs: np.ndarray) -> float:
    """Shannon entropy in nats: low for a confident prediction, up to ln(C) when the model has no idea."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@dataclass(frozen=True)
class PredictionRecord:
    """One served prediction, reduced to what monitoring needs.

    ``embedding`` is the penultimate-layer feature vector when the model exports one (``None`` otherwise: the
    embedding drift signal is then reported as unavailable, everything else still works).
    """

    class_index: int
    confidence: float
    entropy: float
    facts: InputFacts
    embedding: np.ndarray | None = None

    @classmethod
    def from_probs(cls, probs: np.ndarray, facts: InputFacts, embedding: np.ndarray | None = None) -> PredictionRecord:
        row = np.asarray(probs).reshape(-1)
        index = int(np.argmax(row))
        return cls(index, float(row[index]), entropy(row), facts, embedding)

    def to_log_dict(self, class_names: list[str] | None = None) -> dict[str, Any]:
        """The JSON Lines entry of the prediction log (no embedding: it is large and not needed offline)."""
        entry: dict[str, Any] = {"class_index": self.class_index}
        if class_names is not None:
            entry["label"] = class_names[self.class_index]
        entry |= {"confidence": round(self.confidence, 6), "entropy": round(self.entropy, 6), **self.facts.to_dict()}
        return entry

    @classmethod
    def from_log_dict(cls, entry: dict[str, Any]) -> PredictionRecord:
        return cls(
            class_index=int(entry["class_index"]),
            confidence=float(entry["confidence"]),
            entropy=float(entry["entropy"]),
            facts=InputFacts.from_dict(entry),
        )
