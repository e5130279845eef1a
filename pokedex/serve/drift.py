"""Is today's traffic still the traffic the model was validated on? A sliding window against a stored reference.

The export step summarises the validation split's predictions into a *reference* (a JSON-serialisable dict that
travels in the ONNX sidecar): confidence and input-fact quantiles, category frequencies, class groups and a PCA
sample of penultimate embeddings. ``calibrate`` (``drift_calibration``) then sets one threshold per signal from
windows of held-out in-distribution data. At serving time a ``DriftMonitor`` keeps the last ``window``
requests and scores each signal against the reference; ``report()`` is ``GET /drift`` and
``register_metrics(registry)`` exposes ``pokedex_drift_*`` gauges, computed at scrape time.

Signals (each one number, larger = more different; see ``drift_stats`` for why each test):

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

import math
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pokedex.serve import drift_stats as st
from pokedex.serve.records import PredictionRecord

REFERENCE_FORMAT = 1
SIDECAR_KEY = "drift_reference"  # where the reference lives in the ONNX sidecar JSON
NUMERIC_FIELDS = ("confidence", "log10_pixels", "foreground_fraction")
CATEGORY_FIELDS = ("format", "had_alpha")
CONFIDENCE_EDGES = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 21))


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


def _embedding_spec(embeddings: np.ndarray, dims: int, sample: int, seed: int) -> dict[str, Any]:
    x = np.asarray(embeddings, dtype=np.float64)
    center, projection = st.pca_projection(x, dims)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(x), size=min(sample, len(x)), replace=False)
    projected = (x[chosen] - center) @ projection
    return {
        "kind": "mmd",
        "field": "embedding",
        "center": st.encode_array(center, "float32"),
        "projection": st.encode_array(projection),
        "sample": st.encode_array(projected),
        "gamma": st.rbf_gamma(projected),
    }


def _class_groups_spec(classes: np.ndarray, num_classes: int, groups: int, seed: int) -> dict[str, Any]:
    """Equal-mass class groups, cross-fitted: ranked on one half of the records, weighed on the other.

    Ranking and weighing on the same records is a winner's curse: with ~8 validation images per class the
    "most frequent" classes are mostly lucky ones, their group's mass is overestimated, and every later window
    looks drifted (chi-square ~40 instead of ~9 on 9 degrees of freedom, measured on synthetic data).
    """
    order = np.random.default_rng(seed).permutation(len(classes))
    ranking, weighing = classes[order[::2]], classes[order[1::2]]
    group_of_class = st.class_groups(np.bincount(ranking, minlength=num_classes)[:num_classes], groups)
    counts = np.bincount(group_of_class[weighing[weighing < num_classes]], minlength=groups).astype(np.float64)
    mass = (counts + 1.0) / (counts.sum() + groups)  # +1: no group may have zero expected count
    return {
        "kind": "chi2_groups",
        "field": "class",
        "group_of_class": group_of_class.tolist(),
        "group_mass": mass.tolist(),
    }


def build_reference(
    records: Sequence[PredictionRecord],
    embeddings: np.ndarray | None,
    class_names: Sequence[str],
    *,
    quantile_points: int = 201,
    class_group_count: int = 10,
    embedding_dims: int = 32,
    embedding_sample: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Summarise validation-split predictions into the drift reference that the export step stores.

    ``embeddings`` (N×D penultimate features, same order as ``records``) is optional: without it the embedding
    signal is left out. The result is uncalibrated; pass it through ``drift_calibration.calibrate``.
    """
    if not records:
        raise ValueError("build_reference needs at least one prediction record")
    cols = columns_of(records, embeddings)
    classes = np.bincount(cols["class"], minlength=len(class_names))[: len(class_names)].astype(np.float64)
    frequencies = classes / classes.sum()
    signals: dict[str, dict[str, Any]] = {
        name: {"kind": "ks", "field": name, "quantiles": st.summary_quantiles(cols[name], quantile_points).tolist()}
        for name in NUMERIC_FIELDS
    }
    for name in CATEGORY_FIELDS:
        values, counts = np.unique(cols[name], return_counts=True)
        probabilities = dict(zip(values.tolist(), (counts / counts.sum()).tolist(), strict=True))
        signals[name] = {"kind": "tvd", "field": name, "probabilities": probabilities}
    signals["class_groups"] = _class_groups_spec(cols["class"], len(class_names), class_group_count, seed)
    signals["class_concentration"] = {"kind": "collision", "field": "class", "reference": float((frequencies**2).sum())}
    if "embedding" in cols:
        signals["embedding"] = _embedding_spec(cols["embedding"], embedding_dims, embedding_sample, seed)
    hist, _ = np.histogram(cols["confidence"], bins=np.asarray(CONFIDENCE_EDGES))
    return {
        "format": REFERENCE_FORMAT,
        "records": len(records),
        "num_classes": len(class_names),
        "summary": {
            "confidence_mean": float(cols["confidence"].mean()),
            "confidence_histogram": {"edges": list(CONFIDENCE_EDGES), "counts": hist.tolist()},
            "class_frequencies": [round(float(f), 6) for f in frequencies],
        },
        "signals": signals,
        "calibration": None,
    }


def reference_share_below(reference: Mapping[str, Any], field: str, value: float) -> float:
    """Share of the reference's ``field`` (a KS signal) below ``value``, from its stored quantiles.

    The service exports this for confidence as ``pokedex_low_confidence_reference_ratio``, so the low-confidence
    alert compares against what this very model did on validation data, not against a guessed constant.
    """
    quantiles = np.asarray(reference["signals"][field]["quantiles"], dtype=np.float64)
    return float(np.searchsorted(quantiles, value, side="left") / quantiles.size)


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

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Expose ``pokedex_drift_{score,threshold,alarm,window_fill}`` on ``registry``, computed per scrape."""
        registry.register(DriftCollector(self))


class DriftCollector(Collector):
    """Prometheus collector over a ``DriftMonitor``: the gauges are read from ``report()`` at scrape time."""

    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = self.monitor.report()
        score, threshold, alarm, fill = self._families()
        for name, entry in report["signals"].items():
            if entry["score"] is not None:
                score.add_metric([name], entry["score"])
            if entry["threshold"] is not None:
                threshold.add_metric([name], entry["threshold"])
        alarm.add_metric([], 1.0 if report["alarm"] else 0.0)
        fill.add_metric([], report["filled"] / report["window_size"])
        yield from (score, threshold, alarm, fill)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "pokedex_drift_score", "Drift statistic of the sliding window, per signal.", labels=["signal"]
            ),
            GaugeMetricFamily("pokedex_drift_threshold", "Calibrated alarm threshold, per signal.", labels=["signal"]),
            GaugeMetricFamily("pokedex_drift_alarm", "1 while any signal of the full window exceeds its threshold."),
            GaugeMetricFamily("pokedex_drift_window_fill", "Share of the drift window filled (1 = judged)."),
        )
