"""Training the image classifier (torchvision ``references/classification`` style: plain functions).

``frozen``: the whole backbone is frozen; pooled features of the centre crop, its mirror and
``aug_views`` seeded augmentations are cached, and a logistic head is fitted on them.
``finetune``: the last ``unfreeze_blocks`` blocks are trained too (see :mod:`.finetune`).
Probabilities are temperature-scaled on the validation rows because they are fused with the text model's.
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
from torch import nn

from ...categories import CATEGORY_CODES
from ..errors import ImageModelError
from .backbones import backbone_spec, build_blocks, default_device
from .classifier import ImageClassifier, ImageModelConfig
from .features import extract_features
from .finetune import finetune
from .head import fit_temperature, metrics, set_head_from_logistic
from .options import ImageTrainingOptions
from .transforms import View, eval_views

log = logging.getLogger(__name__)


def _label_indices(labels: Sequence[int]) -> np.ndarray:
    index = {code: i for i, code in enumerate(CATEGORY_CODES)}
    try:
        return np.array([index[int(code)] for code in labels], dtype=np.int64)
    except KeyError as exc:
        raise ImageModelError(f"unknown category code {exc.args[0]}; expected one of CATEGORY_CODES") from None


def _keep_existing(paths: Sequence, labels: Sequence[int], split: str) -> tuple[list[str], list[int], int]:
    if len(paths) != len(labels):
        raise ImageModelError(f"{split}: {len(paths)} image paths for {len(labels)} labels")
    kept = [
        (str(p), int(y))
        for p, y in zip(paths, labels, strict=False)
        if p is not None and not (isinstance(p, float) and math.isnan(p)) and str(p) and os.path.isfile(str(p))
    ]
    skipped = len(paths) - len(kept)
    if skipped:
        log.info("%s: %d of %d rows have no image file and are skipped", split, skipped, len(paths))
    return [p for p, _ in kept], [y for _, y in kept], skipped


def _set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def fit_image_model(
    train_paths: Sequence,
    train_labels: Sequence[int],
    val_paths: Sequence,
    val_labels: Sequence[int],
    options: ImageTrainingOptions | None = None,
    *,
    cache_dir: str | Path | None = None,
) -> tuple[ImageClassifier, dict]:
    """Train the image classifier; rows whose image is missing (None / absent file) are skipped and counted.

    Returns the model and an info dict (skipped counts, validation metrics, temperature, chosen
    hyper-parameters, timings). Deterministic for a given ``options.seed`` (on CPU). Pooled
    features are cached under ``cache_dir`` (frozen mode).
    """
    options = options or ImageTrainingOptions()
    backbone, mode, seed = options.backbone, options.mode, options.seed
    spec = backbone_spec(backbone)
    if options.torch_threads:
        torch.set_num_threads(options.torch_threads)
    device = torch.device(options.device) if options.device is not None else default_device()
    started = time.perf_counter()
    _set_seed(seed)

    train_paths, train_labels, train_skipped = _keep_existing(train_paths, train_labels, "train")
    val_paths, val_labels, val_skipped = _keep_existing(val_paths, val_labels, "val")
    if len(train_paths) < 2:
        raise ImageModelError(f"only {len(train_paths)} training rows have an image; cannot train")
    if not val_paths:
        raise ImageModelError("no validation rows have an image; cannot select or calibrate")
    y_train, y_val = _label_indices(train_labels), _label_indices(val_labels)
    if len(np.unique(y_train)) < 2:
        raise ImageModelError("training images cover a single category; cannot train a classifier")
    trained = sorted(int(CATEGORY_CODES[i]) for i in np.unique(y_train))
    log.info(
        "image model %s/%s on %s: %d train images (%d rows skipped, no image), %d val images (%d skipped), "
        "%d categories",
        backbone,
        mode,
        device,
        len(train_paths),
        train_skipped,
        len(val_paths),
        val_skipped,
        len(trained),
    )

    blocks = build_blocks(backbone, options.pretrained).to(memory_format=torch.channels_last)
    config = ImageModelConfig(backbone=backbone, mode=mode, tta=options.tta, trained_categories=trained)
    model = ImageClassifier(config, blocks).to(device)
    model_tag = f"{backbone}-{spec.weights if options.pretrained else f'random{seed}'}"
    aug_views = options.resolved_aug_views
    train_views = eval_views(True) + [View("augment", seed=seed * 100 + i) for i in range(aug_views)]
    val_views = eval_views(options.tta)
    loader_args: dict[str, Any] = {
        "batch_size": options.batch_size,
        "num_workers": options.num_workers,
        "threads": options.torch_threads,
        "device": device,
    }
    info: dict = {
        "backbone": backbone,
        "mode": mode,
        "pretrained": options.pretrained,
        "device": str(device),
        "train_images": len(train_paths),
        "val_images": len(val_paths),
        "train_skipped_no_image": train_skipped,
        "val_skipped_no_image": val_skipped,
        "trained_categories": len(trained),
        "aug_views": aug_views,
        "tta": options.tta,
        "seed": seed,
    }

    if mode == "frozen":
        feature_net = nn.Sequential(model.blocks, model.pool)
        hits = 0
        tr_feats = []
        for view in train_views:
            feats, hit = extract_features(
                feature_net, train_paths, view, model_tag=model_tag, cache_dir=cache_dir, **loader_args
            )
            tr_feats.append(feats)
            hits += hit
        va_feats = []
        for view in val_views:
            feats, hit = extract_features(
                feature_net, val_paths, view, model_tag=model_tag, cache_dir=cache_dir, **loader_args
            )
            va_feats.append(feats)
            hits += hit
        info["feature_cache_hits"] = hits
        info["features_s"] = round(time.perf_counter() - started, 2)
        head_started = time.perf_counter()
        weight, bias = set_head_from_logistic(model, tr_feats, y_train, va_feats, y_val, options.c_grid, seed, info)
        info["head_s"] = round(time.perf_counter() - head_started, 2)
        val_logits = torch.as_tensor(np.mean([f @ weight.numpy().T + bias.numpy() for f in va_feats], axis=0))
    else:
        val_logits = finetune(
            model, train_paths, y_train, val_paths, y_val, train_views, val_views, info, options, loader_args
        )

    temperature = fit_temperature(val_logits.numpy(), y_val)
    model.config.temperature = temperature
    info["temperature"] = round(temperature, 4)
    info["val"] = metrics(val_logits, y_val, temperature)
    info["fit_s"] = round(time.perf_counter() - started, 2)
    log.info(
        "image model trained in %.1fs: val weighted F1 %.3f, accuracy %.3f, temperature %.2f",
        info["fit_s"],
        info["val"]["f1_weighted"],
        info["val"]["accuracy"],
        temperature,
    )
    return model.eval(), info


def evaluate(
    model: ImageClassifier,
    paths: Sequence[str | Path],
    labels: Sequence[int],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
) -> dict[str, float]:
    """Weighted F1, accuracy, log-loss (with the model's temperature) on labelled image files."""
    paths, labels, skipped = _keep_existing(paths, labels, "evaluate")
    logits = model.predict_logits_sources(paths, batch_size, num_workers)
    result = metrics(logits, _label_indices(labels), model.config.temperature)
    result["skipped_no_image"] = skipped
    return result
