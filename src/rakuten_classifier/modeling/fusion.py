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


LogTerms = tuple[np.ndarray, np.ndarray, np.ndarray]  # text, image, constant: (n, k) each


def total(terms: LogTerms) -> np.ndarray:
    """The fused log-score: the sum of its terms."""
    text, image, constant = terms
    return text + image + constant


def _geometric_terms(log_text: np.ndarray, log_image: np.ndarray, text_weight: float) -> LogTerms:
    return text_weight * log_text, (1 - text_weight) * log_image, np.zeros_like(log_text)


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
        terms = _geometric_terms(
            log_probabilities(np.nan_to_num(text)), log_probabilities(np.nan_to_num(image)), text_weight
        )
        fused = softmax(total(terms))
    fused[image_missing] = text[image_missing]
    fused[text_missing] = image[text_missing]
    return fused


def stack_features(text_proba: np.ndarray, image_proba: np.ndarray) -> np.ndarray:
    """The stacker's input: both models' log-probabilities side by side, (n, 2k)."""
    return np.hstack([log_probabilities(text_proba), log_probabilities(image_proba)])


def log_terms(
    text_proba: np.ndarray, image_proba: np.ndarray, config: dict, text_weight: float | None = None
) -> LogTerms:
    """The fused log-score of a log-space combiner (geometric, per-class, stacked) as (text, image, constant)
    terms, (n, k) each, for rows that have both modalities: :func:`fuse` answers softmax(text + image + constant).

    Geometric mean: w log p_text and (1 - w) log p_image. Per-class weights: a log p_text, b log p_image
    and d. Stacker: the coefficients of each model's log-probabilities times them, and the intercept.
    A learned combiner moved by a text weight w != 0.5 (see :func:`fuse`) is, in log space,
    (1 - |2w - 1|) log fused + max(0, 2w - 1) log p_text + max(0, 1 - 2w) log p_image: the first part's
    text and image terms join theirs, its normaliser (and probability floor) goes to the constant.
    """
    method = config["method"]
    weight = config["text_weight"] if text_weight is None else float(text_weight)
    log_text, log_image = log_probabilities(text_proba), log_probabilities(image_proba)
    if method == "geometric":
        return _geometric_terms(log_text, log_image, weight)
    if method == STACKED:
        coef, intercept = np.asarray(config["stacker"]["coef"]), np.asarray(config["stacker"]["intercept"])
        k = log_text.shape[1]
        text, image, constant = (
            log_text @ coef[:, :k].T,
            log_image @ coef[:, k:].T,
            np.broadcast_to(intercept, log_text.shape),
        )
    elif method == PER_CLASS:
        a, b, d = (np.asarray(config[PER_CLASS][key]) for key in ("a", "b", "d"))
        text, image, constant = a * log_text, b * log_image, np.broadcast_to(d, log_text.shape)
    else:
        raise ValueError(f"{method!r} is not a log-space fusion; choose one of geometric, {PER_CLASS}, {STACKED}")
    if weight == 0.5:
        return text, image, constant
    learned = log_probabilities(softmax(total((text, image, constant))))
    share = 1 - abs(2 * weight - 1)
    return (
        share * text + max(0.0, 2 * weight - 1) * log_text,
        share * image + max(0.0, 1 - 2 * weight) * log_image,
        share * (learned - text - image),
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
    fused[both] = softmax(total(log_terms(text_proba[both], image_proba[both], config, weight)))
    return fused
