"""The fusion maths: pure functions, checked against hand-computed values."""

import numpy as np
import pytest

from rakuten_classifier.modeling.cross_fitting import assign_folds
from rakuten_classifier.modeling.fusion import fuse, fuse_probabilities
from rakuten_classifier.modeling.fusion_fitting import fit_stacker, learn_text_weight
from rakuten_classifier.modeling.fusion_selection import fitting_rows, nested_scores, select_fusion
from rakuten_classifier.pipeline.gate import promotion_decision

TEXT = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
IMAGE = np.array([[0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])


def test_arithmetic_mean_matches_hand_computation():
    fused = fuse_probabilities(TEXT, IMAGE, 0.25, "arithmetic")
    np.testing.assert_allclose(fused[0], 0.25 * TEXT[0] + 0.75 * IMAGE[0])


def test_geometric_mean_matches_hand_computation():
    fused = fuse_probabilities(TEXT, IMAGE, 0.5, "geometric")
    expected = np.sqrt(TEXT[0] * IMAGE[0])
    np.testing.assert_allclose(fused[0], expected / expected.sum())
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)


@pytest.mark.parametrize("method", ["arithmetic", "geometric"])
def test_extreme_weights_select_one_modality(method):
    np.testing.assert_allclose(fuse_probabilities(TEXT, IMAGE, 1.0, method), TEXT, atol=1e-6)
    np.testing.assert_allclose(fuse_probabilities(TEXT, IMAGE, 0.0, method), IMAGE, atol=1e-6)


def test_missing_modality_rows_fall_back_to_the_other():
    image = IMAGE.copy()
    image[1] = np.nan
    fused = fuse_probabilities(TEXT, image, 0.3, "geometric")
    np.testing.assert_allclose(fused[1], TEXT[1])
    assert not np.allclose(fused[0], TEXT[0])
    np.testing.assert_allclose(fuse_probabilities(None, IMAGE, 0.9), IMAGE)
    np.testing.assert_allclose(fuse_probabilities(TEXT, None, 0.1), TEXT)


def test_zero_probability_does_not_veto_in_geometric_mean():
    fused = fuse_probabilities(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), 0.5, "geometric")
    np.testing.assert_allclose(fused, [[0.5, 0.5]])


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_weight_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="text_weight"):
        fuse_probabilities(TEXT, IMAGE, bad)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse_probabilities(TEXT, IMAGE, 0.5, "median")


def test_learned_weight_follows_the_informative_modality():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    informative = np.full((400, 5), 0.05)
    informative[np.arange(400), labels] = 0.8
    noise = rng.dirichlet(np.ones(5), 400)
    weight, f1 = learn_text_weight(informative, noise, labels, "geometric")
    assert weight >= 0.7
    assert f1 > 0.95
    weight, _ = learn_text_weight(noise, informative, labels, "geometric")
    assert weight <= 0.3


def test_promotion_gate():
    assert promotion_decision(0.70, None)[0]
    assert promotion_decision(0.70, 0.70)[0]  # not worse: promoted
    assert promotion_decision(0.71, 0.70)[0]
    promoted, reason = promotion_decision(0.69, 0.70)
    assert not promoted
    assert "0.6900 < production 0.7000" in reason


def _noisy_proba(rng, labels, strength, classes=6):
    logits = rng.normal(0, 1, (len(labels), classes))
    logits[np.arange(len(labels)), labels] += strength
    proba = np.exp(logits)
    return proba / proba.sum(axis=1, keepdims=True)


