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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...categories import CATEGORY_CODES, label_indices
from ..calibration import fit_temperature, softmax
from ..errors import ImageModelError
from .backbones import backbone_spec
from .classifier import ImageClassifier
from .features import extract_features
from .finetune import cross_fit_finetune
from .head import cross_fit_head, metrics, set_head
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


def fit_image_model(
    paths: Sequence,
    labels: Sequence[int],
    folds: np.ndarray,
    options: ImageTrainingOptions | None = None,
    *,
    cache_dir: str | Path | None = None,
) -> tuple[ImageClassifier, np.ndarray, dict]:
    """Train the image classifier on every row that has an image, cross-fitted over ``folds``.

    Returns the model (head refit on all rows; C and temperature chosen on out-of-fold logits), the
    out-of-fold probabilities (n, 27) of the rows given (NaN where the image is missing), and an
    info dict (counts, out-of-fold metrics, temperature, chosen hyper-parameters, timings).
    Deterministic for a given ``options.seed`` (on CPU). Pooled features are cached under ``cache_dir``.
    """
    options = options or ImageTrainingOptions()
    backbone, mode, seed = options.backbone, options.mode, options.seed
    if len(paths) != len(labels) or len(paths) != len(folds):
        raise ImageModelError(f"{len(paths)} image paths for {len(labels)} labels and {len(folds)} fold numbers")
    spec = backbone_spec(backbone)
    if options.torch_threads:
        torch.set_num_threads(options.torch_threads)
    device = torch.device(options.device) if options.device is not None else default_device()
    started = time.perf_counter()
    _set_seed(seed)

    present = np.array([_has_image(path) for path in paths], dtype=bool)
    kept_paths = [str(path) for path, keep in zip(paths, present, strict=True) if keep]
    y = label_indices([label for label, keep in zip(labels, present, strict=True) if keep])
    kept_folds = np.asarray(folds)[present]
    skipped = int((~present).sum())
    if skipped:
        log.info("%d of %d rows have no image file and are skipped", skipped, len(paths))
    if len(np.unique(kept_folds)) < 2:
        raise ImageModelError(f"only {len(kept_paths)} rows have an image: too few to cross-fit")
    if len(np.unique(y)) < 2:
        raise ImageModelError("the images cover a single category; cannot train a classifier")
    trained = sorted(int(CATEGORY_CODES[i]) for i in np.unique(y))
    log.info(
        "image model %s/%s on %s: %d images (%d rows without one), %d categories, %d folds",
        backbone,
        mode,
        device,
        len(kept_paths),
        skipped,
        len(trained),
        len(np.unique(kept_folds)),
    )

    model = untrained_model(options, trained).to(device)
    config = model.config
    aug_views = options.resolved_aug_views
    train_views = training_views(options)
    test_views = eval_views(options.tta)
    loader_args: dict[str, Any] = {
        "batch_size": options.batch_size,
        "num_workers": options.num_workers,
        "threads": options.torch_threads,
        "device": device,
        "geometry": spec.geometry,
    }
    info: dict = {
        "backbone": backbone,
        "mode": mode,
        "pretrained": options.pretrained,
        "device": str(device),
        "images": len(kept_paths),
        "skipped_no_image": skipped,
        "trained_categories": len(trained),
        "aug_views": aug_views,
        "tta": options.tta,
        "views": config.views,
        "views_rule": VIEWS_RULE,
        "multi_stage": bool(config.pooled_blocks),
        "pooled_blocks": ",".join(map(str, config.pooled_blocks)),
        "feature_dim": model.head.in_features,
        "seed": seed,
        "folds": len(np.unique(kept_folds)),
    }

    if mode == "frozen":
        feature_net, model_tag = model.feature_net(), model.feature_tag()  # the keys predict_proba_cached uses
        features, hits = {}, 0
        for view in train_views:
            features[view], hit = extract_features(
                feature_net, kept_paths, view, model_tag=model_tag, cache_dir=cache_dir, **loader_args
            )
            hits += hit
        info["feature_cache_hits"] = hits
        info["features_s"] = round(time.perf_counter() - started, 2)
        head_started = time.perf_counter()
        weight, bias, oof_logits, head_info = cross_fit_head(
            [features[v] for v in train_views], [features[v] for v in test_views], y, kept_folds, options.c_grid, seed
        )
        set_head(model, weight, bias)
        info.update(head_info)
        info["head_s"] = round(time.perf_counter() - head_started, 2)
    else:
        oof_logits = cross_fit_finetune(
            model, kept_paths, y, kept_folds, train_views, test_views, info, options, loader_args
        )

    temperature = fit_temperature(oof_logits, y)
    model.config.temperature = temperature
    info["temperature"] = round(temperature, 4)
    info["oof"] = metrics(oof_logits, y, temperature)
    info["fit_s"] = round(time.perf_counter() - started, 2)
    log.info(
        "image model trained in %.1fs: out-of-fold weighted F1 %.3f, accuracy %.3f, temperature %.2f",
        info["fit_s"],
        info["oof"]["weighted_f1"],
        info["oof"]["accuracy"],
        temperature,
    )
    oof_proba = np.full((len(paths), NUM_CLASSES), np.nan)
    oof_proba[present] = softmax(oof_logits, temperature)
    return model.eval(), oof_proba, info
