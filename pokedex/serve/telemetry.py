"""Per-prediction telemetry: Prometheus histograms and counters, the drift window, an optional prediction log.

The HTTP metrics (``prometheus.py``) say whether the service is up and fast; these say whether its *answers* still
look like the answers it gave on validation data: how confident, how spread over classes, on what kind of
images. One ``Telemetry.observe(record)`` per served image updates all three sinks.

Label cardinality: ``pokedex_predictions_total{class}`` has one series per class the model has predicted so
far, at most the model's class count (649 for the sprite model). Label values come from the model's own class
list, never from the client, so the bound is fixed: ~650 counters, ~40 kB per scrape and a few MB in
Prometheus for a handful of replicas, which is acceptable for the per-class questions ("what do people
upload?") it answers. Pass ``per_class=False`` for models with many thousands of classes.

The prediction log (``pokedex.drift.predlog``, off unless a path is given) records what the model answered and
the input facts; never the image bytes, the client's filename or address.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pokedex.drift.monitor import DriftMonitor
from pokedex.drift.predlog import PredictionLog
from pokedex.drift.records import PredictionRecord

CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
ENTROPY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)  # nats; ln(649) = 6.48
PIXEL_BUCKETS = tuple(float(4**k) for k in range(5, 13))  # 32² … 4096² (the default upload pixel cap)
FRACTION_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99)


class Telemetry:
    """The per-prediction sinks of one app: metrics on its own registry, the drift window, the log."""

    def __init__(
        self,
        registry: CollectorRegistry,
        class_names: Sequence[str],
        *,
        low_confidence: float = 0.5,
        per_class: bool = True,
        drift: DriftMonitor | None = None,
        prediction_log: PredictionLog | None = None,
        model_id: str | None = None,
        reference_low_confidence: float | None = None,
    ) -> None:
        """``reference_low_confidence``: share of validation predictions below ``low_confidence``
        (``reference_share_below(reference, "confidence", low_confidence)``), exported for the alert rule."""
        self.class_names = list(class_names)
        self.low_confidence = low_confidence
        self.per_class = per_class
        self.drift = drift
        self.prediction_log = prediction_log
        self.model_id = model_id
        self._metrics = _PredictionMetrics(registry)
        if reference_low_confidence is not None:
            Gauge(
                "pokedex_low_confidence_reference_ratio",
                "Share of validation-split predictions below the low-confidence threshold.",
                registry=registry,
            ).set(reference_low_confidence)
        if drift is not None:
            registry.register(DriftCollector(drift))

    def observe(self, record: PredictionRecord) -> None:
        """Account one served image (call once per image, after its prediction is known)."""
        m = self._metrics
        m.confidence.observe(record.confidence)
        m.entropy.observe(record.entropy)
        if self.per_class:
            m.predictions.labels(self.class_names[record.class_index]).inc()
        if record.confidence < self.low_confidence:
            m.low_confidence.inc()
        facts = record.facts
        m.pixels.observe(facts.pixels)
        m.transparency.labels("true" if facts.had_alpha else "false").inc()
        m.formats.labels(facts.format).inc()
        m.foreground.observe(facts.foreground_fraction)
        if self.drift is not None:
            self.drift.add(record)
        if self.prediction_log is not None:
            self.prediction_log.write(self.log_entry(record))

    def log_entry(self, record: PredictionRecord) -> dict[str, Any]:
        entry: dict[str, Any] = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds")}
        if self.model_id is not None:
            entry["model"] = self.model_id
        return entry | record.to_log_dict(self.class_names)

    def close(self) -> None:
        if self.prediction_log is not None:
            self.prediction_log.close()


class _PredictionMetrics:
    """The metric objects, registered on the app's registry (two apps in one process never share them)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.confidence = Histogram(
            "pokedex_prediction_confidence",
            "Top-1 probability of each served prediction.",
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.entropy = Histogram(
            "pokedex_prediction_entropy",
            "Entropy (nats) of each predicted distribution.",
            buckets=ENTROPY_BUCKETS,
            registry=registry,
        )
        self.predictions = Counter(
            "pokedex_predictions_total", "Served predictions by top-1 class.", ["class"], registry=registry
        )
        self.low_confidence = Counter(
            "pokedex_low_confidence_total",
            "Predictions whose top-1 probability is below the low-confidence threshold.",
            registry=registry,
        )
        self.pixels = Histogram(
            "pokedex_input_pixels",
            "Width x height of each upload, from its header.",
            buckets=PIXEL_BUCKETS,
            registry=registry,
        )
        self.transparency = Counter(
            "pokedex_input_transparency_total", "Uploads by declared transparency.", ["had_alpha"], registry=registry
        )
        self.formats = Counter("pokedex_input_format_total", "Uploads by image format.", ["format"], registry=registry)
        self.foreground = Histogram(
            "pokedex_input_foreground_fraction",
            "Share of the canonical (fitted, centred) image that is not transparent.",
            buckets=FRACTION_BUCKETS,
            registry=registry,
        )


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
