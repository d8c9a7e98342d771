"""Temperature scaling: one scalar per model, fitted on the validation split."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax


def softmax_with_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax of scores divided by the temperature."""
    return np.exp(log_softmax(np.asarray(scores, dtype=np.float64) / temperature, axis=1))


def fit_temperature(scores: np.ndarray, label_indices: np.ndarray, bounds: tuple[float, float] = (1e-3, 1e3)) -> float:
    """The temperature (within ``bounds``) minimising the validation log-loss of softmax(scores / T)."""
    scores = np.asarray(scores, dtype=np.float64)
    label_indices = np.asarray(label_indices)
    rows = np.arange(len(label_indices))

    def negative_log_likelihood(log_temperature: float) -> float:
        return -log_softmax(scores / np.exp(log_temperature), axis=1)[rows, label_indices].mean()

    result = minimize_scalar(negative_log_likelihood, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded")
    return float(np.exp(result.x))
