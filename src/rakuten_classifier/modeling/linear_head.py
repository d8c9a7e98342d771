"""The linear head of the image model and of the text model's sentence-encoder channel: a class-balanced
multinomial logistic regression on standardised features, folded into one linear layer over the 27 categories.

Its regularisation C is chosen on K-fold out-of-fold logits of the learning rows (modeling/cross_fitting.py),
by the lowest temperature-scaled log-loss, and the head is then refit on all of them at that C. Training
only: serving applies the folded (W, b) with numpy (or the exported image graph), never scikit-learn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial

import numpy as np

from ..categories import CATEGORY_CODES
from .calibration import ABSENT_LOGIT, fit_temperature
from .cross_fitting import run_side_by_side
from .scores import logit_scores

log = logging.getLogger(__name__)

# A feature whose standard deviation is below this is left unscaled (a constant one, e.g. a channel no
# image activates). The features are float32: a constant column's std comes out at rounding level
# (~1e-7 of its value) rather than 0, which a floor of 1e-9 would have scaled up into noise.
VARIANCE_FLOOR = 1e-6


class LinearHead:
    """``LinearHead(C, seed).fit(views, y)``: the regression fitted on the rows of every view (the same rows,
    seen several ways: an image's augmented views; one view for text embeddings), with the labels ``y``
    repeated for each. Fitted state: ``weight_`` (27, d) and ``bias_`` (27,) over all 27 categories, the
    standardisation folded in; a category absent from ``y`` gets weight 0 and bias ABSENT_LOGIT.
    """

    def __init__(self, C: float = 1.0, seed: int = 0):
        self.C = C
        self.seed = seed

    def fit(self, views: Sequence[np.ndarray], y: np.ndarray, rows: np.ndarray | None = None) -> LinearHead:
        """Fit on ``rows`` of every view and of ``y`` (all rows when None); returns self."""
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        # The standardised matrix is built once and standardised in place (lbfgs fits float32 as it is):
        # slicing, concatenating and standardising into new arrays held three copies of the rows, 1.1 GB per
        # fit of the 84,916-product catalogue's 46,000 photos, two fits side by side. In float64 instead,
        # the image grid took 219 s against 121 (2026-12-06): float32 it stays.
        parts = [
            np.asarray(view[rows], dtype=np.float32) if rows is not None else np.array(view, dtype=np.float32)
            for view in views
        ]
        x = parts[0] if len(parts) == 1 else np.concatenate(parts)
        del parts
        mean = x.mean(0)
        scale = x.std(0)
        scale[scale < VARIANCE_FLOOR] = 1.0
        x -= mean
        x /= scale
        labels = np.asarray(y) if rows is None else np.asarray(y)[rows]
        model = LogisticRegression(C=self.C, max_iter=3000, class_weight="balanced", random_state=self.seed)
        # BLAS on one thread: on a busy 2-core box a 2-thread BLAS spins waiting for a preempted partner.
        # One image fit on 6,800 rows x 1,904 features of the 10,000-product catalogue (2026-12-04, load ~8):
        # 6.7 s on one thread against 21.7 s on two (the 10,000-row grid took 9 minutes that way); one text
        # fit on 1,300 embeddings: 0.3 s against 2.5 s.
        with threadpool_limits(limits=1, user_api="blas"):
            model.fit(x, np.tile(labels, len(views)))
        self.weight_ = np.zeros((len(CATEGORY_CODES), x.shape[1]))
        self.bias_ = np.full(len(CATEGORY_CODES), ABSENT_LOGIT)
        self.weight_[model.classes_] = model.coef_ / scale
        self.bias_[model.classes_] = model.intercept_ - (model.coef_ / scale) @ mean
        return self

    def decision_function(self, views: Sequence[np.ndarray]) -> np.ndarray:
        """(n, 27) logits averaged over the views of the same n rows (one view: its logits)."""
        return np.mean([np.asarray(x, dtype=np.float64) @ self.weight_.T + self.bias_ for x in views], axis=0)


def _fold_rows(folds: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of one fold."""
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)


def _fold_logits(
    train_views: Sequence[np.ndarray],
    eval_views: Sequence[np.ndarray],
    y: np.ndarray,
    train: np.ndarray,
    held_out: np.ndarray,
    c: float,
    seed: int,
) -> np.ndarray:
    head = LinearHead(c, seed).fit(train_views, y, rows=train)
    return head.decision_function([view[held_out] for view in eval_views])


def cross_fit_head(
    train_views: Sequence[np.ndarray],
    eval_views: Sequence[np.ndarray],
    y: np.ndarray,
    folds: np.ndarray,
    c_grid: Sequence[float],
    seed: int,
    desc: str,
    jobs: int | None = None,
) -> tuple[LinearHead, np.ndarray, dict[str, dict[str, float]]]:
    """The head refit on every row at the C whose temperature-scaled out-of-fold log-loss is lowest.

    Fitted on ``train_views``, scored on the mean of ``eval_views`` (the test-time views; the same list for
    text). The fits of every (C, fold) run in ``jobs`` processes side by side (default: one per core), each on
    one BLAS thread, under a progress bar named ``desc``. Returns (the head, its out-of-fold logits, every C's
    out-of-fold weighted F1, accuracy and calibrated log-loss).
    """
    if not c_grid:
        raise ValueError("c_grid is empty: no head to choose")
    fold_ids = np.unique(folds)
    tasks = [(c, fold) for c in c_grid for fold in fold_ids]
    started = time.perf_counter()
    fits = [partial(_fold_logits, train_views, eval_views, y, *_fold_rows(folds, f), c, seed) for c, f in tasks]
    logits = run_side_by_side(fits, jobs, f"{desc} C grid (C x fold)")
    oof_by_c = {c: np.full((len(y), len(CATEGORY_CODES)), np.nan) for c in c_grid}
    for (c, fold), fold_logits in zip(tasks, logits, strict=True):
        oof_by_c[c][folds == fold] = fold_logits
    log.info("%s C grid: %d fits in %.1fs", desc, len(tasks), time.perf_counter() - started)
    table: dict[str, dict[str, float]] = {}
    best: tuple[float, float] | None = None
    for c, oof in oof_by_c.items():
        # Chosen on the temperature-scaled log-loss: steadier than F1 on a few hundred rows per fold.
        scores = logit_scores(oof, y, fit_temperature(oof, y))
        table[f"{c:g}"] = {name: round(value, 4) for name, value in scores.items() if name != "n"}
        log.info(
            "%s C=%g: out-of-fold weighted F1 %.3f, calibrated log-loss %.3f",
            desc,
            c,
            scores["weighted_f1"],
            scores["log_loss"],
        )
        if best is None or scores["log_loss"] < best[0]:
            best = (scores["log_loss"], c)
    assert best is not None
    chosen = best[1]
    return LinearHead(chosen, seed).fit(train_views, y), oof_by_c[chosen], table
