"""Scores to probabilities: the one softmax, temperature scaling on out-of-fold scores, the absent-class logit."""

from __future__ import annotations

import numpy as np

# Logit (or margin) of a category a model never saw in training: its probability is ~0 but never
# exactly 0, so a weighted geometric mean with the other modality stays finite.
ABSENT_LOGIT = -20.0
# Range searched for a temperature. On the real sample (2026-12-01) the text model's is 0.165 and the
# image head's 0.68, well inside; a bound only stops a degenerate fit (every row right) running off.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64, shifted by each row's maximum so no exp overflows.

    numpy rather than scipy.special: serving needs only this, and scipy is ~40 MiB more in every
    model worker that imports it (measured 2026-12-04, see docs/serving.md).
    """
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``scores / temperature`` in float64."""
    return np.exp(log_softmax(np.asarray(scores, dtype=np.float64) / temperature))


def fit_temperature(scores: np.ndarray, label_indices: np.ndarray) -> float:
    """The temperature (within TEMPERATURE_BOUNDS) minimising the log-loss of softmax(scores / T) on
    out-of-fold scores (rows scored by a model fitted without them)."""
    from scipy.optimize import minimize_scalar  # training only: serving workers never load scipy

    scores = np.asarray(scores, dtype=np.float64)
    label_indices = np.asarray(label_indices)
    rows = np.arange(len(label_indices))

    def negative_log_likelihood(log_temperature: float) -> float:
        return -log_softmax(scores / np.exp(log_temperature))[rows, label_indices].mean()

    low, high = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    result = minimize_scalar(negative_log_likelihood, bounds=(low, high), method="bounded")
    return float(np.exp(result.x))
