"""The model options of `rakuten train` and `retrain` come from the training dataclasses (one default each)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from rakuten_classifier.cli import build_parser, main
from rakuten_classifier.config import get_settings
from rakuten_classifier.model_options import given_fields, image_options, tfidf_params, transformer_params
from rakuten_classifier.modeling.image.options import ImageTrainingOptions
from rakuten_classifier.modeling.text import TfidfParams, TransformerParams
from rakuten_classifier.pipeline.steps import image_training_options


def _parse(*argv: str):
    return build_parser().parse_args(["train", "all", *argv])


def test_options_not_given_are_not_passed_so_the_dataclass_defaults_apply():
    args = _parse()
    for cls in (TfidfParams, TransformerParams, ImageTrainingOptions):
        assert given_fields(args, cls) == {}, cls
    assert tfidf_params(args) == TfidfParams()
    assert transformer_params(args) is None  # no --backbone: the TF-IDF text model
    assert image_options(args) == image_training_options(get_settings())


def test_given_options_reach_their_dataclass_fields_with_the_field_types():
    args = _parse(
        "--text-c", "0.5", "--backbone", "some/model", "--lr", "1e-4", "--epochs", "3", "--no-image-multi-stage"
    )
    assert tfidf_params(args) == TfidfParams(C=0.5)
    assert transformer_params(args) == TransformerParams(backbone="some/model", learning_rate=1e-4, epochs=3.0)
    assert image_options(args).multi_stage is False
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


def test_the_transformer_seed_follows_rakuten_seed(monkeypatch):
    monkeypatch.setenv("RAKUTEN_SEED", "7")
    get_settings.cache_clear()
    assert TransformerParams().seed == 7
    assert transformer_params(_parse("--backbone", "some/model")).seed == 7  # type: ignore[union-attr]
    assert "extra" not in {field.name for field in dataclasses.fields(TransformerParams)}


@pytest.mark.parametrize("flag", ["--image-backbone", "--image-mode"])
def test_image_choices_are_refused_by_the_parser(flag, capsys):
    with pytest.raises(SystemExit):
        _parse(flag, "no-such-choice")
    assert "invalid choice" in capsys.readouterr().err
