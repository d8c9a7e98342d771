"""Training the image classifier (torchvision ``references/classification`` style: plain functions).

``frozen``: the whole backbone is frozen; pooled features of the centre crop, its mirror and
``aug_views`` seeded augmentations are cached, and a logistic head is fitted on them.
``finetune``: the last ``unfreeze_blocks`` blocks are trained too (see :mod:`.finetune`).
Both are cross-fitted: every hyper-parameter and the temperature are chosen on K-fold
out-of-fold logits of the learning rows, which are returned for the fusion, and the final model
is fitted on all of them.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...categories import CATEGORY_CODES, label_indices
from ..calibration import fit_temperature, softmax
from ..errors import ImageModelError
from ..linear_head import cross_fit_head
from ..scores import logit_scores
from .backbones import backbone_spec
from .classifier import ImageClassifier
from .features import extract_features
from .finetune import cross_fit_finetune
from .head import set_head
from .model_config import NUM_CLASSES, VIEWS_RULE, ImageModelConfig
from .networks import build_blocks, default_device
from .options import ImageTrainingOptions
from .views import View, eval_views

log = logging.getLogger(__name__)


def _has_image(path: object) -> bool:
    return (
        path is not None
        and not (isinstance(path, float) and math.isnan(path))
        and bool(str(path))
        and os.path.isfile(str(path))
    )


def _set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


@dataclass(frozen=True)
class _Rows:
    """The rows that have an image file: which of the rows given (``present``), their paths, labels, folds."""

    present: np.ndarray
    paths: list[str]
    y: np.ndarray
    folds: np.ndarray

    @property
    def skipped(self) -> int:
        return int((~self.present).sum())


def _rows_with_image(paths: Sequence, labels: Sequence[int], folds: np.ndarray) -> _Rows:
    """The rows to train on; ImageModelError when too few have an image to cross-fit a classifier."""
    if len(paths) != len(labels) or len(paths) != len(folds):
        raise ImageModelError(f"{len(paths)} image paths for {len(labels)} labels and {len(folds)} fold numbers")
    present = np.array([_has_image(path) for path in paths], dtype=bool)
    rows = _Rows(
        present,
        [str(path) for path, keep in zip(paths, present, strict=True) if keep],
        label_indices([label for label, keep in zip(labels, present, strict=True) if keep]),
        np.asarray(folds)[present],
    )
    if rows.skipped:
        log.info("%d of %d rows have no image file and are skipped", rows.skipped, len(paths))
    if len(np.unique(rows.folds)) < 2:
        raise ImageModelError(f"only {len(rows.paths)} rows have an image: too few to cross-fit")
    if len(np.unique(rows.y)) < 2:
        raise ImageModelError("the images cover a single category; cannot train a classifier")
    return rows


def untrained_model(options: ImageTrainingOptions, trained: list[int]) -> ImageClassifier:
    """The model `fit_image_model` trains: the backbone's (pretrained) blocks, channels-last, the pooled blocks
    the options ask for and a head not fitted yet; its feature net and tag key the feature cache."""
    spec = backbone_spec(options.backbone)
    blocks = build_blocks(options.backbone, options.pretrained).to(memory_format=torch.channels_last)
    config = ImageModelConfig(
        backbone=options.backbone,
        mode=options.mode,
        tta=options.tta,
        pooled_blocks=spec.stage_blocks if options.resolved_multi_stage else [],
        trained_categories=trained,
    )
    return ImageClassifier(config, blocks)


def training_views(options: ImageTrainingOptions) -> list[View]:
    """The views a model is trained on: the test-time views (or the mirror too), then the seeded augmentations."""
    views = eval_views(options.tta or options.train_mirror)
    return views + [View("augment", seed=options.seed * 100 + i) for i in range(options.resolved_aug_views)]


def _views(options: ImageTrainingOptions) -> tuple[list[View], list[View]]:
    """(training views, test-time views)."""
    return training_views(options), eval_views(options.tta)


def _describe(options: ImageTrainingOptions, device: torch.device, rows: _Rows, model: ImageClassifier) -> dict:
    """What the fit is: the info dict's first part (counts, views, features)."""
    config = model.config
    return {
        "backbone": options.backbone,
        "mode": options.mode,
        "pretrained": options.pretrained,
        "device": str(device),
        "images": len(rows.paths),
        "skipped_no_image": rows.skipped,
        "trained_categories": len(config.trained_categories),
        "aug_views": options.resolved_aug_views,
        "tta": options.tta,
        "views": config.views,
        "views_rule": VIEWS_RULE,
        "multi_stage": bool(config.pooled_blocks),
        "pooled_blocks": ",".join(map(str, config.pooled_blocks)),
        "feature_dim": model.head.in_features,
        "seed": options.seed,
        "folds": len(np.unique(rows.folds)),
    }


