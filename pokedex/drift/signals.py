"""The drift signals: one two-sample statistic per field, bound to its reference summary.

Each signal is one number, larger = more different (see ``pokedex.drift.stats`` for why each test):

==================== ============ =========================================================================
signal               test         what moves it
==================== ============ =========================================================================
confidence           KS           off-domain images, a broken preprocessing, a model that no longer fits
log10_pixels         KS           photos and screenshots instead of 128 px sprites
foreground_fraction  KS           full-frame photos vs sprites on a transparent canvas
format, had_alpha    TVD          JPEGs, images without transparency
class_groups         chi-square   predictions moving between common and rare classes
class_concentration  collision    collapse onto a few classes (off-domain) or one popular Pokémon
embedding            MMD (RBF)    anything the network itself sees as new (needs an embedding output)
==================== ============ =========================================================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from pokedex.drift import stats as st
from pokedex.drift.records import PredictionRecord

REFERENCE_FORMAT = 1


def columns_of(records: Sequence[PredictionRecord], embeddings: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Records → one array per field (what the signals read). ``embeddings`` overrides the records' own."""
    columns: dict[str, np.ndarray] = {
        "confidence": np.array([r.confidence for r in records], dtype=np.float64),
        "log10_pixels": np.array([r.facts.log10_pixels for r in records], dtype=np.float64),
        "foreground_fraction": np.array([r.facts.foreground_fraction for r in records], dtype=np.float64),
        "format": np.array([r.facts.format for r in records], dtype=str),
        "had_alpha": np.array(["true" if r.facts.had_alpha else "false" for r in records], dtype=str),
        "class": np.array([r.class_index for r in records], dtype=np.int64),
    }
    if embeddings is None and records and all(r.embedding is not None for r in records):
        embeddings = np.stack([np.asarray(r.embedding, dtype=np.float64).reshape(-1) for r in records])
    if embeddings is not None:
        columns["embedding"] = np.asarray(embeddings, dtype=np.float64)
    return columns


class Signal(ABC):
    """One drift statistic bound to its reference summary (decoded once, reused for every window)."""

    kind: ClassVar[str]

    def __init__(self, name: str, spec: Mapping[str, Any]) -> None:
        self.name = name
        self.field = str(spec["field"])

    def prepare(self, column: np.ndarray) -> np.ndarray:
        """Raw column → what ``score`` reads (the embedding projection; identity elsewhere)."""
        return column

    @abstractmethod
    def score(self, column: np.ndarray) -> float:
        """Larger = further from the reference; NaN when the window cannot be scored."""


class KSSignal(Signal):
    kind = "ks"

    def __init__(self, name: str, spec: Mapping[str, Any]) -> None:
        super().__init__(name, spec)
        self.quantiles = np.asarray(spec["quantiles"], dtype=np.float64)

    def score(self, column: np.ndarray) -> float:
        return st.ks_statistic(self.quantiles, column)


class TVDSignal(Signal):
    kind = "tvd"

    def __init__(self, name: str, spec: Mapping[str, Any]) -> None:
        super().__init__(name, spec)
        self.probabilities = {str(k): float(v) for k, v in spec["probabilities"].items()}

    def score(self, column: np.ndarray) -> float:
        return st.total_variation(self.probabilities, list(column))


class ClassGroupsSignal(Signal):
    kind = "chi2_groups"

    def __init__(self, name: str, spec: Mapping[str, Any]) -> None:
        super().__init__(name, spec)
        self.group_of_class = np.asarray(spec["group_of_class"], dtype=np.int64)
        self.group_mass = np.asarray(spec["group_mass"], dtype=np.float64)

    def score(self, column: np.ndarray) -> float:
        return st.chi_square_groups(self.group_of_class, self.group_mass, column)


class CollisionSignal(Signal):
    kind = "collision"

    def score(self, column: np.ndarray) -> float:
        return st.collision_rate(column)


class MMDSignal(Signal):
    kind = "mmd"

    def __init__(self, name: str, spec: Mapping[str, Any]) -> None:
        super().__init__(name, spec)
        self.center = st.decode_array(spec["center"])
        self.projection = st.decode_array(spec["projection"])
        self.sample = st.decode_array(spec["sample"])
        self.gamma = float(spec["gamma"])
        kernel = np.exp(-self.gamma * st._sq_distances(self.sample, self.sample))
        self.reference_term = st.mean_off_diagonal(kernel)

    def prepare(self, column: np.ndarray) -> np.ndarray:
        if column.ndim != 2 or column.shape[1] != self.center.size:
            raise ValueError(f"{self.name}: expected embeddings of width {self.center.size}, got {column.shape}")
        return (column - self.center) @ self.projection

    def score(self, column: np.ndarray) -> float:
        return st.mmd2(self.sample, column, self.gamma, self.reference_term)


SIGNAL_KINDS: dict[str, type[Signal]] = {
    cls.kind: cls for cls in (KSSignal, TVDSignal, ClassGroupsSignal, CollisionSignal, MMDSignal)
}


def make_signals(reference: Mapping[str, Any]) -> dict[str, Signal]:
    """The reference's signal specs → ready-to-score ``Signal`` objects (unknown kinds are an error, not skipped)."""
    if reference.get("format") != REFERENCE_FORMAT:
        raise ValueError(f"drift reference format {reference.get('format')!r}; this code reads {REFERENCE_FORMAT}")
    signals = {}
    for name, spec in reference["signals"].items():
        kind = SIGNAL_KINDS.get(spec.get("kind"))
        if kind is None:
            raise ValueError(f"drift signal {name!r}: unknown kind {spec.get('kind')!r}; known: {sorted(SIGNAL_KINDS)}")
        signals[name] = kind(name, spec)
    return signals
