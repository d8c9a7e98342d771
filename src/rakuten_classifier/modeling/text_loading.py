"""Loading a saved text model folder of either kind (its JSON config says which)."""

from __future__ import annotations

import json
from pathlib import Path

from ..categories import CATEGORY_CODES
from .errors import ModelLoadError
from .text import CONFIG_FILE, TextModel, TfidfTextModel
from .text_transformer import TransformerTextModel


def load_text_model(directory: str | Path) -> TextModel:
    """Load a text model folder of either kind; ModelLoadError says what is wrong."""
    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
        if list(config["classes"]) != list(CATEGORY_CODES):
            raise ModelLoadError(f"{directory}: class list differs from this code's categories")
        if config["kind"] == "tfidf":
            return TfidfTextModel.load(directory, config)
        if config["kind"] == "transformer":
            return TransformerTextModel.load(directory, config)
        raise ModelLoadError(f"{directory}: unknown text model kind {config['kind']!r}")
    except ModelLoadError:
        raise
    except Exception as exc:  # missing file, truncated pickle, bad JSON, unknown kind...
        raise ModelLoadError(f"{directory}: cannot load text model ({type(exc).__name__}: {exc})") from exc
