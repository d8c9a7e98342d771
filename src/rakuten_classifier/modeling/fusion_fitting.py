"""Fitting the fusion combiners on out-of-fold probabilities (training only; serving reads the result).

The weighted means learn one text weight; the per-class combiner learns a weight per class and modality;
the stacked combiner is a multinomial logistic regression on both models' log-probabilities. Each returns
plain numbers for fusion.json, which modeling/fusion.py turns back into probabilities.
"""

from __future__ import annotations

import numpy as np

from .calibration import ABSENT_LOGIT
from .fusion import fuse_probabilities, has_both, log_probabilities, stack_features
from .scores import weighted_f1


def learn_text_weight(
    text_proba: np.ndarray, image_proba: np.ndarray, label_indices: np.ndarray, method: str, grid_step: float = 0.01
) -> tuple[float, float]:
    """The text weight maximising weighted F1 on out-of-fold rows that have both modalities.

    Returns (weight, smoothed weighted F1 at that weight). Ties go to the weight closest to 0.5, so a flat
    optimum does not push the fusion to one extreme.
    """
    both = has_both(text_proba, image_proba)
    if both.sum() == 0:
        raise ValueError("no row has both modalities; cannot learn a text weight")
    grid = np.round(np.arange(0.0, 1.0 + grid_step / 2, grid_step), 6)
    raw_scores = []
    for weight in grid:
        predicted = fuse_probabilities(text_proba[both], image_proba[both], float(weight), method).argmax(axis=1)
        raw_scores.append(weighted_f1(label_indices[both], predicted))
    # Smoothed over +-0.05: with a few hundred rows the raw curve is jagged, and a
    # lone spike is noise, not a better weight.
    window = max(1, round(0.05 / grid_step))
    padded = np.pad(np.asarray(raw_scores), window, mode="edge")
    scores = np.convolve(padded, np.ones(2 * window + 1) / (2 * window + 1), mode="valid")
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    chosen = best[np.argmin(np.abs(grid[best] - 0.5))]
    return float(grid[chosen]), float(scores[chosen])


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
    intercept = np.full(classes, ABSENT_LOGIT)
    coef[model.classes_] = model.coef_ / scale
    intercept[model.classes_] = model.intercept_ - (model.coef_ / scale) @ mean
    return {"coef": coef.tolist(), "intercept": intercept.tolist(), "C": c}


def fit_per_class_weights(
    text_proba: np.ndarray, image_proba: np.ndarray, label_indices: np.ndarray, text_weight: float, l2: float = 0.01
) -> dict:
    """Per-class weights: logit_c = a_c log p_text_c + b_c log p_image_c + d_c, fitted by penalised log-loss.

    The penalty pulls (a, b, d) towards the single-weight geometric mean (text_weight, 1 - text_weight, 0).
    """
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    log_text, log_image = log_probabilities(text_proba), log_probabilities(image_proba)
    n, k = log_text.shape
    onehot = np.eye(k)[label_indices]
    prior = np.concatenate([np.full(k, text_weight), np.full(k, 1 - text_weight), np.zeros(k)])

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b, d = theta[:k], theta[k : 2 * k], theta[2 * k :]
        log_proba = log_softmax(a * log_text + b * log_image + d, axis=1)
        residual = (np.exp(log_proba) - onehot) / n
        gradient = np.concatenate([(residual * log_text).sum(0), (residual * log_image).sum(0), residual.sum(0)])
        loss = -(onehot * log_proba).sum() / n + l2 / 2 * ((theta - prior) ** 2).sum()
        return float(loss), gradient + l2 * (theta - prior)

    theta = minimize(loss_and_gradient, prior, jac=True, method="L-BFGS-B").x
    return {"a": theta[:k].tolist(), "b": theta[k : 2 * k].tolist(), "d": theta[2 * k :].tolist()}
