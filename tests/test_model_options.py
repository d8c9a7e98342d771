"""The model options of `rakuten train` and `retrain` come from the training dataclasses (one default each)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from rakuten_classifier.cli import build_parser, main
from rakuten_classifier.config import Settings, get_settings
from rakuten_classifier.model_options import given_fields, image_options, tfidf_params, transformer_params
from rakuten_classifier.modeling.image.options import ImageTrainingOptions
from rakuten_classifier.modeling.text import TfidfParams
from rakuten_classifier.modeling.text_encoder import EncoderParams
from rakuten_classifier.modeling.text_transformer import TransformerParams
from rakuten_classifier.pipeline import steps


def _parse(*argv: str):
    return build_parser().parse_args(["train", "all", *argv])


def test_options_not_given_are_not_passed_so_the_dataclass_defaults_apply():
    args, settings = _parse(), get_settings()
    for cls in (TfidfParams, TransformerParams, ImageTrainingOptions):
        assert given_fields(args, cls) == {}, cls
    assert tfidf_params(args) == TfidfParams()
    assert transformer_params(args, settings) is None  # no --backbone: the TF-IDF text model
    assert image_options(args, settings) == ImageTrainingOptions.from_settings(settings)


def test_given_options_reach_their_dataclass_fields_with_the_field_types():
    args = _parse(
        "--text-c", "0.5", "--backbone", "some/model", "--lr", "1e-4", "--epochs", "3", "--no-image-multi-stage"
    )
    settings = get_settings()
    assert tfidf_params(args) == TfidfParams(C=0.5)
    assert transformer_params(args, settings) == TransformerParams.from_settings(
        settings, backbone="some/model", learning_rate=1e-4, epochs=3.0
    )
    assert image_options(args, settings).multi_stage is False
    assert isinstance(tfidf_params(args).C, float)


def test_the_help_states_each_dataclass_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    defaults = {
        "--text-c": TfidfParams.C,
        "--text-max-features": TfidfParams.max_features,
        "--epochs": TransformerParams.epochs,
        "--lr": TransformerParams.learning_rate,
        "--max-length": TransformerParams.max_length,
        "--image-mode": ImageTrainingOptions.mode,
    }
    for flag, default in defaults.items():
        # The flag, its value, then its help up to the next flag, ending with the dataclass's default.
        assert re.search(rf"{re.escape(flag)} \S+ (?:(?! --).)*\(default: {re.escape(str(default))}\)", help_text), flag


def test_transformer_options_without_a_backbone_are_refused_before_any_data_is_read(capsys):
    assert main(["train", "text", "--epochs", "3", "--data-dir", "/nowhere"]) == 2
    assert "need --backbone" in capsys.readouterr().err


def test_the_cli_takes_the_seed_and_the_encoder_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAKUTEN_SEED", "7")
    monkeypatch.setenv("RAKUTEN_IMAGE_BACKBONE", "mobilenet_v2")
    get_settings.cache_clear()
    settings = get_settings()
    assert transformer_params(_parse("--backbone", "some/model"), settings).seed == 7  # type: ignore[union-attr]
    assert (image_options(_parse(), settings).seed, image_options(_parse(), settings).backbone) == (7, "mobilenet_v2")


def test_the_settings_options_have_no_default_of_their_own():
    """The seed, the sentence encoder and the image backbone come from an explicit Settings, never the process's."""
    for cls, names in (
        (TransformerParams, {"seed"}),
        (EncoderParams, {"encoder"}),
        (ImageTrainingOptions, {"backbone", "seed"}),
    ):
        without = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        assert without == names, cls


def test_train_text_builds_its_options_from_the_settings_it_is_given(sample_dir, monkeypatch):
    """train_text(settings=S) follows S's encoder and seed, not the environment's (the process's settings)."""
    monkeypatch.setenv("RAKUTEN_TEXT_ENCODER", "none")
    monkeypatch.setenv("RAKUTEN_SEED", "1")
    get_settings.cache_clear()
    given = Settings(text_encoder="e5-small", seed=7, cv_folds=2)
    assert (get_settings().text_encoder, get_settings().seed) == ("none", 1)
    built: dict = {}

    class Built(Exception):
        """Raised once the options are built: what they are is all this test needs."""

    def fitting(name, kind, data, settings, fit, **_):  # the step's fit, without MLflow and the store
        learning = data.learning().head(40)
        return fit(learning, steps.learning_folds(data, settings)[:40])

    def cross_fit_with_encoder(texts, codes, folds, params, encoder, cache_dir, seed):
        built.update(encoder=encoder, seed=seed)
        raise Built

    def fine_tune(texts, labels, params):
        built.update(transformer_seed=params.seed)
        raise Built

    monkeypatch.setattr(steps, "_cross_fit_step", fitting)
    monkeypatch.setattr(steps, "cross_fit_with_encoder", cross_fit_with_encoder)
    monkeypatch.setattr(steps, "fine_tune_transformer", fine_tune)
    data = steps.load_training_data(sample_dir, settings=given)
    with pytest.raises(Built):
        steps.train_text(data, settings=given)
    assert built == {"encoder": EncoderParams.from_settings(given), "seed": 7}
    assert built["encoder"].encoder == "e5-small"
    with pytest.raises(Built):
        steps.train_text(data, backbone="some/model", settings=given)
    assert built["transformer_seed"] == 7


@pytest.mark.parametrize("flag", ["--image-backbone", "--image-mode"])
def test_image_choices_are_refused_by_the_parser(flag, capsys):
    with pytest.raises(SystemExit):
        _parse(flag, "no-such-choice")
    assert "invalid choice" in capsys.readouterr().err
