"""Training's image features on Spark: `rakuten train image --engine spark` (and `train all`).

The step whose time grows with the photos is the frozen backbone over every photo (tens of minutes on 2 cores
at the challenge's size). Here Spark tasks run it, each over a slice of the photos, with the very function
the single-process step runs (`modeling.image.features.extract_features`: ONNX Runtime on one thread per
task), writing the same `.npz` shards into the same feature cache under the same keys. The training run
that follows (`steps.train_image`, unchanged) then finds every feature cached and goes straight to the
head, text and fusion fits. A task lost with its executor is run again by Spark; the shards it had
written are whole files named by their photos, so a rerun rewrites the same ones.

The network reaches the executors as a broadcast variable (torch must be installed there: the training
image); the cache folder and the photos must be on storage every executor mounts (one machine, or a
shared volume on a cluster: docs/scale.md). Only centre views are computed here: seeded augmentations
(``--aug-views``, off by default) depend on an image's position in its batch and stay in the training run.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from pyspark import Broadcast
from pyspark.sql import SparkSession

from ..config import Settings
from ..data.preprocessing import Geometry
from ..modeling.image.features import SHARD_IMAGES, extract_features
from ..modeling.image.options import ImageTrainingOptions
from ..modeling.image.training import training_views, untrained_model
from ..modeling.image.views import View, eval_views
from ..pipeline.training_data import TrainingData
from .session import build_session, default_parallelism

log = logging.getLogger(__name__)


def _photos(paths: Any) -> list[str]:
    """The paths of the files that exist, in order and without repeats (what the training run keeps)."""
    return list(dict.fromkeys(str(p) for p in paths if isinstance(p, str) and os.path.isfile(p)))


def feature_work(data: TrainingData, options: ImageTrainingOptions) -> list[tuple[View, list[str]]]:
    """The (centre view, photos) pairs a training run reads from the cache: the learning photos under every
    centre training view, the held-out photos under the test-time views (scored by the trained model)."""
    learning, test = _photos(data.learning()["image_path"]), _photos(data.split("test")["image_path"])
    work = [(view, learning) for view in training_views(options) if view.kind == "center"]
    for view in eval_views(options.tta):
        known = next((set(paths) for v, paths in work if v == view), set())
        extra = [path for path in test if path not in known]
        if extra:
            work.append((view, extra))
    return work


def _extract(net: Broadcast, model_tag: str, geometry: Geometry, cache_dir: str, item: tuple) -> dict:
    """One task: a view of a slice of photos through the backbone into the cache (cached ones are skipped)."""
    import torch

    torch.set_num_threads(1)  # one task per core: its ONNX Runtime call and torch's export on one thread
    view, paths = item
    started = time.perf_counter()
    _, hit = extract_features(net.value, paths, view, geometry, model_tag=model_tag, cache_dir=cache_dir, threads=1)
    return {"view": view.tag(), "photos": len(paths), "cached": hit, "seconds": time.perf_counter() - started}


def fill_feature_cache(
    spark: SparkSession, data: TrainingData, options: ImageTrainingOptions, cache_dir: str | Path
) -> dict:
    """Compute every centre-view feature the training run with ``options`` will read, on Spark, into ``cache_dir``.

    Each task takes at most SHARD_IMAGES photos (so its shard is the size the single-process step writes) and
    at least enough tasks run for every core to have one. Returns counts and seconds.
    """
    if options.mode != "frozen":
        raise ValueError(f"--engine spark computes a frozen backbone's features; mode {options.mode!r} trains it")
    started = time.perf_counter()
    model = untrained_model(options, trained=[])
    net, model_tag, geometry = model.feature_net().eval(), model.feature_tag(), model.geometry
    cores = default_parallelism(spark)
    items = []
    for view, paths in feature_work(data, options):
        size = max(1, min(SHARD_IMAGES, math.ceil(len(paths) / cores)))
        items += [(view, paths[start : start + size]) for start in range(0, len(paths), size)]
    if not items:
        raise ValueError("no photo to extract features from")
    shared = spark.sparkContext.broadcast(net)
    try:
        tasks = (
            spark.sparkContext.parallelize(items, len(items))
            .map(lambda item: _extract(shared, model_tag, geometry, str(cache_dir), item))
            .collect()
        )
    finally:
        shared.unpersist()
    result = {
        "photos": sum(task["photos"] for task in tasks),
        "photos_already_cached": sum(task["photos"] for task in tasks if task["cached"]),
        "views": sorted({task["view"] for task in tasks}),
        "tasks": len(tasks),
        "task_seconds": round(sum(task["seconds"] for task in tasks), 1),
        "seconds": round(time.perf_counter() - started, 1),
        "cache_dir": str(cache_dir),
        "master": spark.sparkContext.master,
    }
    log.info("image features on Spark: %s", result)
    return result


def features_with_spark(
    data: TrainingData, options: ImageTrainingOptions, settings: Settings, master: str | None = None
) -> dict:
    """`--engine spark` of `rakuten train`: a session on ``master``, the features into ``settings.features_dir``,
    the session stopped."""
    spark, startup_s = build_session(settings, master)
    try:
        return {**fill_feature_cache(spark, data, options, settings.features_dir), "startup_s": round(startup_s, 1)}
    finally:
        spark.stop()
