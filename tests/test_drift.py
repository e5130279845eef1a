"""Drift statistics, the reference, calibration and the sliding-window monitor, on synthetic prediction streams."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pokedex.drift import stats as st
from pokedex.drift.calibration import _thresholds_at, calibrate, cross_fitted_level, false_alarm_rate
from pokedex.drift.monitor import DriftMonitor
from pokedex.drift.reference import build_reference
from pokedex.drift.signals import make_signals
from pokedex.serve.telemetry import DriftCollector
from tests.drift_helpers import NUM_CLASSES, World, alarm_rate, detection_delay

ALPHA = 0.01
WINDOW = 200
CLASS_NAMES = [f"class{i}" for i in range(NUM_CLASSES)]


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def calibrated(world: World) -> dict:
    """Reference from a "validation split", thresholds from a separate "test split", as the export will do."""
    rng = np.random.default_rng(1)
    reference = build_reference(world.records(5000, rng=rng), None, CLASS_NAMES)
    return calibrate(reference, world.records(5000, rng=rng), window_sizes=(WINDOW,), alpha=ALPHA, n_windows=2000)


def test_ks_statistic_is_exact_with_ties() -> None:
    ref = st.summary_quantiles(np.array([1.0] * 50 + [2.0] * 50))
    assert st.ks_statistic(ref, np.array([1.0, 2.0] * 10)) == pytest.approx(0.0, abs=0.01)
    assert st.ks_statistic(ref, np.array([2.0] * 20)) == pytest.approx(0.5, abs=0.01)
    assert st.ks_statistic(ref, np.array([3.0] * 20)) == pytest.approx(1.0)


def test_total_variation_handles_categories_the_reference_never_saw() -> None:
    assert st.total_variation({"PNG": 1.0}, ["PNG"] * 9 + ["JPEG"]) == pytest.approx(0.1)
    assert st.total_variation({"PNG": 0.5, "GIF": 0.5}, ["PNG", "GIF"]) == pytest.approx(0.0)


def test_collision_rate_and_class_groups() -> None:
    assert st.collision_rate(np.array([3, 3, 3, 3])) == 1.0
    assert st.collision_rate(np.arange(100)) == 0.0
    groups = st.class_groups(np.full(100, 0.01), 10)
    assert np.bincount(groups).tolist() == [10] * 10  # equal mass → equal sizes for a balanced reference
    mass = np.full(10, 0.1)
    assert st.chi_square_groups(groups, mass, np.arange(100)) == pytest.approx(0.0)
    assert st.chi_square_groups(groups, mass, np.zeros(100, dtype=int)) > 100


def test_mmd_separates_shifted_embeddings() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(256, 8))
    gamma = st.rbf_gamma(ref)
    same = st.mmd2(ref, rng.normal(size=(200, 8)), gamma)
    shifted = st.mmd2(ref, rng.normal(size=(200, 8)) + 0.5, gamma)
    assert abs(same) < 0.01 < shifted


def test_encoded_arrays_round_trip() -> None:
    array = np.random.default_rng(0).normal(size=(7, 3))
    decoded = st.decode_array(json.loads(json.dumps(st.encode_array(array, "float32"))))
    np.testing.assert_allclose(decoded, array, rtol=1e-6)


def test_reference_is_json_and_complete(world: World) -> None:
    records = world.records(500, rng=np.random.default_rng(2))
    reference = json.loads(json.dumps(build_reference(records, None, CLASS_NAMES), allow_nan=False))
    expected = {"confidence", "log10_pixels", "foreground_fraction", "format", "had_alpha", "class_groups"}
    assert expected | {"class_concentration", "embedding"} == set(reference["signals"])
    assert len(reference["summary"]["class_frequencies"]) == NUM_CLASSES
    assert sum(reference["summary"]["confidence_histogram"]["counts"]) == 500
    assert set(make_signals(reference)) == set(reference["signals"])
    stripped = [type(r)(r.class_index, r.confidence, r.entropy, r.facts) for r in records]  # no embeddings
    assert "embedding" not in build_reference(stripped, None, CLASS_NAMES)["signals"]


def test_unknown_reference_format_or_signal_is_refused(world: World) -> None:
    reference = build_reference(world.records(50, rng=np.random.default_rng(3)), None, CLASS_NAMES)
    with pytest.raises(ValueError, match="format"):
        make_signals({**reference, "format": 99})
    with pytest.raises(ValueError, match="unknown kind"):
        make_signals({**reference, "signals": {"x": {"kind": "psi", "field": "confidence"}}})


def test_calibration_controls_the_held_out_false_alarm_rate(calibrated: dict) -> None:
    calibration = calibrated["calibration"]
    assert calibration["held_out_false_alarm_rate"][str(WINDOW)] <= ALPHA
    # thresholds over all the records are at least as lenient in-sample as across folds
    assert calibration["in_sample_false_alarm_rate"][str(WINDOW)] <= ALPHA
    # min-p is never more conservative than Bonferroni over the 8 signals
    assert calibration["per_signal_level"][str(WINDOW)] >= ALPHA / len(calibrated["signals"]) * 0.5
    assert set(calibration["thresholds"][str(WINDOW)]) == set(calibrated["signals"])


def test_cross_fitting_pays_for_the_difference_between_pools() -> None:
    """Two pools whose scores differ a little (as two samples of real traffic do): thresholds set at alpha on one
    alarm more often on the other, so the cross-fitted level must be stricter than the in-sample one."""
    rng = np.random.default_rng(0)
    first = {"a": rng.normal(0.0, 1.0, 4000), "b": rng.normal(0.0, 1.0, 4000)}
    second = {"a": rng.normal(0.3, 1.0, 4000), "b": rng.normal(0.0, 1.2, 4000)}
    level, held_out = cross_fitted_level([first, second], ALPHA, {})
    assert held_out <= ALPHA
    assert false_alarm_rate(second, _thresholds_at(first, ALPHA / 2, {})) > ALPHA  # in-sample levels would not do
    assert level < ALPHA / 2


def test_in_distribution_windows_rarely_alarm(world: World, calibrated: dict) -> None:
    """500 fresh in-distribution windows: alarms ~ Binomial(500, alpha) if the thresholds were exact (mean 5).

    Thresholds estimated from 2000 windows at a per-signal level of ~0.25% carry sampling error of their own,
    so the bound is 3 alpha (P(Binomial(500, 0.01) > 15) < 1e-4; the rest is room for estimation error).
    """
    rng = np.random.default_rng(7)
    rate = alarm_rate(
        lambda: DriftMonitor(calibrated, window=WINDOW), (world.records(WINDOW, rng=rng) for _ in range(500))
    )
    print(f"false-alarm rate over 500 in-distribution windows: {rate:.3f} (alpha {ALPHA})")
    assert rate <= 3 * ALPHA


@pytest.mark.parametrize(
    ("shift", "signal", "max_delay"),
    [
        ("low_confidence", "confidence", 120),
        ("class_collapse", "class_concentration", 60),
        ("embedding", "embedding", 120),
        ("photos", "format", 40),
    ],
)
def test_shifted_stream_alarms_and_delay_is_measured(
    world: World, calibrated: dict, shift: str, signal: str, max_delay: int
) -> None:
    """A full in-distribution window, then a shifted stream: requests until the first alarm, and who raised it."""
    rng = np.random.default_rng(11)
    monitor = DriftMonitor(calibrated, window=WINDOW)
    monitor.extend(world.records(WINDOW, rng=rng))
    assert monitor.report()["verdict"] == "ok"
    delay = detection_delay(monitor, world.records(WINDOW, shift, rng=rng), limit=WINDOW)
    print(f"detection delay for {shift}: {delay} requests")
    assert delay is not None and delay <= max_delay
    for _ in range(WINDOW):  # once the window is all shifted, the responsible signal must be among the alarms
        monitor.add(world.records(1, shift, rng=rng)[0])
    assert monitor.report()["signals"][signal]["verdict"] == "drift"


def test_monitor_fills_before_judging_and_keeps_the_last_window(world: World, calibrated: dict) -> None:
    monitor = DriftMonitor(calibrated, window=10)
    monitor.extend(world.records(5, rng=np.random.default_rng(4)))
    report = monitor.report()
    assert (report["verdict"], report["filled"], report["alarm"]) == ("filling", 5, False)
    monitor.extend(world.records(20, rng=np.random.default_rng(5)))
    report = monitor.report()
    assert (report["filled"], report["requests_seen"]) == (10, 25)
    assert report["verdict"] == "uncalibrated"  # thresholds exist for 200-request windows only
    assert report["signals"]["confidence"]["score"] is not None


def test_signal_without_data_is_unavailable(world: World, calibrated: dict) -> None:
    monitor = DriftMonitor(calibrated, window=WINDOW)
    for r in world.records(WINDOW, rng=np.random.default_rng(6)):
        monitor.add(type(r)(r.class_index, r.confidence, r.entropy, r.facts))  # model without embedding output
    report = monitor.report()
    assert report["signals"]["embedding"]["verdict"] == "unavailable"
    assert report["verdict"] in ("ok", "drift")


def test_concurrent_adds_are_all_counted(world: World, calibrated: dict) -> None:
    monitor = DriftMonitor(calibrated, window=WINDOW)
    records = world.records(100, rng=np.random.default_rng(8))

    def feed() -> None:
        for r in records:
            monitor.add(r)
            monitor.report()

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = monitor.report()
    assert (report["requests_seen"], report["filled"]) == (400, WINDOW)


def test_prometheus_gauges(world: World, calibrated: dict) -> None:
    registry = CollectorRegistry(auto_describe=True)
    monitor = DriftMonitor(calibrated, window=WINDOW)
    registry.register(DriftCollector(monitor))
    text = generate_latest(registry).decode()
    assert "pokedex_drift_alarm 0.0" in text and "pokedex_drift_window_fill 0.0" in text
    monitor.extend(world.records(WINDOW, "photos", rng=np.random.default_rng(9)))
    text = generate_latest(registry).decode()
    assert "pokedex_drift_alarm 1.0" in text and "pokedex_drift_window_fill 1.0" in text
    assert 'pokedex_drift_score{signal="format"} 1.0' in text
    assert 'pokedex_drift_threshold{signal="confidence"}' in text
