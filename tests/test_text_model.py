"""Text models: TF-IDF default and the transformer path (offline, tiny config and a real checkpoint)."""

from pathlib import Path

import numpy as np
import pytest
from conftest import minilm_folder

from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.modeling.errors import ModelLoadError
from rakuten_classifier.modeling.text import TfidfTextModel, repeat_title
from rakuten_classifier.modeling.text_cross_fit import cross_fit_text_model
from rakuten_classifier.modeling.text_loading import load_text_model
from rakuten_classifier.modeling.text_transformer import TransformerParams
from rakuten_classifier.modeling.text_transformer_fitting import fine_tune_transformer
from rakuten_classifier.modeling.tfidf_cross_fit import cross_fit_tfidf

TEXTS = [
    "livre roman poche",
    "console de jeux portable",
    "piscine hors sol",
    "roman policier poche",
    "manette console jeux",
    "pompe piscine filtration",
] * 4
LABELS = [10, 60, 2583, 10, 60, 2583] * 4


def _tfidf_model() -> TfidfTextModel:
    """The TF-IDF model as training fits it (cross-fitted over 4 folds; temperature 1)."""
    model, _ = cross_fit_tfidf(TEXTS, LABELS, np.arange(len(TEXTS)) % 4, jobs=1)
    return model


def test_tfidf_probabilities_cover_all_classes_and_roundtrip(tmp_path):
    model = _tfidf_model()
    proba = model.predict_proba(["roman de poche", "filtre pour piscine"])
    assert proba.shape == (2, len(CATEGORY_CODES))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert CATEGORY_CODES[proba[0].argmax()] == 10
    assert CATEGORY_CODES[proba[1].argmax()] == 2583
    model.save(tmp_path)
    again = load_text_model(tmp_path)
    np.testing.assert_array_equal(again.predict_proba(["roman de poche"]), model.predict_proba(["roman de poche"]))


def test_title_is_repeated_before_the_description():
    assert repeat_title(["Piscine tubulaire\nBleue 3 m", "Roman"], 2) == [
        "Piscine tubulaire Piscine tubulaire Bleue 3 m",
        "Roman Roman",
    ]


def test_cross_fitting_never_scores_a_row_with_a_model_that_learned_it():
    """Out-of-fold: each row is predicted by a model fitted without its fold; the final model sees every row."""
    seen_by_model: list[set[str]] = []

    class Recorder:
        kind, temperature = "recorder", 1.0

        def __init__(self, texts):
            self.texts = set(texts)
            seen_by_model.append(self.texts)

        def scores(self, texts):
            assert not self.texts & set(texts), "a row was scored by a model that learned from it"
            return np.zeros((len(texts), len(CATEGORY_CODES)))

    texts = [f"produit {i}" for i in range(len(LABELS))]
    folds = np.arange(len(LABELS)) % 4
    model, oof = cross_fit_text_model(texts, LABELS, folds, lambda t, _labels: Recorder(t))  # type: ignore[arg-type,return-value]
    assert len(seen_by_model) == 5  # four folds, then the final fit on every row
    assert isinstance(model, Recorder)
    assert model.texts == set(texts)
    assert oof.shape == (len(LABELS), len(CATEGORY_CODES))
    np.testing.assert_allclose(oof.sum(axis=1), 1.0)


def test_corrupt_text_model_is_refused_clearly(tmp_path):
    _tfidf_model().save(tmp_path)
    (tmp_path / "pipeline.joblib").write_bytes(b"truncated")
    with pytest.raises(ModelLoadError, match="cannot load text model"):
        load_text_model(tmp_path)
    with pytest.raises(ModelLoadError, match="cannot load text model"):
        load_text_model(tmp_path / "absent")


@pytest.fixture
def tiny_bert(tmp_path) -> Path:
    """A 2-layer BERT built from a config (random weights) with the MiniLM vocabulary, saved locally."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(minilm_folder(), local_files_only=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    folder = tmp_path / "tiny-bert"
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_transformer_from_tiny_config_trains_saves_and_reloads(tiny_bert, tmp_path):
    params = TransformerParams(
        backbone=str(tiny_bert), epochs=3, batch_size=8, learning_rate=1e-3, max_length=32, seed=0
    )
    model = fine_tune_transformer(TEXTS, LABELS, params)
    proba = model.predict_proba(TEXTS[:6])
    assert proba.shape == (6, len(CATEGORY_CODES))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    out = tmp_path / "saved"
    out.mkdir()
    model.save(out)
    reloaded = load_text_model(out)
    assert reloaded.kind == "transformer"
    np.testing.assert_allclose(reloaded.predict_proba(TEXTS[:6]), proba, rtol=1e-4, atol=1e-6)
