"""Stored models by tag: each version loaded once per process, with a ModelLoadError that says why not."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from ..registry import model_path
from .errors import ModelLoadError
from .text import TextModel, load_text_model

if TYPE_CHECKING:
    from .image.classifier import ImageClassifier


@lru_cache(maxsize=4)
def text_model_for(tag: str) -> TextModel:
    """The text model stored under ``tag`` (loaded once per process)."""
    return load_text_model(model_path(tag))


@lru_cache(maxsize=4)
def image_model_for(tag: str) -> ImageClassifier:
    """The image model stored under ``tag`` (loaded once per process)."""
    # Lazy: torch takes seconds and hundreds of MB to import, and the entry and text workers never need it.
    from .image.classifier import ImageClassifier

    try:
        return ImageClassifier.load(model_path(tag))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{tag}: cannot load image model ({type(exc).__name__}: {exc})") from exc
