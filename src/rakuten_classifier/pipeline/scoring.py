"""Probabilities of stored models for rows of a frame (cached per process), image files scored in batches,
and the scores of a trio's probabilities."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..categories import CATEGORY_CODES
from ..data.preprocessing import ImageError, load_image
from ..modeling.errors import ImageModelError
from ..modeling.image.classifier import ImageClassifier
from ..modeling.loading import image_model_for, text_model_for
from ..modeling.scores import classification_scores

log = logging.getLogger(__name__)

IMAGE_BATCH = 32


# Probabilities are cached per (model tag, rows) within a process: train_all scores the same
# held-out rows with the same models in several steps (each model's step, the fusion, the gate).
_PROBA_CACHE: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}


def remember_proba(tag: str, frame: pd.DataFrame, proba: np.ndarray) -> None:
    """Record probabilities a training step already computed for the stored model ``tag`` on ``frame``."""
    _PROBA_CACHE[(tag, tuple(frame["productid"]))] = proba


def text_proba(tag: str, frame: pd.DataFrame) -> np.ndarray:
    """Text probabilities of the stored model ``tag`` for the rows of ``frame``."""
    key = (tag, tuple(frame["productid"]))
    if key not in _PROBA_CACHE:
        _PROBA_CACHE[key] = text_model_for(tag).predict_proba(frame["text"].tolist())
    return _PROBA_CACHE[key]


def image_proba(tag: str, frame: pd.DataFrame, cache_dir: Path | None = None) -> np.ndarray:
    """Image probabilities of the stored model ``tag``; NaN rows where the image is missing.

    With a ``cache_dir``, a frozen model's backbone features come from the feature cache.
    """
    key = (tag, tuple(frame["productid"]))
    if key not in _PROBA_CACHE:
        _PROBA_CACHE[key] = image_proba_for_paths(image_model_for(tag), frame["image_path"].tolist(), cache_dir)
    return _PROBA_CACHE[key]


def image_proba_for_paths(
    model: ImageClassifier, paths: Sequence[str | None], cache_dir: Path | None = None, desc: str = "scoring images"
) -> np.ndarray:
    """Probabilities for image files; rows whose path is None (or unreadable) are NaN.

    With a ``cache_dir`` and a frozen model, the backbone runs only over images the feature cache
    does not hold (a retraining scores the same held-out photos again: seconds instead of ~15 s on 2
    cores for the sample's 300). If any file cannot be read, every image is scored one batch at a time.
    """
    proba = np.full((len(paths), len(CATEGORY_CODES)), np.nan)
    present = [i for i, p in enumerate(paths) if isinstance(p, str)]
    if cache_dir is not None and model.config.mode == "frozen" and present:
        try:
            proba[present] = model.predict_proba_cached([str(paths[i]) for i in present], cache_dir)
            return proba
        except (ImageModelError, ImageError) as exc:
            log.warning("scoring image by image: %s", exc)
    for start in tqdm(range(0, len(present), IMAGE_BATCH), desc=desc, unit="batch", disable=None):
        batch = present[start : start + IMAGE_BATCH]
        images, kept = [], []
        for i in batch:
            path = paths[i]
            assert path is not None  # `present` holds the rows with a path
            try:
                images.append(load_image(path))
                kept.append(i)
            except Exception as exc:  # a corrupt file is a missing image, reported, never fatal
                log.warning("%s: unreadable image, scored from text alone (%s)", paths[i], exc)
        if images:
            proba[kept] = model.predict_proba(images)
    return proba


def trio_scores(labels: np.ndarray, text: np.ndarray, image: np.ndarray, fused: np.ndarray) -> dict:
    """Scores of a trio's text, image and fused probabilities on labelled rows.

    Image scores cover the rows with an image (NaN image rows have none); fused rows without one
    are decided by the text. The ``*_on_rows_with_image`` scores compare fused and text on the same rows.
    """
    with_image = ~np.isnan(image).any(axis=1)
    return {
        "text": classification_scores(labels, text.argmax(axis=1)),
        "image": classification_scores(labels[with_image], image[with_image].argmax(axis=1)),
        "fused": classification_scores(labels, fused.argmax(axis=1)),
        "fused_on_rows_with_image": classification_scores(labels[with_image], fused[with_image].argmax(axis=1)),
        "text_on_rows_with_image": classification_scores(labels[with_image], text[with_image].argmax(axis=1)),
        "images_missing": int((~with_image).sum()),
    }
