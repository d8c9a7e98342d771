"""Weighted fusion of text and image probabilities: pure functions, no I/O.

``text_weight`` w: 1 = text alone, 0 = image alone. A row whose image probabilities are missing
(NaN) is decided by the text alone, and vice versa.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

FUSION_METHODS = ("geometric", "arithmetic")
_EPSILON = 1e-7  # floor on probabilities so a single zero cannot veto a class in the geometric mean


def fuse_probabilities(
    text_proba: np.ndarray | None, image_proba: np.ndarray | None, text_weight: float, method: str = "geometric"
) -> np.ndarray:
    """Weighted arithmetic or geometric mean of two (n, k) probability arrays, rows summing to 1."""
    if method not in FUSION_METHODS:
        raise ValueError(f"unknown fusion method {method!r}; choose one of {FUSION_METHODS}")
    if not 0.0 <= text_weight <= 1.0:
        raise ValueError(f"text_weight must lie in [0, 1], got {text_weight}")
    if text_proba is None and image_proba is None:
        raise ValueError("at least one modality is needed")
    if text_proba is None:
        return np.asarray(image_proba, dtype=np.float64)
    if image_proba is None:
        return np.asarray(text_proba, dtype=np.float64)
    text = np.asarray(text_proba, dtype=np.float64)
    image = np.asarray(image_proba, dtype=np.float64)
    if text.shape != image.shape:
        raise ValueError(f"shape mismatch: text {text.shape} vs image {image.shape}")
    text_missing = np.isnan(text).any(axis=1)
    image_missing = np.isnan(image).any(axis=1)
    if method == "arithmetic":
        fused = text_weight * np.nan_to_num(text) + (1 - text_weight) * np.nan_to_num(image)
    else:
        log_text = np.log(np.clip(np.nan_to_num(text), _EPSILON, 1.0))
        log_image = np.log(np.clip(np.nan_to_num(image), _EPSILON, 1.0))
        mixed = text_weight * log_text + (1 - text_weight) * log_image
        fused = np.exp(mixed - mixed.max(axis=1, keepdims=True))
    fused = fused / fused.sum(axis=1, keepdims=True)
    fused[image_missing] = text[image_missing]
    fused[text_missing] = image[text_missing]
    return fused


def learn_text_weight(
    text_proba: np.ndarray, image_proba: np.ndarray, label_indices: np.ndarray, method: str, grid_step: float = 0.01
) -> tuple[float, float]:
    """The text weight maximising weighted F1 on validation rows that have both modalities.

    Returns (weight, smoothed weighted F1 at that weight). Ties go to the weight closest to 0.5, so a flat
    optimum does not push the fusion to one extreme.
    """
    both = ~(np.isnan(text_proba).any(axis=1) | np.isnan(image_proba).any(axis=1))
    if both.sum() == 0:
        raise ValueError("no validation row has both modalities; cannot learn a text weight")
    grid = np.round(np.arange(0.0, 1.0 + grid_step / 2, grid_step), 6)
    raw_scores = []
    for weight in grid:
        predicted = fuse_probabilities(text_proba[both], image_proba[both], float(weight), method).argmax(axis=1)
        raw_scores.append(f1_score(label_indices[both], predicted, average="weighted", zero_division=0))
    # Smoothed over +-0.05: with a few hundred validation rows the raw curve is jagged, and a
    # lone spike is noise, not a better weight.
    window = max(1, round(0.05 / grid_step))
    padded = np.pad(np.asarray(raw_scores), window, mode="edge")
    scores = np.convolve(padded, np.ones(2 * window + 1) / (2 * window + 1), mode="valid")
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    chosen = best[np.argmin(np.abs(grid[best] - 0.5))]
    return float(grid[chosen]), float(scores[chosen])