def test_folds_are_stratified_seeded_and_cover_every_row():
    labels = np.repeat(np.arange(4), [50, 30, 12, 3])
    folds = assign_folds(labels, 5, seed=1)
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(folds, assign_folds(labels, 5, seed=1))
    assert not np.array_equal(folds, assign_folds(labels, 5, seed=2))
    for label in (0, 1):  # every fold holds its share of a category
        assert set(np.bincount(folds[labels == label])) == {len(labels[labels == label]) // 5}
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(labels, 1, seed=1)


def test_learned_combiner_learns_which_modality_to_trust_for_each_category():
    """Text is right on categories 0-2, the image on 3-5: one weight cannot fit both, a learned combiner can."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 900)
    text = _noisy_proba(rng, labels, 0.0)
    image = _noisy_proba(rng, labels, 0.0)
    good_text, good_image = labels < 3, labels >= 3
    text[good_text] = _noisy_proba(rng, labels[good_text], 4.0)
    image[good_image] = _noisy_proba(rng, labels[good_image], 4.0)
    folds = np.arange(900) % 5
    name, fitted, table = select_fusion(text, image, labels, folds, seed=0)
    assert set(fitted) == set(table)  # every candidate scored and refit on all rows
    config = fitted[name]
    assert name.startswith(("per-class", "stacked"))  # a learned combiner, not a single weight
    assert table["per-class l2=0.001"]["weighted_f1"] > table["geometric"]["weighted_f1"] + 0.05
    assert config["text_weight"] == 0.5  # the neutral point of an override
    fused = fuse(text, image, config)
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)
    # An override moves the answer to one model: 1 is the text model, 0 the image model.
    np.testing.assert_allclose(fuse(text, image, config, text_weight=1.0), text, atol=1e-9)
    np.testing.assert_allclose(fuse(text, image, config, text_weight=0.0), image, atol=1e-9)
    # A row without an image is decided by the text alone, whatever the combiner learned.
    image[:10] = np.nan
    np.testing.assert_allclose(fuse(text, image, config)[:10], text[:10])


def test_nested_scores_never_fit_a_combiner_on_the_fold_it_scores():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 200)
    text, image = _noisy_proba(rng, labels, 2.0), _noisy_proba(rng, labels, 1.0)
    row_of = {tuple(np.round(row, 12)): i for i, row in enumerate(text)}
    folds = np.arange(200) % 4
    fitted_on: list[set[int]] = []

    def fit(text_rows, image_rows, label_rows):
        fitted_on.append({row_of[tuple(np.round(row, 12))] for row in text_rows})
        return {"method": "geometric", "text_weight": 0.5}

    nested_scores(text, image, labels, folds, fit)
    assert len(fitted_on) == 4
    for fold, rows in enumerate(fitted_on):
        assert rows.isdisjoint(np.flatnonzero(folds == fold))


def test_combiners_fit_on_at_most_the_row_limit_and_every_row_is_scored():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 6, 1000)
    text, image = _noisy_proba(rng, labels, 2.0), _noisy_proba(rng, labels, 1.0)
    image[:100] = np.nan  # rows without an image are never fitted on
    folds = np.arange(1000) % 4
    sizes: list[int] = []

    def fit(text_rows, image_rows, label_rows):
        assert not np.isnan(image_rows).any()
        sizes.append(len(text_rows))
        return {"method": "geometric", "text_weight": 0.5}

    scores = nested_scores(text, image, labels, folds, fit, fit_rows=300, seed=0)
    assert sizes == [300] * 4
    assert (scores["n"], scores["n_with_image"]) == (1000, 900)
    sizes.clear()
    nested_scores(text, image, labels, folds, fit)  # no limit: each fit sees its 3 other folds' rows
    assert sizes == [int(((folds != f) & (np.arange(1000) >= 100)).sum()) for f in range(4)]
    kept = fitting_rows(np.arange(1000) >= 100, 300, seed=0)
    assert kept.sum() == 300
    assert not kept[:100].any()
    np.testing.assert_array_equal(kept, fitting_rows(np.arange(1000) >= 100, 300, seed=0))  # seeded


def test_stacker_probabilities_are_a_distribution_and_learn_the_signal():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 6, 600)
    text, image = _noisy_proba(rng, labels, 3.0), _noisy_proba(rng, labels, 1.0)
    config = {"method": "stacked", "text_weight": 0.5, "stacker": fit_stacker(text, image, labels, 1.0, seed=0)}
    fused = fuse(text, image, config)
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)
    assert (fused.argmax(axis=1) == labels).mean() > 0.8


def test_numpy_weighted_f1_equals_sklearns_including_absent_and_unpredicted_classes():
    from sklearn.metrics import f1_score

    from rakuten_classifier.modeling.scores import weighted_f1

    rng = np.random.default_rng(0)
    for case in range(300):
        n, classes = int(rng.integers(1, 60)), int(rng.integers(1, 27))
        labels = rng.integers(0, classes, n)
        # Some predictions copy the truth, some are classes the labels never hold.
        predicted = np.where(rng.random(n) < 0.5, labels, rng.integers(0, classes + 3, n))
        expected = f1_score(labels, predicted, average="weighted", zero_division=0)
        assert weighted_f1(labels, predicted) == pytest.approx(expected, abs=1e-12), case
    assert weighted_f1(np.array([], dtype=int), np.array([], dtype=int)) == 0.0
