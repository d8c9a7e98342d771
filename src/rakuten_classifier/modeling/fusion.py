"""Fusion of text and image probabilities as a stored fusion.json describes it: pure functions, no I/O.

What serving needs and nothing more; the combiners are fitted in modeling/fusion_fitting.py.
``text_weight`` w: 1 = text alone, 0 = image alone. A row whose image probabilities are missing
(NaN) is decided by the text alone, and vice versa.
"""

from __future__ import annotations

import numpy as np

from .calibration import softmax

FUSION_METHODS = ("geometric", "arithmetic")
STACKED = "stacked"
PER_CLASS = "per_class"
COMBINERS = (*FUSION_METHODS, PER_CLASS, STACKED)
_EPSILON = 1e-7  # floor on probabilities so a single zero cannot veto a class in the geometric mean


def log_probabilities(proba: np.ndarray) -> np.ndarray:
    """log p with p floored at 1e-7 (float64): the space every geometric combiner works in."""
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), _EPSILON, 1.0))


def has_both(text_proba: np.ndarray, image_proba: np.ndarray) -> np.ndarray:
    """Rows where neither modality is missing (NaN)."""
    return ~(np.isnan(text_proba).any(axis=1) | np.isnan(image_proba).any(axis=1))


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
        # A row whose weighted modality is missing sums to 0 here (w = 0 or 1): it is replaced below.
        totals = fused.sum(axis=1, keepdims=True)
        fused = np.divide(fused, totals, out=np.zeros_like(fused), where=totals > 0)
    else:
        text_log, image_log = log_probabilities(np.nan_to_num(text)), log_probabilities(np.nan_to_num(image))
        fused = softmax(text_weight * text_log + (1 - text_weight) * image_log)
    fused[image_missing] = text[image_missing]
    fused[text_missing] = image[text_missing]
    return fused


def stack_features(text_proba: np.ndarray, image_proba: np.ndarray) -> np.ndarray:
    """The stacker's input: both models' log-probabilities side by side, (n, 2k)."""
    return np.hstack([log_probabilities(text_proba), log_probabilities(image_proba)])


def stacked_probabilities(text_proba: np.ndarray, image_proba: np.ndarray, stacker: dict) -> np.ndarray:
    """The stacked logistic regression's probabilities, for rows that have both modalities."""
    coef, intercept = np.asarray(stacker["coef"]), np.asarray(stacker["intercept"])
    return softmax(stack_features(text_proba, image_proba) @ coef.T + intercept)


def per_class_probabilities(text_proba: np.ndarray, image_proba: np.ndarray, weights: dict) -> np.ndarray:
    """Probabilities of the per-class weighted geometric mean, for rows that have both modalities."""
    a, b, d = (np.asarray(weights[key]) for key in ("a", "b", "d"))
    return softmax(a * log_probabilities(text_proba) + b * log_probabilities(image_proba) + d)


def _blend_logs(fused: np.ndarray, text: np.ndarray, image: np.ndarray, text_weight: float) -> np.ndarray:
    """A learned combiner moved towards one model by a text weight, in log space.

    0.5 is the combiner itself; 1 is the text model alone, 0 the image model alone, and the weights
    in between interpolate: log p = (1 - |2w - 1|) log fused + max(0, 2w - 1) log text + max(0, 1 - 2w) log image.
    """
    return softmax(
        (1 - abs(2 * text_weight - 1)) * log_probabilities(fused)
        + max(0.0, 2 * text_weight - 1) * log_probabilities(text)
        + max(0.0, 1 - 2 * text_weight) * log_probabilities(image)
    )


def fuse(
    text_proba: np.ndarray | None, image_proba: np.ndarray | None, config: dict, text_weight: float | None = None
) -> np.ndarray:
    """The fusion a fusion.json describes (``config``), for (n, k) arrays with NaN rows for a missing modality.

    ``text_weight`` is a request's override (None: the stored one). For the weighted means it is the
    weight itself. A learned combiner (per-class weights or a stacker) has no single weight: its stored
    text_weight is 0.5, and an override moves the answer from the combiner (0.5) towards the text
    model alone (1) or the image model alone (0), interpolating in log space. A row with one modality
    is decided by that modality.
    """
    method = config["method"]
    if method not in COMBINERS:
        raise ValueError(f"unknown fusion method {method!r}; choose one of {COMBINERS}")
    weight = config["text_weight"] if text_weight is None else float(text_weight)
    if method in FUSION_METHODS:
        return fuse_probabilities(text_proba, image_proba, weight, method)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"text_weight must lie in [0, 1], got {weight}")
    fused = fuse_probabilities(text_proba, image_proba, 0.5, "geometric")  # rows with one modality: that one
    if text_proba is None or image_proba is None:
        return fused
    both = has_both(text_proba, image_proba)
    if not both.any():
        return fused
    text, image = text_proba[both], image_proba[both]
    if method == STACKED:
        learned = stacked_probabilities(text, image, config["stacker"])
    else:
        learned = per_class_probabilities(text, image, config["per_class"])
    fused[both] = learned if weight == 0.5 else _blend_logs(learned, text, image, weight)
    return fused
