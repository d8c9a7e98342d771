"""Scores and reports: weighted F1 (the challenge metric), macro F1, accuracy, log-loss, confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from ..categories import CATEGORY_CODES
from .calibration import log_softmax


def weighted_f1(label_indices: np.ndarray, predicted_indices: np.ndarray) -> float:
    """sklearn's ``f1_score(average="weighted", zero_division=0)`` of class indices, with numpy alone.

    The fusion's weight search scores 101 weights per fit: sklearn's input validation made that
    7.9 of the fusion step's 15 s on the sample (cProfile), this takes milliseconds.
    """
    labels = np.asarray(label_indices, dtype=np.int64)
    predicted = np.asarray(predicted_indices, dtype=np.int64)
    if len(labels) == 0:
        return 0.0
    size = int(max(labels.max(), predicted.max())) + 1
    support = np.bincount(labels, minlength=size)
    # Per class 2 tp / (2 tp + fp + fn), where 2 tp + fp + fn = support + predicted count.
    denominator = support + np.bincount(predicted, minlength=size)
    hits = 2.0 * np.bincount(labels[labels == predicted], minlength=size)
    per_class = np.divide(hits, denominator, out=np.zeros(size), where=denominator > 0)
    return float(per_class @ support / support.sum())


def log_loss(scores: np.ndarray, label_indices: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under softmax(scores / temperature), in float64."""
    labels = np.asarray(label_indices, dtype=np.int64)
    log_proba = log_softmax(np.asarray(scores, dtype=np.float64) / temperature)
    return float(-log_proba[np.arange(len(labels)), labels].mean())


def logit_scores(scores: np.ndarray, label_indices: np.ndarray, temperature: float = 1.0) -> dict[str, float]:
    """Weighted F1, accuracy and log-loss (at ``temperature``) of (n, 27) scores against class indices, and n."""
    labels = np.asarray(label_indices, dtype=np.int64)
    predicted = np.asarray(scores).argmax(1)
    return {
        "weighted_f1": weighted_f1(labels, predicted),
        "accuracy": float(np.mean(predicted == labels)),
        "log_loss": log_loss(scores, labels, temperature),
        "n": len(labels),
    }


def classification_scores(label_indices: np.ndarray, predicted_indices: np.ndarray) -> dict:
    """weighted_f1, macro_f1, accuracy and n for predictions given as class indices."""
    if len(label_indices) == 0:
        return {"weighted_f1": None, "macro_f1": None, "accuracy": None, "n": 0}
    return {
        "weighted_f1": round(weighted_f1(label_indices, predicted_indices), 4),
        "macro_f1": round(float(f1_score(label_indices, predicted_indices, average="macro", zero_division=0)), 4),
        "accuracy": round(float(accuracy_score(label_indices, predicted_indices)), 4),
        "n": len(label_indices),
    }


def report_text(label_indices: np.ndarray, predicted_indices: np.ndarray) -> str:
    """sklearn's per-category classification report, categories named by code."""
    present = sorted(set(label_indices) | set(predicted_indices))
    return classification_report(
        label_indices,
        predicted_indices,
        labels=present,
        target_names=[str(CATEGORY_CODES[i]) for i in present],
        zero_division=0,
        digits=3,
    )


def save_confusion_matrix(label_indices: np.ndarray, predicted_indices: np.ndarray, path: Path, title: str) -> Path:
    """A row-normalised confusion-matrix PNG over all 27 categories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = confusion_matrix(label_indices, predicted_indices, labels=range(len(CATEGORY_CODES))).astype(float)
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    figure, axes = plt.subplots(figsize=(10, 9))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    labels = [str(c) for c in CATEGORY_CODES]
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
