"""The frozen-feature head: a standardised, class-balanced logistic regression folded into a linear layer."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..calibration import fit_temperature as shared_fit_temperature
from .classifier import NUM_CLASSES, ImageClassifier

log = logging.getLogger(__name__)

# Logit given to categories never seen in training: their probability is ~0 but never exactly 0
# (a weighted geometric mean with the text model stays finite).
ABSENT_LOGIT = -20.0


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """Temperature minimising validation negative log-likelihood (bounded to [0.05, 20])."""
    return shared_fit_temperature(np.asarray(logits, dtype=np.float64), np.asarray(targets), bounds=(0.05, 20.0))


def metrics(logits: np.ndarray | torch.Tensor, targets: np.ndarray, temperature: float = 1.0) -> dict[str, float]:
    """Weighted F1, accuracy and log-loss (at ``temperature``) of logits against class indices."""
    from sklearn.metrics import accuracy_score, f1_score

    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    targets_t = torch.as_tensor(targets)
    predicted = logits_t.argmax(1).numpy()
    return {
        "f1_weighted": float(f1_score(targets, predicted, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(targets, predicted)),
        "log_loss": float(nn.functional.cross_entropy(logits_t / temperature, targets_t)),
        "n": len(targets),
    }


def _fit_logistic_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: list[np.ndarray],
    val_y: np.ndarray,
    c_grid: Sequence[float],
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Standardised, class-balanced multinomial logistic regression folded into (W, b) over 27 classes.

    C is chosen on the validation split; categories absent from training get weight 0 and ABSENT_LOGIT.
    """
    from sklearn.linear_model import LogisticRegression

    mean = train_x.mean(0)
    scale = train_x.std(0)
    scale[scale < 1e-6] = 1.0
    xs = (train_x - mean) / scale
    best = None
    for c in c_grid:
        started = time.perf_counter()
        clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=seed).fit(xs, train_y)
        weight = np.zeros((NUM_CLASSES, train_x.shape[1]))
        bias = np.full(NUM_CLASSES, ABSENT_LOGIT)
        weight[clf.classes_] = clf.coef_ / scale
        bias[clf.classes_] = clf.intercept_ - (clf.coef_ / scale) @ mean
        val_logits = np.mean([x @ weight.T + bias for x in val_x], axis=0)
        # Selected on the temperature-scaled validation log-loss: steadier than F1 on a small split.
        scores = metrics(val_logits, val_y, fit_temperature(val_logits, val_y))
        log.info(
            "head C=%g: val weighted F1 %.3f, calibrated log-loss %.3f (%.1fs)",
            c,
            scores["f1_weighted"],
            scores["log_loss"],
            time.perf_counter() - started,
        )
        key = -scores["log_loss"]
        if best is None or key > best[0]:
            best = (key, c, weight, bias, val_logits)
    if best is None:
        raise ValueError("c_grid is empty: no head to choose")
    _, c, weight, bias, _ = best
    return torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32), {"C": c}


def set_head_from_logistic(
    model: ImageClassifier,
    train_views: list[np.ndarray],
    y_train: np.ndarray,
    val_views: list[np.ndarray],
    y_val: np.ndarray,
    c_grid: Sequence[float],
    seed: int,
    info: dict,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit the logistic head on pooled features of every view, copy it into ``model.head``, record its info."""
    weight, bias, head_info = _fit_logistic_head(
        np.concatenate(train_views), np.tile(y_train, len(train_views)), val_views, y_val, c_grid, seed
    )
    with torch.no_grad():
        model.head.weight.copy_(weight)
        model.head.bias.copy_(bias)
    info.update(head_info)
    return weight, bias
