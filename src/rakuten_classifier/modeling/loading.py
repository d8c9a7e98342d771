"""Stored models by tag, with a ModelLoadError that says why not: loaded now, or once per process (cached)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from ..registry import model_path
from .errors import ModelLoadError
from .text import TextModel, load_text_model

if TYPE_CHECKING:
    from .image.classifier import ImageClassifier


def load_text_version(tag: str) -> TextModel:
    """The text model stored under ``tag``, loaded now (model workers keep their own table of versions)."""
    return load_text_model(model_path(tag))


def load_image_version(tag: str) -> ImageClassifier:
    """The image model stored under ``tag``, loaded now; ModelLoadError says why it cannot be."""
    # Lazy: torch takes seconds and hundreds of MB to import, and the entry and text workers never need it.
    from .image.classifier import ImageClassifier

    try:
        return ImageClassifier.load(model_path(tag))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{tag}: cannot load image model ({type(exc).__name__}: {exc})") from exc


# In-process users (pipeline scoring, `rakuten predict`) load each version once per process.
text_model_for = lru_cache(maxsize=4)(load_text_version)
image_model_for = lru_cache(maxsize=4)(load_image_version)