def _cross_fit_frozen(
    model: ImageClassifier,
    rows: _Rows,
    views: tuple[list[View], list[View]],
    options: ImageTrainingOptions,
    loader_args: dict[str, Any],
    cache_dir: str | Path | None,
    info: dict,
) -> np.ndarray:
    """``frozen`` mode: pooled features of every view (cached), then the linear head cross-fitted on them and
    copied into ``model``; returns its out-of-fold logits. Adds the cache hits, C and timings to ``info``."""
    started = time.perf_counter()
    train_views, test_views = views
    feature_net, model_tag = model.feature_net(), model.feature_tag()  # the keys predict_proba_cached uses
    features, hits = {}, 0
    for view in train_views:
        features[view], hit = extract_features(
            feature_net, rows.paths, view, model_tag=model_tag, cache_dir=cache_dir, **loader_args
        )
        hits += hit
    info["feature_cache_hits"] = hits
    info["features_s"] = round(time.perf_counter() - started, 2)
    head_started = time.perf_counter()
    head, oof_logits, c_table = cross_fit_head(
        [features[v] for v in train_views],
        [features[v] for v in test_views],
        rows.y,
        rows.folds,
        options.c_grid,
        options.seed,
        "image head",
    )
    set_head(model, head)
    info.update(c_grid=c_table, C=head.C)
    info["head_s"] = round(time.perf_counter() - head_started, 2)
    return oof_logits


def fit_image_model(
    paths: Sequence,
    labels: Sequence[int],
    folds: np.ndarray,
    options: ImageTrainingOptions,
    *,
    cache_dir: str | Path | None = None,
) -> tuple[ImageClassifier, np.ndarray, dict]:
    """Train the image classifier on every row that has an image, cross-fitted over ``folds``.

    Returns the model (head refit on all rows; C and temperature chosen on out-of-fold logits), the
    out-of-fold probabilities (n, 27) of the rows given (NaN where the image is missing), and an
    info dict (counts, out-of-fold metrics, temperature, chosen hyper-parameters, timings).
    Deterministic for a given ``options.seed`` (on CPU). Pooled features are cached under ``cache_dir``.
    """
    started = time.perf_counter()
    rows = _rows_with_image(paths, labels, folds)
    if options.torch_threads:
        torch.set_num_threads(options.torch_threads)
    device = torch.device(options.device) if options.device is not None else default_device()
    log.info(
        "image model %s/%s on %s: %d images (%d rows without one), %d categories, %d folds",
        options.backbone,
        options.mode,
        device,
        len(rows.paths),
        rows.skipped,
        len(np.unique(rows.y)),
        len(np.unique(rows.folds)),
    )
    _set_seed(options.seed)
    model = untrained_model(options, sorted(int(CATEGORY_CODES[i]) for i in np.unique(rows.y))).to(device)
    views = _views(options)
    loader_args: dict[str, Any] = {
        "batch_size": options.batch_size,
        "num_workers": options.num_workers,
        "threads": options.torch_threads,
        "device": device,
        "geometry": backbone_spec(options.backbone).geometry,
    }
    info = _describe(options, device, rows, model)
    if options.mode == "frozen":
        oof_logits = _cross_fit_frozen(model, rows, views, options, loader_args, cache_dir, info)
    else:
        oof_logits = cross_fit_finetune(model, rows.paths, rows.y, rows.folds, *views, info, options, loader_args)

    temperature = fit_temperature(oof_logits, rows.y)
    model.config.temperature = temperature
    info["temperature"] = round(temperature, 4)
    info["oof"] = logit_scores(oof_logits, rows.y, temperature)
    info["fit_s"] = round(time.perf_counter() - started, 2)
    log.info(
        "image model trained in %.1fs: out-of-fold weighted F1 %.3f, accuracy %.3f, temperature %.2f",
        info["fit_s"],
        info["oof"]["weighted_f1"],
        info["oof"]["accuracy"],
        temperature,
    )
    oof_proba = np.full((len(paths), NUM_CLASSES), np.nan)
    oof_proba[rows.present] = softmax(oof_logits, temperature)
    return model.eval(), oof_proba, info
