"""Two-sample statistics for drift detection: a window of recent requests against a stored reference.

Pure numpy, no state, no I/O: every function takes the reference summary and the window and returns one number
where larger means "more different". None of them returns a p-value on purpose: the textbook p-values assume
i.i.d. samples and continuous data, and ours have ties (sprites are all 128×128 PNGs), near-duplicates (frames of
one animation) and a reference that is itself a sample. Thresholds are calibrated empirically instead, on windows
drawn from held-out in-distribution data (see ``pokedex.drift.calibration``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def summary_quantiles(values: np.ndarray, points: int = 201) -> np.ndarray:
    """Evenly spaced quantiles: a fixed-size stand-in for the reference sample (exact values, ties kept)."""
    levels = np.linspace(0.0, 1.0, points)
    return np.quantile(np.asarray(values, dtype=np.float64), levels, method="inverted_cdf")


def ks_statistic(reference_quantiles: np.ndarray, window: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance sup|F_window - F_reference| (both empirical, right-continuous).

    The supremum of two step functions is reached at one of their jump points, so evaluating both CDFs at the
    pooled points is exact, ties included (a test on pre-binned data would depend on the bin edges).
    """
    ref = np.sort(np.asarray(reference_quantiles, dtype=np.float64))
    win = np.sort(np.asarray(window, dtype=np.float64))
    if ref.size == 0 or win.size == 0:
        return float("nan")
    points = np.concatenate([ref, win])
    f_ref = np.searchsorted(ref, points, side="right") / ref.size
    f_win = np.searchsorted(win, points, side="right") / win.size
    return float(np.abs(f_ref - f_win).max())


def total_variation(reference: Mapping[str, float], window: Sequence[str]) -> float:
    """Half the L1 distance between category frequencies: the share of traffic that would have to change kind.

    Chosen over chi-square for a handful of categories (image format, alpha yes/no) because a category the
    reference never saw (a first JPEG among sprites) makes chi-square infinite, while TVD stays interpretable.
    """
    if not window:
        return float("nan")
    names, counts = np.unique(np.asarray(window, dtype=str), return_counts=True)
    observed = dict(zip(names.tolist(), (counts / counts.sum()).tolist(), strict=True))
    keys = set(reference) | set(observed)
    return 0.5 * float(sum(abs(observed.get(k, 0.0) - float(reference.get(k, 0.0))) for k in keys))


def class_groups(frequencies: np.ndarray, groups: int) -> np.ndarray:
    """Group index per class: classes sorted by reference frequency, cut into ``groups`` groups of equal mass.

    With 649 classes and 200 requests per window most per-class expected counts are far below 5, where
    chi-square is meaningless; a few equal-mass groups give every cell an expected count of window/groups.
    """
    freq = np.asarray(frequencies, dtype=np.float64)
    freq = freq / freq.sum() if freq.sum() > 0 else np.full_like(freq, 1.0 / freq.size)
    order = np.argsort(-freq, kind="stable")
    cumulative = np.cumsum(freq[order]) - freq[order] / 2  # a class belongs where its mass's midpoint falls
    assignment = np.empty(freq.size, dtype=np.int64)
    assignment[order] = np.minimum((cumulative * groups).astype(np.int64), groups - 1)
    return assignment


def chi_square_groups(group_of_class: np.ndarray, group_mass: np.ndarray, window_classes: np.ndarray) -> float:
    """Pearson chi-square of the window's predicted classes over the reference's equal-mass class groups."""
    window_classes = np.asarray(window_classes, dtype=np.int64)
    if window_classes.size == 0:
        return float("nan")
    groups = np.asarray(group_of_class, dtype=np.int64)
    known = window_classes[(window_classes >= 0) & (window_classes < groups.size)]
    observed = np.bincount(groups[known], minlength=len(group_mass)).astype(np.float64)
    expected = np.maximum(np.asarray(group_mass, dtype=np.float64), 1e-6) * window_classes.size
    return float(((observed - expected) ** 2 / expected).sum())


def collision_rate(window_classes: np.ndarray) -> float:
    """Probability that two different requests of the window got the same predicted class (unbiased).

    Off-domain inputs (photos, drawings, noise) make a classifier fall back on a few "attractor" classes, and a
    viral Pokémon makes everyone upload the same one; both raise this, while the class-group test cannot see a
    collapse onto 20 classes that happen to be spread over all groups.
    """
    counts = np.bincount(np.asarray(window_classes, dtype=np.int64)).astype(np.float64)
    n = counts.sum()
    if n < 2:
        return float("nan")
    return float((counts * (counts - 1)).sum() / (n * (n - 1)))


def rbf_gamma(sample: np.ndarray) -> float:
    """Median heuristic: 1 / median squared distance between sample points (the kernel's natural scale)."""
    sq = _sq_distances(sample, sample)
    off_diagonal = sq[~np.eye(len(sample), dtype=bool)]
    median = float(np.median(off_diagonal)) if off_diagonal.size else 1.0
    return 1.0 / median if median > 0 else 1.0


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(sq, 0.0)


def mean_off_diagonal(kernel: np.ndarray) -> float:
    n = kernel.shape[0]
    return float((kernel.sum() - np.trace(kernel)) / (n * (n - 1))) if n > 1 else float("nan")


def mmd2(reference: np.ndarray, window: np.ndarray, gamma: float, reference_term: float | None = None) -> float:
    """Unbiased squared Maximum Mean Discrepancy with an RBF kernel (Gretton et al., 2012).

    Compares whole distributions of embeddings, not just their means, so a new kind of image that lands in
    an unusual region of feature space shows up even when the average embedding barely moves.
    ``reference_term`` (mean off-diagonal reference kernel) is constant per reference: pass it to skip the work.
    """
    if len(window) < 2:
        return float("nan")
    k_ww = np.exp(-gamma * _sq_distances(window, window))
    k_wr = np.exp(-gamma * _sq_distances(window, reference))
    if reference_term is None:
        reference_term = mean_off_diagonal(np.exp(-gamma * _sq_distances(reference, reference)))
    return mean_off_diagonal(k_ww) + reference_term - 2.0 * float(k_wr.mean())


def pca_projection(embeddings: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(center, D×d matrix) of the top principal directions: MMD in 1,000 dimensions on 200 points is mostly noise.

    PCA rather than a random projection: it keeps the directions the reference actually varies in, and
    Rabanser et al. (2019, "Failing Loudly") found the two comparable for shift detection.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    center = x.mean(0)
    _, _, vt = np.linalg.svd(x - center, full_matrices=False)
    return center, vt[: min(dims, vt.shape[0])].T


def encode_array(array: np.ndarray, dtype: str = "float16") -> dict[str, Any]:
    """A JSON-friendly array (base64 of little-endian bytes): a 1024×32 matrix is 88 kB, not 400 kB of digits."""
    data = np.ascontiguousarray(np.asarray(array).astype(np.dtype(dtype).newbyteorder("<")))
    return {"dtype": dtype, "shape": list(data.shape), "base64": base64.b64encode(data.tobytes()).decode("ascii")}


def decode_array(encoded: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(str(encoded["dtype"])).newbyteorder("<")
    raw = base64.b64decode(str(encoded["base64"]))
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(encoded["shape"])).astype(np.float64)
