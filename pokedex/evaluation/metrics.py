"""Evaluation arithmetic on collected probabilities: no I/O, no plotting, easy to test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = actual class, columns = predicted class: the one confusion matrix of the project."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its count (recall per class on the diagonal); empty rows stay zero."""
    matrix = matrix.astype(np.float32)
    return matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)


@dataclass
class Evaluation:
    probs: np.ndarray  # (N, C) float
    labels: np.ndarray  # (N,) int

    @property
    def num_classes(self) -> int:
        return self.probs.shape[1]

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def top_k(self, k: int) -> float:
        k = min(k, self.num_classes)
        top = np.argpartition(-self.probs, k - 1, axis=1)[:, :k]
        return float((top == self.labels[:, None]).any(axis=1).mean())

    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.labels, self.predictions, self.num_classes)

    def per_class_accuracy(self) -> np.ndarray:
        """NaN for classes absent from the evaluated split."""
        matrix = self.confusion()
        support = matrix.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(support > 0, np.diag(matrix) / support, np.nan)

    def macro_f1(self) -> float:
        """Mean F1 over the classes that occur in the labels or the predictions."""
        matrix = self.confusion()
        tp = np.diag(matrix).astype(float)
        fp, fn = matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp
        present = (tp + fp + fn) > 0
        denom = 2 * tp + fp + fn
        f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
        return float(f1[present].mean()) if present.any() else 0.0

    def expected_calibration_error(self, bins: int = 15) -> float:
        confidence = self.probs.max(axis=1)
        correct = (self.predictions == self.labels).astype(float)
        edges = np.linspace(0.0, 1.0, bins + 1)
        which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
        ece = 0.0
        for b in range(bins):
            mask = which == b
            if mask.any():
                ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
        return float(ece)

    def worst_mistakes(self, k: int) -> np.ndarray:
        """Indices of wrong predictions, most confident first."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        return wrong[np.argsort(-self.probs[wrong].max(axis=1))][:k]

    def summary(self) -> dict[str, float]:
        return {
            "top1": self.top_k(1),
            "top5": self.top_k(5),
            "macro_f1": self.macro_f1(),
            "ece": self.expected_calibration_error(),
            "samples": len(self.labels),
            "classes": int(self.num_classes),
        }
