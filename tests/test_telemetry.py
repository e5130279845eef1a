"""Per-prediction telemetry: input facts, Prometheus series, the rotating prediction log."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry, generate_latest

from pokedex.drift.monitor import DriftMonitor
from pokedex.drift.predlog import PredictionLog, log_files, read_prediction_log
from pokedex.drift.records import PredictionRecord, UploadFacts, decode_with_facts, entropy
from pokedex.drift.reference import build_reference, reference_share_below
from pokedex.preprocess import ImageError, bytes_to_array
from pokedex.serve.telemetry import Telemetry

CLASSES = ["Bulbasaur", "Farfetch'd", "Nidoran♀"]


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _record(index: int = 0, confidence: float = 0.9, *, fmt: str = "PNG", alpha: bool = True) -> PredictionRecord:
    probs = np.full(len(CLASSES), (1.0 - confidence) / (len(CLASSES) - 1))
    probs[index] = confidence
    return PredictionRecord.from_probs(probs, UploadFacts(96, 64, fmt, alpha, 0.25))


def test_upload_facts_from_a_sprite_and_a_photo() -> None:
    """One decode gives the array and the facts; the facts are the preprocessing's own by-products."""
    sprite = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    sprite.paste((255, 0, 0, 255), (10, 5, 30, 15))  # 20×10 opaque in a 40×20 transparent image
    data = _encode(sprite, "PNG")
    array, facts = decode_with_facts(data, 32)
    np.testing.assert_array_equal(array, bytes_to_array(data, 32))
    assert (facts.width, facts.height, facts.format, facts.had_alpha) == (40, 20, "PNG", True)
    assert facts.foreground_fraction == pytest.approx(20 * 10 / (40 * 20))  # share of the input that is content
    photo = _encode(Image.new("RGB", (64, 48), (10, 200, 30)), "JPEG")
    _, facts = decode_with_facts(photo, 32)
    assert (facts.format, facts.had_alpha, facts.pixels) == ("JPEG", False, 64 * 48)
    assert facts.foreground_fraction == 1.0  # one flat colour: kept opaque, all of it is content
    with pytest.raises(ImageError):
        decode_with_facts(data, 32, formats=("JPEG",))  # a PNG is not decoded when only JPEG is allowed


def test_record_from_probabilities() -> None:
    record = _record(1, 0.8)
    assert (record.class_index, record.confidence) == (1, pytest.approx(0.8))
    assert record.entropy == pytest.approx(entropy(np.array([0.1, 0.8, 0.1])))
    assert entropy(np.array([1.0, 0.0])) == 0.0
    assert entropy(np.full(4, 0.25)) == pytest.approx(np.log(4))


def test_metrics_series(tmp_path: Path) -> None:
    registry = CollectorRegistry(auto_describe=True)
    telemetry = Telemetry(registry, CLASSES, low_confidence=0.5)
    for record in (_record(1, 0.9), _record(1, 0.4), _record(2, 0.95, fmt="JPEG", alpha=False)):
        telemetry.observe(record)
    text = generate_latest(registry).decode()
    assert 'pokedex_predictions_total{class="Farfetch\'d"} 2.0' in text
    assert 'pokedex_predictions_total{class="Nidoran♀"} 1.0' in text
    assert 'pokedex_predictions_total{class="Bulbasaur"}' not in text  # series exist once predicted
    assert "pokedex_low_confidence_total 1.0" in text
    assert "pokedex_prediction_confidence_count 3.0" in text
    assert 'pokedex_prediction_confidence_bucket{le="0.5"} 1.0' in text
    assert "pokedex_prediction_entropy_count 3.0" in text
    assert 'pokedex_input_pixels_bucket{le="16384.0"} 3.0' in text  # 96 × 64 = 6144
    assert 'pokedex_input_transparency_total{had_alpha="false"} 1.0' in text
    assert 'pokedex_input_format_total{format="JPEG"} 1.0' in text
    assert "pokedex_input_foreground_fraction_count 3.0" in text


def test_reference_low_confidence_ratio_for_the_alert() -> None:
    reference = build_reference([_record(0, c) for c in (0.4, 0.45, 0.9, 0.95)], None, CLASSES)
    share = reference_share_below(reference, "confidence", 0.5)
    assert share == pytest.approx(0.5, abs=0.01)
    registry = CollectorRegistry(auto_describe=True)
    Telemetry(registry, CLASSES, reference_low_confidence=share)
    assert f"pokedex_low_confidence_reference_ratio {share}" in generate_latest(registry).decode()


def test_per_class_series_can_be_turned_off() -> None:
    registry = CollectorRegistry(auto_describe=True)
    Telemetry(registry, CLASSES, per_class=False).observe(_record())
    assert 'pokedex_predictions_total{class="' not in generate_latest(registry).decode()


def test_two_apps_in_one_process_do_not_share_metrics() -> None:
    one, two = CollectorRegistry(), CollectorRegistry()
    Telemetry(one, CLASSES).observe(_record())
    Telemetry(two, CLASSES)
    assert "pokedex_prediction_confidence_count 1.0" in generate_latest(one).decode()
    assert "pokedex_prediction_confidence_count 0.0" in generate_latest(two).decode()


def test_observe_feeds_the_drift_monitor() -> None:
    registry = CollectorRegistry(auto_describe=True)
    reference = build_reference([_record(i % 3) for i in range(30)], None, CLASSES)
    monitor = DriftMonitor(reference, window=5)
    telemetry = Telemetry(registry, CLASSES, drift=monitor)
    for _ in range(3):
        telemetry.observe(_record())
    assert monitor.report()["filled"] == 3
    assert "pokedex_drift_window_fill 0.6" in generate_latest(registry).decode()


def test_prediction_log_has_no_image_or_filename_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "predictions.jsonl"
    prediction_log = PredictionLog(path, max_bytes=2000, backups=2)
    telemetry = Telemetry(CollectorRegistry(), CLASSES, prediction_log=prediction_log, model_id="abc123")
    for i in range(60):
        telemetry.observe(_record(i % 3))
    telemetry.close()
    files = log_files(path)
    assert [f.name for f in files] == ["predictions.jsonl.2", "predictions.jsonl.1", "predictions.jsonl"]
    assert all(f.stat().st_size <= 2000 for f in files)
    entries = list(read_prediction_log(path))
    assert 0 < len(entries) < 60  # the oldest entries were rotated out: the log is bounded
    assert set(entries[-1]) == {"ts", "model", "class_index", "label", "confidence", "entropy", "width", "height",
                                "format", "had_alpha", "foreground_fraction"}  # fmt: skip
    assert entries[-1]["label"] == CLASSES[59 % 3]
    assert PredictionRecord.from_log_dict(entries[-1]).facts == UploadFacts(96, 64, "PNG", True, 0.25)


def test_prediction_log_is_thread_safe_and_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    prediction_log = PredictionLog(path, max_bytes=10**7, backups=1)
    threads = [
        threading.Thread(target=lambda: [prediction_log.write({"i": i, "pad": "x" * 200}) for i in range(200)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    prediction_log.close()
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"i": 3, "pad')  # a crash in the middle of a write
    entries = list(read_prediction_log(path))
    assert len(entries) == 800 and all(json.dumps(e) for e in entries)


def test_prediction_log_refuses_unbounded_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="backups"):
        PredictionLog(tmp_path / "p.jsonl", max_bytes=100, backups=0)
