"""Drift thresholds from data: how large does each score get on windows that are NOT drifted?

Textbook p-values do not hold for our signals (ties, near-duplicate frames, a reference that is a sample), and
eight signals tested at once would alarm eight times as often as one. So thresholds are set empirically: draw
many windows from held-out in-distribution records (the model's own test split, not the validation split the
reference came from, so that the ordinary split-to-split difference is part of "normal"), score every signal on
every window, and pick per-signal quantiles at a common level ``q`` chosen so that the share of windows where
*any* signal exceeds its threshold is at most ``alpha``. That is the min-p (Westfall-Young) correction: it
controls the overall false-alarm rate like Bonferroni would, but uses the correlation between the signals
(confidence, classes and embedding move together) instead of paying for it.

Quantiles estimated on one pool of records are optimistic for the next pool: on the sprite model, thresholds
set for 1% on one half of the test split alarmed on 2.3% of the windows of the other half. So the common level
is **cross-fitted**: the records are split in two folds, thresholds set on one fold are scored on the windows of
the other, and ``q`` is the largest level whose *held-out* false-alarm rate (averaged over both directions) is
at most ``alpha``. The shipped thresholds are that level's quantiles over all the records.

``min_effect`` floors keep degenerate signals sane: if every sprite is a 128×128 PNG, the calibrated format
threshold is 0 and one JPEG in 200 requests would alarm; a floor of 0.05 asks for 5% of the traffic to change.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
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


def _largest_level(rate_at: Callable[[float], float], alpha: float, steps: int = 40) -> float:
    """The largest per-signal level q in [0, alpha] with ``rate_at(q) <= alpha`` (bisection; the rate grows with q)."""
    low, high = 0.0, alpha  # q = alpha / k (Bonferroni) is always feasible in expectation; q = alpha is the cap
    for _ in range(steps):
        mid = (low + high) / 2
        if rate_at(mid) <= alpha:
            low = mid
        else:
            high = mid
    return low


def cross_fitted_level(
    folds: Sequence[Mapping[str, np.ndarray]], alpha: float, floors: Mapping[str, float], *, steps: int = 40
) -> tuple[float, float]:
    """(q, held-out false-alarm rate at q): thresholds from each fold's windows, scored on the other fold's."""

    def held_out(q: float) -> float:
        first, second = folds
        return (
            false_alarm_rate(second, _thresholds_at(first, q, floors))
            + false_alarm_rate(first, _thresholds_at(second, q, floors))
        ) / 2

    level = _largest_level(held_out, alpha, steps)
    return level, held_out(level)


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
    the smallest score worth an alarm. Scoring a window costs about a millisecond with the embedding signal, and
    ``n_windows`` are scored three times (all records, each fold), so the defaults take ~15 s at export time.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    signals = make_signals(reference)
    columns = columns_of(records, embeddings)
    effects = {**DEFAULT_MIN_EFFECT, **(min_effect or {})}
    floors = {name: effects.get(name, effects.get(s.kind, 0.0)) for name, s in signals.items()}
    rng = np.random.default_rng(seed)
    fold_rows = np.array_split(rng.permutation(len(records)), 2)
    thresholds, levels, rates, held_out = {}, {}, {}, {}
    for size in window_sizes:
        scores = score_windows(signals, columns, window_indices(len(records), size, n_windows, rng))
        folds = [
            score_windows(signals, columns, rows[window_indices(len(rows), size, n_windows, rng)]) for rows in fold_rows
        ]
        level, held_out[str(size)] = cross_fitted_level(folds, alpha, floors)
        thresholds[str(size)], levels[str(size)] = _thresholds_at(scores, level, floors), level
        rates[str(size)] = false_alarm_rate(scores, thresholds[str(size)])
    calibrated = copy.deepcopy(dict(reference))
    calibrated["calibration"] = {
        "method": "per-signal empirical quantiles at a common level, min-p corrected to the overall alpha, "
        "the level cross-fitted on two folds of the records",
        "alpha": alpha,
        "n_windows": n_windows,
        "records": len(records),
        "seed": seed,
        "min_effect": floors,
        "thresholds": thresholds,
        "per_signal_level": levels,
        "in_sample_false_alarm_rate": rates,
        "held_out_false_alarm_rate": held_out,
    }
    return calibrated
