"""Write evaluation artifacts: per-class CSV, confusion-matrix PNG, worst-mistakes grid PNG (atomically)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt
import numpy as np

from pokedex.evaluation.metrics import Evaluation, row_normalised
from pokedex.io import write_bytes_atomic, write_text_atomic


def _save_figure(fig: plt.Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


def write_per_class_csv(evaluation: Evaluation, class_names: list[str], path: Path) -> Path:
    accuracy = evaluation.per_class_accuracy()
    support = np.bincount(evaluation.labels, minlength=evaluation.num_classes)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["index", "class", "support", "accuracy"])
    for i, name in enumerate(class_names):
        writer.writerow([i, name, int(support[i]), "" if np.isnan(accuracy[i]) else f"{accuracy[i]:.4f}"])
    return write_text_atomic(path, buffer.getvalue())


def write_confusion_csv(evaluation: Evaluation, class_names: list[str], path: Path) -> Path:
    """Long format (actual, predicted) rows: what `dvc plots` renders as a confusion matrix."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["actual", "predicted"])
    for actual, predicted in zip(evaluation.labels, evaluation.predictions, strict=True):
        writer.writerow([class_names[actual], class_names[predicted]])
    return write_text_atomic(path, buffer.getvalue())


def plot_confusion(evaluation: Evaluation, class_names: list[str], path: Path) -> Path:
    matrix = row_normalised(evaluation.confusion())
    n = len(class_names)
    size = min(24.0, 4.0 + n * 0.25)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix (row-normalised), top-1 {evaluation.top_k(1):.3f}")
    if n <= 40:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
    return _save_figure(fig, path)


def plot_mistakes(
    images: np.ndarray, evaluation: Evaluation, indices: np.ndarray, class_names: list[str], path: Path
) -> Path:
    """Grid of the most confident mistakes: image, true name, predicted name and probability."""
    count = max(1, len(indices))
    cols = min(5, count)
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 2.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices, strict=False):
        rgba = images[i].transpose(1, 2, 0)
        ax.imshow(rgba, interpolation="nearest")
        predicted = int(evaluation.predictions[i])
        ax.set_title(
            f"true {class_names[evaluation.labels[i]]}\npred {class_names[predicted]} "
            f"{evaluation.probs[i, predicted]:.2f}",
            fontsize=8,
        )
    if len(indices) == 0:
        axes.flat[0].set_title("no mistakes")
    return _save_figure(fig, path)
