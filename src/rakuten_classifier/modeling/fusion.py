"""Weighted fusion of text and image probabilities: pure functions, no I/O.

``text_weight`` w: 1 = text alone, 0 = image alone. A row whose image probabilities are missing
(NaN) is decided by the text alone, and vice versa.
"""

from __future__ import annotations

import numpy as np

from .scores import weighted_f1

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
    # A row whose weighted modality is missing sums to 0 here (arithmetic, w = 0 or 1): it is replaced below.
    totals = fused.sum(axis=1, keepdims=True)
    fused = np.divide(fused, totals, out=np.zeros_like(fused), where=totals > 0)
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
        raw_scores.append(weighted_f1(label_indices[both], predicted))
    # Smoothed over +-0.05: with a few hundred validation rows the raw curve is jagged, and a
    # lone spike is noise, not a better weight.
    window = max(1, round(0.05 / grid_step))
    padded = np.pad(np.asarray(raw_scores), window, mode="edge")
    scores = np.convolve(padded, np.ones(2 * window + 1) / (2 * window + 1), mode="valid")
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    chosen = best[np.argmin(np.abs(grid[best] - 0.5))]
    return float(grid[chosen]), float(scores[chosen])


# ----------------------------------------------------------------------------------------------
# The stacked combiner: a multinomial logistic regression on both models' log-probabilities,
# fitted on out-of-fold predictions (modeling/cross_fitting.py), stored as plain numbers in fusion.json.

STACKED = "stacked"
PER_CLASS = "per_class"
COMBINERS = (*FUSION_METHODS, PER_CLASS, STACKED)
# Logit of a category the stacker never saw (probability ~0, never exactly 0).
_ABSENT_LOGIT = -20.0


def stack_features(text_proba: np.ndarray, image_proba: np.ndarray) -> np.ndarray:
    """The stacker's input: both models' log-probabilities side by side, (n, 2k)."""
    text = np.log(np.clip(np.asarray(text_proba, dtype=np.float64), _EPSILON, 1.0))
    image = np.log(np.clip(np.asarray(image_proba, dtype=np.float64), _EPSILON, 1.0))
    return np.hstack([text, image])


def fit_stacker(
    text_proba: np.ndarray, image_proba: np.ndarray, label_indices: np.ndarray, c: float, seed: int
) -> dict:
    """A regularised multinomial logistic regression on stack_features, as {"coef", "intercept", "C"} lists."""
    from sklearn.linear_model import LogisticRegression

    classes = text_proba.shape[1]
    features = stack_features(text_proba, image_proba)
    # Standardised, then folded back: on raw log-probabilities (down to log 1e-7) lbfgs needed ~10x
    # more iterations (measured: 114-305 against 12-26 on the sample's shape).
    mean, scale = features.mean(0), features.std(0)
    scale[scale < 1e-9] = 1.0
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    model.fit((features - mean) / scale, label_indices)
    coef = np.zeros((classes, 2 * classes))
    intercept = np.full(classes, _ABSENT_LOGIT)
    coef[model.classes_] = model.coef_ / scale
    intercept[model.classes_] = model.intercept_ - (model.coef_ / scale) @ mean
    return {"coef": coef.tolist(), "intercept": intercept.tolist(), "C": c}


def stacked_probabilities(text_proba: np.ndarray, image_proba: np.ndarray, stacker: dict) -> np.ndarray:
    """The stacker's probabilities for rows that have both modalities."""
    logits = stack_features(text_proba, image_proba) @ np.asarray(stacker["coef"]).T + np.asarray(stacker["intercept"])
    logits -= logits.max(axis=1, keepdims=True)
    proba = np.exp(logits)
    return proba / proba.sum(axis=1, keepdims=True)


def fit_per_class_weights(
    text_proba: np.ndarray, image_proba: np.ndarray, label_indices: np.ndarray, text_weight: float, l2: float = 0.01
) -> dict:
    """Per-class weights: logit_c = a_c log p_text_c + b_c log p_image_c + d_c, fitted by penalised log-loss.

    The penalty pulls (a, b, d) towards the single-weight geometric mean (text_weight, 1 - text_weight, 0).
    """
    from scipy.optimize import minimize

    log_text = np.log(np.clip(text_proba, _EPSILON, 1.0))
    log_image = np.log(np.clip(image_proba, _EPSILON, 1.0))
    n, k = log_text.shape
    onehot = np.eye(k)[label_indices]
    prior = np.concatenate([np.full(k, text_weight), np.full(k, 1 - text_weight), np.zeros(k)])

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b, d = theta[:k], theta[k : 2 * k], theta[2 * k :]
        logits = a * log_text + b * log_image + d
        logits -= logits.max(axis=1, keepdims=True)
        log_proba = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        residual = (np.exp(log_proba) - onehot) / n
        gradient = np.concatenate([(residual * log_text).sum(0), (residual * log_image).sum(0), residual.sum(0)])
        loss = -(onehot * log_proba).sum() / n + l2 / 2 * ((theta - prior) ** 2).sum()
        return float(loss), gradient + l2 * (theta - prior)

    theta = minimize(loss_and_gradient, prior, jac=True, method="L-BFGS-B").x
    return {"a": theta[:k].tolist(), "b": theta[k : 2 * k].tolist(), "d": theta[2 * k :].tolist()}


def per_class_probabilities(text_proba: np.ndarray, image_proba: np.ndarray, weights: dict) -> np.ndarray:
    """Probabilities of the per-class weighted geometric mean, for rows that have both modalities."""
    logits = (
        np.asarray(weights["a"]) * np.log(np.clip(text_proba, _EPSILON, 1.0))
        + np.asarray(weights["b"]) * np.log(np.clip(image_proba, _EPSILON, 1.0))
        + np.asarray(weights["d"])
    )
    logits -= logits.max(axis=1, keepdims=True)
    proba = np.exp(logits)
    return proba / proba.sum(axis=1, keepdims=True)


def _blend_logs(fused: np.ndarray, text: np.ndarray, image: np.ndarray, text_weight: float) -> np.ndarray:
    """A learned combiner moved towards one model by a text weight, in log space.

    0.5 is the combiner itself; 1 is the text model alone, 0 the image model alone, and the weights
    in between interpolate: log p = (1 - |2w - 1|) log fused + max(0, 2w - 1) log text + max(0, 1 - 2w) log image.
    """
    logs = (
        (1 - abs(2 * text_weight - 1)) * np.log(np.clip(fused, _EPSILON, 1.0))
        + max(0.0, 2 * text_weight - 1) * np.log(np.clip(text, _EPSILON, 1.0))
        + max(0.0, 1 - 2 * text_weight) * np.log(np.clip(image, _EPSILON, 1.0))
    )
    logs -= logs.max(axis=1, keepdims=True)
    proba = np.exp(logs)
    return proba / proba.sum(axis=1, keepdims=True)


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
    both = ~(np.isnan(text_proba).any(axis=1) | np.isnan(image_proba).any(axis=1))
    if not both.any():
        return fused
    text, image = text_proba[both], image_proba[both]
    if method == STACKED:
        learned = stacked_probabilities(text, image, config["stacker"])
    else:
        learned = per_class_probabilities(text, image, config["per_class"])
    fused[both] = learned if weight == 0.5 else _blend_logs(learned, text, image, weight)
    return fused
