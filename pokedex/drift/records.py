"""What one prediction tells us about the traffic: the facts drift detection, telemetry and the log share.

One small record per request, computed once, so that the Prometheus histograms, the sliding drift window, the
prediction log and the reference built at export time can never disagree about what "confidence" or
"foreground fraction" means. Nothing here identifies the client: no image bytes, no filename, no address.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pokedex.preprocess import DEFAULT_MAX_PIXELS, InputFacts, image_to_canonical, open_image


@dataclass(frozen=True)
class UploadFacts:
    """Facts about an upload that are cheap to read and that change when the kind of traffic changes.

    ``width``/``height``/``format`` come from the image header; ``had_alpha`` and ``foreground_fraction`` are
    the by-products of the one preprocessing pass (``pokedex.preprocess.InputFacts``), so the service, the
    export-time reference and the prediction log can never disagree about them:

    * ``had_alpha``: some pixel was transparent. Sprites are; photos and screenshots are not, which is exactly
      the shift we want to see;
    * ``foreground_fraction``: share of the input's pixels that are content (1.0 for a picture kept opaque).
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
    def from_dict(cls, data: dict[str, Any]) -> UploadFacts:
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            format=str(data["format"]),
            had_alpha=bool(data["had_alpha"]),
            foreground_fraction=float(data["foreground_fraction"]),
        )

    @classmethod
    def of(cls, image: Image.Image, facts: InputFacts) -> UploadFacts:
        """The facts of a decoded ``image`` and of its preprocessing (no second pass over the pixels)."""
        width, height = image.size
        return cls(width, height, image.format or "OTHER", facts.had_transparency, float(facts.foreground_fraction))


def decode_with_facts(
    data: bytes,
    image_size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: tuple[str, ...] | None = None,
    name: str = "image",
) -> tuple[np.ndarray, UploadFacts]:
    """Encoded bytes → (canonical array, facts) in one decode: the service per upload, export per val image.

    Decoding errors are ``ImageError`` (from ``open_image``). Anything raised while converting an image that
    decoded fine is a bug, not bad input, so it is left to propagate as it is.
    """
    image = open_image(data, max_pixels=max_pixels, name=name, formats=formats)
    array, facts = image_to_canonical(image, image_size)
    return array, UploadFacts.of(image, facts)


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
    facts: UploadFacts
    embedding: np.ndarray | None = None

    @classmethod
    def from_probs(cls, probs: np.ndarray, facts: UploadFacts, embedding: np.ndarray | None = None) -> PredictionRecord:
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
            facts=UploadFacts.from_dict(entry),
        )
