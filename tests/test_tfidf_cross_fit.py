"""The TF-IDF cross-fitting that counts n-grams once: the same model and out-of-fold scores as a fit per fold."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from rakuten_classifier.categories import label_indices
from rakuten_classifier.data.preprocessing import product_text
from rakuten_classifier.data.reader import read_challenge_dir
from rakuten_classifier.modeling.cross_fitting import assign_folds
from rakuten_classifier.modeling.text import TfidfParams, TfidfTextModel, text_pipeline
from rakuten_classifier.modeling.text_cross_fit import out_of_fold_scores
from rakuten_classifier.modeling.tfidf_cross_fit import cross_fit_tfidf

pytestmark = pytest.mark.slow  # fits on 600 sample texts in worker processes: out of `make test-fast`


@pytest.fixture(scope="module")
def sample_texts(sample_dir):
    labelled = read_challenge_dir(sample_dir).labelled.iloc[:600]
    texts = [product_text(d, s) for d, s in zip(labelled["designation"], labelled["description"], strict=True)]
    codes = labelled["prdtypecode"].astype(int).tolist()
    return texts, codes, assign_folds(label_indices(codes), 3, seed=0)


def _fitted_on(texts: list[str], codes: list[int], params: TfidfParams) -> TfidfTextModel:
    """scikit-learn's own fit of the training pipeline (each vectoriser analysing its rows): the reference."""
    return TfidfTextModel(text_pipeline(params).fit(texts, label_indices(codes)), 1.0, params)


# max_features=2,000 makes the vocabulary cut bind (the sample's 600 texts hold ~60,000 n-grams).
@pytest.mark.parametrize("max_features", [500_000, 2_000])
def test_counting_once_gives_the_per_fold_fits_scores_and_the_full_fits_model(sample_texts, max_features):
    texts, codes, folds = sample_texts
    params = TfidfParams(max_features=max_features)
    model, oof = cross_fit_tfidf(texts, codes, folds, params, jobs=2)
    expected_oof = out_of_fold_scores(texts, codes, folds, lambda t, c: _fitted_on(t, c, params))
    expected = _fitted_on(texts, codes, params)
    # LinearSVC's coordinate descent visits rows in a random order: equal up to its tolerance
    assert np.abs(oof - expected_oof).max() < 1e-3
    assert (oof.argmax(1) == expected_oof.argmax(1)).all()
    built = model.pipeline.named_steps["tfidf"].transformer_list
    fitted = expected.pipeline.named_steps["tfidf"].transformer_list
    for (_, ours), (_, theirs) in zip(built, fitted, strict=True):
        assert ours.vocabulary_ == theirs.vocabulary_
        np.testing.assert_allclose(ours.idf_, theirs.idf_, rtol=1e-6)
    probe = [*texts[:50], "une chaise en bois pour enfant", ""]
    assert np.abs(model.scores(probe) - expected.scores(probe)).max() < 1e-3


def test_a_run_killed_midway_fits_only_what_was_not_done_and_says_so(sample_texts, tmp_path, caplog):
    texts, codes, folds = sample_texts
    logger = "rakuten_classifier.modeling.tfidf_cross_fit"
    first_model, first = cross_fit_tfidf(texts, codes, folds, cache_dir=tmp_path, jobs=1)
    assert len(list(tmp_path.glob("tfidf-folds-*.npz"))) == 3
    assert len(list(tmp_path.glob("tfidf-final-*.joblib"))) == 1
    # Everything done (a run killed after the text step): nothing is counted or fitted again.
    with caplog.at_level(logging.INFO, logger=logger):
        model, again = cross_fit_tfidf(texts, codes, folds, cache_dir=tmp_path, jobs=1)
    assert "3 of 3 folds and the final model already done" in caplog.text
    assert "counted" not in caplog.text
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(model.scores(texts[:20]), first_model.scores(texts[:20]))
    # A run killed during the fits: one fold and the final model lost, the other two folds kept.
    sorted(tmp_path.glob("tfidf-folds-*.npz"))[0].unlink()
    next(tmp_path.glob("tfidf-final-*.joblib")).unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=logger):
        _, second = cross_fit_tfidf(texts, codes, folds, cache_dir=tmp_path, jobs=1)
    assert "2 of 3 folds but not the final model already done" in caplog.text
    assert np.abs(second - first).max() < 1e-3
    # Other labels are other folds' results: nothing is reused.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=logger):
        cross_fit_tfidf(texts, codes[::-1], folds, cache_dir=tmp_path, jobs=1)
    assert "already done" not in caplog.text
