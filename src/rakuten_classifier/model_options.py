"""The model options of `rakuten train` and `rakuten retrain`, built from the dataclasses the training code takes.

As transformers' HfArgumentParser does: each option's type comes from its dataclass field and its default
from the one default object (the dataclass built from the settings, as the training steps build it: an
option not given is not passed, so that default applies), its help from the field's "help" metadata (or
from `Option.help` where the dataclass has none). The options are added when the sub-command parses
(`DeferringParser`): importing the image options loads torch, which the other commands never need.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .config import Settings
    from .modeling.image.options import ImageTrainingOptions
    from .modeling.text import TfidfParams
    from .modeling.text_encoder import EncoderParams
    from .modeling.text_transformer import TransformerParams


class Option(NamedTuple):
    """A dataclass field offered on the command line: its flag, and help where the field has no "help" metadata."""

    flag: str
    help: str | None = None
    choices: tuple[str, ...] | None = None


def add_dataclass_options(group: argparse._ArgumentGroup, defaults: Any, options: dict[str, Option]) -> None:
    """One option per field of the dataclass of ``defaults`` named in ``options``, whose help states the
    field's value in ``defaults``; its value lands in the parsed arguments as ``<class name>.<field>``,
    only when given (see `given_fields`)."""
    cls = type(defaults)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name not in options:
            continue
        option = options[field.name]
        kind = next(arg for arg in typing.get_args(hints[field.name]) or (hints[field.name],) if arg is not type(None))
        default = getattr(defaults, field.name)
        described = field.metadata.get("help") or option.help or ""
        if default is not None:  # None: the dataclass decides (the help says how)
            described += f" (default: {default})"
        keywords: dict[str, Any] = {
            "dest": f"{cls.__name__}.{field.name}",
            "default": argparse.SUPPRESS,
            "help": described.replace("%", "%%"),
        }
        if kind is bool:
            keywords["action"] = argparse.BooleanOptionalAction
        else:
            keywords.update(type=kind, choices=option.choices, metavar=None if option.choices else field.name.upper())
        group.add_argument(option.flag, **keywords)


def given_fields(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of dataclass ``cls`` given on the command line."""
    prefix = f"{cls.__name__}."
    return {key.removeprefix(prefix): value for key, value in vars(args).items() if key.startswith(prefix)}


def add_model_options(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """The options of the text (TF-IDF or transformer) and image models, their defaults from ``settings``."""
    from .modeling.image.backbones import BACKBONES
    from .modeling.image.options import MODES, ImageTrainingOptions
    from .modeling.text import TfidfParams
    from .modeling.text_encoder import COMBINATION_METHODS, ENCODERS, NO_ENCODER, EncoderParams
    from .modeling.text_transformer import TransformerParams

    tfidf = parser.add_argument_group("text TF-IDF + linear SVM (the default text model)")
    add_dataclass_options(
        tfidf,
        TfidfParams(),
        {
            "C": Option("--text-c", "SVM regularisation C"),
            "max_features": Option("--text-max-features", "TF-IDF vocabulary size"),
        },
    )
    add_dataclass_options(
        tfidf,
        EncoderParams.from_settings(settings),
        {
            "encoder": Option("--text-encoder", choices=(*ENCODERS, NO_ENCODER)),
            "max_chars": Option("--text-encoder-max-chars"),
            "combination": Option("--text-combination", choices=COMBINATION_METHODS),
        },
    )
    text = parser.add_argument_group("text transformer (instead of TF-IDF)")
    text.add_argument(
        "--backbone",
        help="train the transformer text model: Hugging Face hub id or local folder, e.g. jhu-clsp/mmBERT-base",
    )
    add_dataclass_options(
        text,
        TransformerParams.from_settings(settings),
        {
            "epochs": Option("--epochs"),
            "batch_size": Option("--batch-size"),
            "learning_rate": Option("--lr"),
            "max_length": Option("--max-length"),
            "sample_fraction": Option("--sample-fraction"),
        },
    )
    with_stages = ", ".join(name for name, spec in BACKBONES.items() if spec.stages)
    image = parser.add_argument_group("image model")
    add_dataclass_options(
        image,
        ImageTrainingOptions.from_settings(settings),
        {
            "backbone": Option("--image-backbone", "the ImageNet backbone", tuple(BACKBONES)),
            "mode": Option(
                "--image-mode", "frozen: a head on the backbone's features; finetune: also its last blocks", MODES
            ),
            "epochs": Option("--image-epochs", "epochs of the finetune mode (default: the mode's)"),
            "multi_stage": Option(
                "--image-multi-stage",
                "pool the backbone's last three stages too, not only its last block (default: on in frozen mode "
                f"for a backbone with stages: {with_stages})",
            ),
        },
    )


def transformer_params(args: argparse.Namespace, settings: Settings) -> TransformerParams | None:
    """The transformer text model's parameters when ``--backbone`` selects it, else None."""
    from .modeling.text_transformer import TransformerParams

    given = given_fields(args, TransformerParams)
    if not args.backbone:
        if given:
            raise ValueError(f"the transformer text model's options ({', '.join(given)}) need --backbone")
        return None
    return TransformerParams.from_settings(settings, backbone=args.backbone, **given)


def tfidf_params(args: argparse.Namespace) -> TfidfParams:
    """The TF-IDF text model's parameters."""
    from .modeling.text import TfidfParams

    return TfidfParams(**given_fields(args, TfidfParams))


def encoder_params(args: argparse.Namespace, settings: Settings) -> EncoderParams:
    """The TF-IDF text model's encoder channel (the encoder from the settings unless given)."""
    from .modeling.text_encoder import EncoderParams

    given = given_fields(args, EncoderParams)
    if args.backbone and given:
        raise ValueError(f"the encoder channel's options ({', '.join(given)}) apply to the TF-IDF text model only")
    return EncoderParams.from_settings(settings, **given)


def image_options(args: argparse.Namespace, settings: Settings) -> ImageTrainingOptions:
    """The image model's training options (seed and default backbone from the settings)."""
    from .modeling.image.options import ImageTrainingOptions

    return ImageTrainingOptions.from_settings(settings, **given_fields(args, ImageTrainingOptions))


class DeferringParser(argparse.ArgumentParser):
    """A parser that adds the options of its ``deferred`` functions when it first parses or prints its help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def _add_deferred(self) -> None:
        while self.deferred:
            self.deferred.pop(0)(self)

    def parse_known_args(self, args=None, namespace=None):
        self._add_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_deferred()
        return super().format_help()


def defer(parser: argparse.ArgumentParser, add: Callable[[argparse.ArgumentParser], None]) -> None:
    """Have a sub-command's parser (a DeferringParser: see cli.build_parser) call ``add`` when it first parses."""
    typing.cast(DeferringParser, parser).deferred.append(add)
