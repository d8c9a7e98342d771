"""Stored models by tag, with a ModelLoadError that says why not: loaded now, or once per process (cached)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..config import get_settings
from ..registry import model_path
from .errors import ModelLoadError

if TYPE_CHECKING:
    from .image.classifier import ImageClassifier
    from .image.onnx_runtime import OnnxImageClassifier
    from .text import TextModel

    ImageModel = ImageClassifier | OnnxImageClassifier

Loaded = TypeVar("Loaded")


def load_text(directory: str | Path) -> TextModel:
    """The text model saved in ``directory``.

    Imported here, not at module scope: scikit-learn, scipy and pandas are ~170 MiB in a process
    (measured 2026-12-04), and the image workers and the entry import this module but never hold a
    text model (docs/serving.md, "What each worker imports").
    """
    from .text_loading import load_text_model

    return load_text_model(directory)


def load_text_version(tag: str) -> TextModel:
    """The text model stored under ``tag``, loaded now (model workers keep their own table of versions)."""
    return load_text(model_path(tag))


def _load_image(tag: str, load: Callable[[Path], Loaded]) -> Loaded:
    """``load`` of the folder stored under ``tag``; any failure is a ModelLoadError that says why."""
    try:
        return load(model_path(tag))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{tag}: cannot load image model ({type(exc).__name__}: {exc})") from exc


def load_image_version(tag: str) -> ImageClassifier:
    """The image model stored under ``tag`` on torch, loaded now; ModelLoadError says why it cannot be."""
    # Lazy: torch takes seconds and hundreds of MB to import, and the entry and text workers never need it.
    from .image.classifier import ImageClassifier

    return _load_image(tag, ImageClassifier.load)


def load_served_image(directory: str | Path) -> ImageModel:
    """The image model saved in ``directory`` on the serving runtime (``RAKUTEN_IMAGE_RUNTIME``).

    ONNX Runtime (numpy, Pillow and onnxruntime: no torch) gets one intra-op thread per call when
    the service runs the test-time views on parallel threads, ``torch_threads`` otherwise; a version
    without its graph (or a graph without the class maps) is refused with a ModelLoadError.
    """
    settings = get_settings()
    if settings.image_runtime == "onnxruntime":
        from .image.onnx_runtime import OnnxImageClassifier

        return OnnxImageClassifier.load(directory, 1 if settings.image_parallel_views else settings.torch_threads)
    try:
        from .image.classifier import ImageClassifier
    except ImportError as exc:
        raise ModelLoadError(
            f"{directory}: RAKUTEN_IMAGE_RUNTIME=torch asks for torch, which is not installed ({exc}): "
            "serve with onnxruntime, or install the training requirements"
        ) from exc
    return ImageClassifier.load(directory)


def load_served_image_version(tag: str) -> ImageModel:
    """The image model stored under ``tag`` on the serving runtime; ModelLoadError says why it cannot be."""
    return _load_image(tag, load_served_image)


# In-process users load each version once per process: the pipeline (scoring, the gate, evaluate)
# with torch, `rakuten predict` and the Python API on the serving runtime (they answer as the service).
text_model_for = lru_cache(maxsize=4)(load_text_version)
image_model_for = lru_cache(maxsize=4)(load_image_version)
served_image_model_for = lru_cache(maxsize=4)(load_served_image_version)
