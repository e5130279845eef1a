"""Drift thresholds from data: how large does each score get on windows that are NOT drifted?

Textbook p-values do not hold for our signals (ties, near-duplicate frames, a reference that is a sample), and
eight signals tested at once would alarm eight times as often as one. So thresholds are set empirically: draw
many windows from held-out in-distribution records (the model's own test split, not the validation split the
reference came from, so that the ordinary split-to-split difference is part of "normal"), score every signal on
every window, and pick per-signal quantiles at a common level ``q`` chosen so that the share of windows where
*any* signal exceeds its threshold is at most ``alpha``. That is the min-p (Westfall-Young) correction: it
controls the overall false-alarm rate like Bonferroni would, but uses the correlation between the signals
(confidence, classes and embedding move together) instead of paying for it.

``min_effect`` floors keep degenerate signals sane: if every sprite is a 128×128 PNG, the calibrated format
threshold is 0 and one JPEG in 200 requests would alarm; a floor of 0.05 asks for 5% of the traffic to change.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pokedex.drift.records import PredictionRecord
from pokedex.drift.signals import Signal, columns_of, make_signals

DEFAULT_MIN_EFFECT = {"ks": 0.05, "tvd": 0.05}


def window_indices(pool: int, window: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` windows of ``window`` distinct records each (with replacement only if the pool is too small).

    Sampling with replacement would put the same image twice into a window, which inflates the class
    concentration statistic and would make its threshold too lenient.
    """
    if pool >= window:
        return np.stack([rng.choice(pool, size=window, replace=False) for _ in range(count)])
    return rng.integers(0, pool, size=(count, window))


def score_windows(
    signals: Mapping[str, Signal], columns: Mapping[str, np.ndarray], indices: np.ndarray
) -> dict[str, np.ndarray]:
    """Score every signal on every window (rows of ``indices``); signals without data are left out."""
    prepared = {name: s.prepare(columns[s.field]) for name, s in signals.items() if s.field in columns}
    return {
        name: np.array([signals[name].score(column[rows]) for rows in indices], dtype=np.float64)
        for name, column in prepared.items()
    }


def _thresholds_at(scores: Mapping[str, np.ndarray], level: float, floors: Mapping[str, float]) -> dict[str, float]:
    return {
        name: max(float(np.quantile(values, 1.0 - level, method="higher")), floors.get(name, 0.0))
        for name, values in scores.items()
    }


def false_alarm_rate(scores: Mapping[str, np.ndarray], thresholds: Mapping[str, float]) -> float:
    """Share of windows where at least one signal exceeds its threshold (the alarm rule of ``DriftMonitor``)."""
    alarms = np.zeros(len(next(iter(scores.values()))), dtype=bool)
    for name, values in scores.items():
        alarms |= values > thresholds[name]
    return float(alarms.mean())


def joint_thresholds(
    scores: Mapping[str, np.ndarray], alpha: float, floors: Mapping[str, float], *, steps: int = 40
) -> tuple[dict[str, float], float, float]:
    """(thresholds, per-signal level q, achieved false-alarm rate): the largest q with overall rate <= alpha."""
    if not scores:
        return {}, 0.0, 0.0
    low, high = 0.0, alpha  # q = alpha / k (Bonferroni) is always feasible in expectation; q = alpha is the cap
    for _ in range(steps):
        mid = (low + high) / 2
        if false_alarm_rate(scores, _thresholds_at(scores, mid, floors)) <= alpha:
            low = mid
        else:
            high = mid
    thresholds = _thresholds_at(scores, low, floors)
    return thresholds, low, false_alarm_rate(scores, thresholds)


def calibrate(
    reference: Mapping[str, Any],
    records: Sequence[PredictionRecord],
    embeddings: np.ndarray | None = None,
    *,
    window_sizes: Sequence[int] = (200,),
    alpha: float = 0.01,
    n_windows: int = 2000,
    min_effect: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """A copy of ``reference`` with thresholds for each window size, from held-out in-distribution ``records``.

    ``alpha`` is the false-alarm probability of one full window; ``min_effect`` maps a signal kind (or name) to
    the smallest score worth an alarm. Scoring ``n_windows`` windows costs about a millisecond each with the
    embedding signal, so the defaults take a few seconds at export time.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    signals = make_signals(reference)
    columns = columns_of(records, embeddings)
    effects = {**DEFAULT_MIN_EFFECT, **(min_effect or {})}
    floors = {name: effects.get(name, effects.get(s.kind, 0.0)) for name, s in signals.items()}
    rng = np.random.default_rng(seed)
    thresholds, levels, rates = {}, {}, {}
    for size in window_sizes:
        scores = score_windows(signals, columns, window_indices(len(records), size, n_windows, rng))
        thresholds[str(size)], levels[str(size)], rates[str(size)] = joint_thresholds(scores, alpha, floors)
    calibrated = copy.deepcopy(dict(reference))
    calibrated["calibration"] = {
        "method": "per-signal empirical quantiles at a common level, min-p corrected to the overall alpha",
        "alpha": alpha,
        "n_windows": n_windows,
        "records": len(records),
        "seed": seed,
        "min_effect": floors,
        "thresholds": thresholds,
        "per_signal_level": levels,
        "in_sample_false_alarm_rate": rates,
    }
    return calibrated
