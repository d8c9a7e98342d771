"""The fusion maths: pure functions, checked against hand-computed values."""

import numpy as np
import pytest

from rakuten_classifier.modeling.fusion import fuse_probabilities, learn_text_weight
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
def test_weight_out_of_range_is_rejected(bad):
    with pytest.raises(ValueError, match="text_weight"):
        fuse_probabilities(TEXT, IMAGE, bad)


def test_unknown_method_is_rejected():
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
