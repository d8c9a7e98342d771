"""The linear head of the image model and of the text encoder channel: a standardised, class-balanced logistic
regression folded into (W, b) over the 27 categories, its C chosen on out-of-fold log-loss."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.metrics import log_loss as sklearn_log_loss

from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.modeling.calibration import ABSENT_LOGIT, fit_temperature, softmax
from rakuten_classifier.modeling.cross_fitting import assign_folds
from rakuten_classifier.modeling.linear_head import LinearHead, cross_fit_head
from rakuten_classifier.modeling.scores import log_loss, logit_scores

K = len(CATEGORY_CODES)
PRESENT = [0, 3, 7, 20]  # the categories of the rows below; the other 23 are absent


def _rows(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32, on very different scales, one column constant) and labels among PRESENT."""
    rng = np.random.default_rng(seed)
    y = np.array(PRESENT)[rng.integers(len(PRESENT), size=n)]
    centres = rng.normal(size=(K, 6))
    x = centres[y] + rng.normal(scale=1.5, size=(n, 6))
    x *= np.array([1.0, 100.0, 0.01, 1.0, 5.0, 1.0])
    x[:, 5] = 3.0  # a feature no row varies on
    return x.astype(np.float32), y


def test_the_folded_head_scores_as_the_regression_on_standardised_features_and_absent_classes_get_absent_logit():
    x, y = _rows()
    head = LinearHead(C=0.5, seed=0).fit([x], y)
    assert head.weight_.shape == (K, 6)
    assert head.bias_.shape == (K,)

    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-6] = 1.0
    reference = LogisticRegression(C=0.5, max_iter=3000, class_weight="balanced").fit((x - mean) / scale, y)
    logits = head.decision_function([x])
    np.testing.assert_allclose(logits[:, PRESENT], reference.decision_function((x - mean) / scale), atol=1e-3)
    absent = [k for k in range(K) if k not in PRESENT]
    assert (head.bias_[absent] == ABSENT_LOGIT).all()
    assert (head.weight_[absent] == 0).all()
    assert np.isfinite(head.weight_).all()  # the constant column is left unscaled, not divided by ~0


def test_fitting_on_some_rows_equals_fitting_on_those_rows_and_the_callers_features_are_left_as_they_were():
    x, y = _rows()
    kept = x.copy()
    rows = np.arange(0, len(y), 2)
    on_rows = LinearHead(C=0.5, seed=0).fit([x], y, rows=rows)
    on_copy = LinearHead(C=0.5, seed=0).fit([x[rows]], y[rows])
    np.testing.assert_array_equal(on_rows.weight_, on_copy.weight_)
    np.testing.assert_array_equal(on_rows.bias_, on_copy.bias_)
    np.testing.assert_array_equal(x, kept)  # standardised in place, but in the head's own copy


def test_the_head_of_several_views_averages_their_logits():
    x, y = _rows()
    mirrored = x[:, ::-1].copy()
    head = LinearHead(C=0.5, seed=0).fit([x, mirrored], y)
    both = head.decision_function([x, mirrored])
    np.testing.assert_allclose(both, (head.decision_function([x]) + head.decision_function([mirrored])) / 2)


def test_the_head_is_refit_at_the_c_of_lowest_out_of_fold_log_loss_and_its_out_of_fold_logits_are_that_cs():
    x, y = _rows()
    folds = assign_folds(y, 3, seed=0)
    grid = (1e-4, 0.1)
    head, oof, table = cross_fit_head([x], [x], y, folds, grid, seed=0, desc="test head", jobs=1)

    assert set(table) == {"0.0001", "0.1"}
    losses = {c: table[f"{c:g}"]["log_loss"] for c in grid}
    lowest = min(losses, key=losses.__getitem__)
    assert lowest == head.C
    assert losses[1e-4] != losses[0.1]
    assert not np.isnan(oof).any()
    # Each row's out-of-fold logits come from the head fitted on the other folds at the chosen C.
    fold = 1
    held_out = folds == fold
    fitted = LinearHead(head.C, 0).fit([x], y, rows=np.flatnonzero(~held_out))
    np.testing.assert_allclose(oof[held_out], fitted.decision_function([x[held_out]]))
    # The table's figures are those of the temperature-scaled out-of-fold logits.
    temperature = fit_temperature(oof, y)
    assert table[f"{head.C:g}"]["log_loss"] == round(log_loss(oof, y, temperature), 4)
    assert table[f"{head.C:g}"]["weighted_f1"] == round(float(f1_score(y, oof.argmax(1), average="weighted")), 4)
    # The final head is fitted on every row.
    np.testing.assert_array_equal(head.weight_, LinearHead(head.C, 0).fit([x], y).weight_)


def test_an_empty_c_grid_is_refused():
    x, y = _rows()
    with pytest.raises(ValueError, match="c_grid is empty"):
        cross_fit_head([x], [x], y, assign_folds(y, 3, seed=0), (), seed=0, desc="test head", jobs=1)


def test_the_log_loss_and_logit_scores_are_sklearns():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(50, K))
    y = rng.integers(K, size=50)
    expected = sklearn_log_loss(y, softmax(logits, 0.7), labels=range(K))
    assert log_loss(logits, y, 0.7) == pytest.approx(expected, rel=1e-9)
    scores = logit_scores(logits, y, 0.7)
    predicted = logits.argmax(1)
    assert scores["weighted_f1"] == pytest.approx(f1_score(y, predicted, average="weighted", zero_division=0))
    assert scores["accuracy"] == pytest.approx(float(np.mean(predicted == y)))
    assert scores["n"] == 50
