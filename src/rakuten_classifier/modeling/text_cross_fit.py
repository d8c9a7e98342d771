"""Cross-fitting any text model: each row's out-of-fold scores, then the temperature fitted on them.

A fit function (a transformer's fine-tuning, or any model that scores texts) is run once per fold and
once on every row; the TF-IDF model has its own cross-fitting, which counts its n-grams once for all
folds (tfidf_cross_fit.py), and is calibrated here as well. Training only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from ..categories import CATEGORY_CODES, label_indices
from .calibration import fit_temperature, softmax
from .cross_fitting import out_of_fold
from .text import TextModel

log = logging.getLogger(__name__)


def out_of_fold_scores(
    texts: Sequence[str], labels: Sequence[int], folds: np.ndarray, fit: Callable[[list[str], list[int]], TextModel]
) -> np.ndarray:
    """Scores of every row by a model ``fit`` without the row's fold."""
    texts, labels = list(texts), [int(code) for code in labels]

    def fit_predict(train: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        model = fit([texts[i] for i in train], [labels[i] for i in train])
        return model.scores([texts[i] for i in held_out])

    return out_of_fold(fit_predict, folds, len(CATEGORY_CODES))


def cross_fit_text_model(
    texts: Sequence[str], labels: Sequence[int], folds: np.ndarray, fit: Callable[[list[str], list[int]], TextModel]
) -> tuple[TextModel, np.ndarray]:
    """The model ``fit`` on every row, with its temperature fitted on out-of-fold scores; and those
    out-of-fold probabilities (row i predicted by a model fitted without i's fold)."""
    texts, labels = list(texts), [int(code) for code in labels]
    oof_scores = out_of_fold_scores(texts, labels, folds, fit)
    return calibrate(fit(texts, labels), oof_scores, labels)


def calibrate(model: TextModel, oof_scores: np.ndarray, labels: Sequence[int]) -> tuple[TextModel, np.ndarray]:
    """``model`` with its temperature fitted on the out-of-fold scores, and those scores' probabilities."""
    model.temperature = fit_temperature(oof_scores, label_indices(labels))
    log.info("text model cross-fitted on %d rows: temperature %.3f", len(oof_scores), model.temperature)
    return model, softmax(oof_scores, model.temperature)
