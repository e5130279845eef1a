"""The drift reference: the validation split's predictions summarised into a JSON-serialisable dict.

The export step builds it (``build_reference``), calibrates it (``pokedex.drift.calibration``) and stores it in
the ONNX sidecar under ``SIDECAR_KEY``: confidence and input-fact quantiles, category frequencies, class groups
and a PCA sample of penultimate embeddings. The service and the offline report read it back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pokedex.drift import stats as st
from pokedex.drift.records import PredictionRecord
from pokedex.drift.signals import REFERENCE_FORMAT, columns_of

SIDECAR_KEY = "drift_reference"  # where the reference lives in the ONNX sidecar JSON
NUMERIC_FIELDS = ("confidence", "log10_pixels", "foreground_fraction")
CATEGORY_FIELDS = ("format", "had_alpha")
CONFIDENCE_EDGES = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 21))


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
    signal is left out. The result is uncalibrated; pass it through ``pokedex.drift.calibration.calibrate``.
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
