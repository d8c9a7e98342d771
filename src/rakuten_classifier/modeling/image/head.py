"""The frozen-feature head: a standardised, class-balanced logistic regression folded into a linear layer.

Its regularisation C and its temperature are chosen on K-fold out-of-fold logits of the learning
rows (modeling/cross_fitting.py); the head is then refit on all of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from torch import nn

from ..calibration import ABSENT_LOGIT, fit_temperature
from ..cross_fitting import run_side_by_side
from .classifier import NUM_CLASSES, ImageClassifier

log = logging.getLogger(__name__)


def metrics(logits: np.ndarray | torch.Tensor, targets: np.ndarray, temperature: float = 1.0) -> dict[str, float]:
    """Weighted F1, accuracy and log-loss (at ``temperature``) of logits against class indices."""
    from sklearn.metrics import accuracy_score, f1_score

    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    targets_t = torch.as_tensor(targets)
    predicted = logits_t.argmax(1).numpy()
    return {
        "weighted_f1": float(f1_score(targets, predicted, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(targets, predicted)),
        "log_loss": float(nn.functional.cross_entropy(logits_t / temperature, targets_t)),
        "n": len(targets),
    }


def fit_logistic_head(
    train_views: list[np.ndarray], y: np.ndarray, c: float, seed: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) over 27 classes of a logistic regression on the pooled features of every view of every row
    (of ``rows`` of each view and of ``y`` when given).

    Categories absent from ``y`` get weight 0 and ABSENT_LOGIT.
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    # The standardised matrix is built once and standardised in place (lbfgs fits float32 as it is):
    # slicing, concatenating and standardising into new arrays held three copies of the rows, 1.1 GB per
    # fit of the 84,916-product catalogue's 46,000 photos, two fits side by side. In float64 instead,
    # the grid took 219 s against 121 (2026-12-06): float32 it stays.
    parts = [view[rows] if rows is not None else np.array(view) for view in train_views]
    x = parts[0] if len(parts) == 1 else np.concatenate(parts)
    del parts
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-6] = 1.0
    x -= mean
    x /= scale
    labels = y if rows is None else y[rows]
    clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=seed)
    # BLAS on one thread: on a busy 2-core box a 2-thread BLAS spins waiting for a preempted partner.
    # One fit on 6,800 rows x 1,904 features of the 10,000-product catalogue (2026-12-04, load ~8):
    # 6.7 s on one thread against 21.7 s on two; the 10,000-row grid took 9 minutes that way.
    with threadpool_limits(limits=1, user_api="blas"):
        clf.fit(x, np.tile(labels, len(train_views)))
    weight = np.zeros((NUM_CLASSES, x.shape[1]))
    bias = np.full(NUM_CLASSES, ABSENT_LOGIT)
    weight[clf.classes_] = clf.coef_ / scale
    bias[clf.classes_] = clf.intercept_ - (clf.coef_ / scale) @ mean
    return weight, bias


def head_logits(views: list[np.ndarray], weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Logits averaged over the test-time views, as ImageClassifier computes them."""
    return np.mean([x @ weight.T + bias for x in views], axis=0)


def _fold_logits(
    train_views: list[np.ndarray],
    eval_views: list[np.ndarray],
    y: np.ndarray,
    train: np.ndarray,
    held_out: np.ndarray,
    c: float,
    seed: int,
) -> np.ndarray:
    weight, bias = fit_logistic_head(train_views, y, c, seed, rows=train)
    return head_logits([v[held_out] for v in eval_views], weight, bias)


def cross_fit_head(
    train_views: list[np.ndarray],
    eval_views: list[np.ndarray],
    y: np.ndarray,
    folds: np.ndarray,
    c_grid: Sequence[float],
    seed: int,
    jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The head refit on every row with the C whose temperature-scaled out-of-fold log-loss is lowest.

    The fits of every (C, fold) run in ``jobs`` processes side by side (default: one per core), each
    on one BLAS thread. Returns (W, b, out-of-fold logits of that C, info with every C's out-of-fold figures).
    """
    if not c_grid:
        raise ValueError("c_grid is empty: no head to choose")
    fold_ids = np.unique(folds)
    tasks = [(c, fold) for c in c_grid for fold in fold_ids]
    started = time.perf_counter()
    logits = run_side_by_side(
        [
            partial(
                _fold_logits,
                train_views,
                eval_views,
                y,
                np.flatnonzero(folds != f),
                np.flatnonzero(folds == f),
                c,
                seed,
            )
            for c, f in tasks
        ],
        jobs,
        "image head C grid (C x fold)",
    )
    oof_by_c = {c: np.full((len(y), NUM_CLASSES), np.nan) for c in c_grid}
    for (c, fold), fold_logits in zip(tasks, logits, strict=True):
        oof_by_c[c][folds == fold] = fold_logits
    log.info("head C grid: %d fits in %.1fs", len(tasks), time.perf_counter() - started)
    best: tuple[float, float] | None = None
    info: dict = {"c_grid": {}}
    for c, oof in oof_by_c.items():
        # Chosen on the temperature-scaled log-loss: steadier than F1 on a few hundred rows per fold.
        scores = metrics(oof, y, fit_temperature(oof, y))
        info["c_grid"][str(c)] = {k: round(v, 4) for k, v in scores.items() if k != "n"}
        log.info(
            "head C=%g: out-of-fold weighted F1 %.3f, calibrated log-loss %.3f",
            c,
            scores["weighted_f1"],
            scores["log_loss"],
        )
        if best is None or scores["log_loss"] < best[0]:
            best = (scores["log_loss"], c)
    assert best is not None
    c = best[1]
    weight, bias = fit_logistic_head(train_views, y, c, seed)
    info["C"] = c
    return weight, bias, oof_by_c[c], info


def set_head(model: ImageClassifier, weight: np.ndarray, bias: np.ndarray) -> None:
    """Copy a fitted (W, b) into ``model.head``."""
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        model.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
