"""Loading stored models and turning probabilities into the API's answer.

Used by the training pipeline (scoring), `rakuten evaluate`, the Python API and the service, so
every path computes predictions the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .categories import CATEGORY_CODES, category_name
from .preprocessing import load_image
from .registry import model_path
from .text_model import ModelLoadError, TextModel, load_text_model

log = logging.getLogger(__name__)

IMAGE_BATCH = 32


@lru_cache(maxsize=4)
def text_model_for(tag: str) -> TextModel:
    """The text model stored under ``tag`` (loaded once per process)."""
    return load_text_model(model_path(tag))


@lru_cache(maxsize=4)
def image_model_for(tag: str):
    """The image model stored under ``tag`` (loaded once per process)."""
    from .image_model import ImageClassifier

    try:
        return ImageClassifier.load(model_path(tag))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{tag}: cannot load image model ({type(exc).__name__}: {exc})") from exc


def _torch_executor(workers: int, torch_threads: int | None, name: str) -> ThreadPoolExecutor:
    """Threads whose torch uses ``torch_threads`` threads each (None: leave torch's setting alone)."""

    def set_threads() -> None:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)

    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=set_threads)


def inference_thread(torch_threads: int | None = None) -> ThreadPoolExecutor:
    """A one-thread executor for every model load and model call of a serving worker.

    Why one thread: torch's OpenMP runtime (GNU libgomp) gives each thread that runs a parallel op
    its own team of worker threads, and once the teams together outnumber the cores it stops
    spin-waiting between ops and puts its threads to sleep. A MobileNetV2 forward is a few hundred
    short parallel ops, each then paying a wake-up: on 2 cores one image took 62 ms when the model
    was loaded on one thread and called from another (BentoML runs sync endpoints in a thread
    pool) against 25-28 ms with load and calls on the same thread (docs/benchmarks.md, "Worker layout").
    """
    return _torch_executor(1, torch_threads, "inference")


def single_thread_torch_pool(count: int) -> ThreadPoolExecutor:
    """Threads that each run torch single-threaded (the service's test-time views, CPU feature extraction).

    Single-threaded torch creates no OpenMP team, so nothing spins or sleeps between ops, and a
    thread preempted by another process on a busy 2-core box delays only its own work instead of
    stalling a 2-thread team at every op.
    """
    return _torch_executor(count, 1, "torch1")


def image_proba_for_paths(model, paths: Sequence[str | None], desc: str = "scoring images") -> np.ndarray:
    """Probabilities for image files; rows whose path is None (or unreadable) are NaN."""
    proba = np.full((len(paths), len(CATEGORY_CODES)), np.nan)
    present = [i for i, p in enumerate(paths) if isinstance(p, str)]
    for start in tqdm(range(0, len(present), IMAGE_BATCH), desc=desc, unit="batch", disable=None):
        batch = present[start : start + IMAGE_BATCH]
        images, kept = [], []
        for i in batch:
            try:
                images.append(load_image(paths[i]))
                kept.append(i)
            except Exception as exc:  # a corrupt file is a missing image, reported, never fatal
                log.warning("%s: unreadable image, scored from text alone (%s)", paths[i], exc)
        if images:
            proba[kept] = model.predict_proba(images)
    return proba


def top_k(proba: np.ndarray, k: int) -> list[dict]:
    """The k most probable categories of one probability vector."""
    order = np.argsort(-proba, kind="stable")[:k]
    return [
        {"prdtypecode": int(CATEGORY_CODES[i]), "category": category_name(CATEGORY_CODES[i]),
         "probability": round(float(proba[i]), 6)}
        for i in order
    ]


def build_answer(
    fused: np.ndarray, text_proba: np.ndarray | None, image_proba: np.ndarray | None,
    text_weight: float, k: int, models: dict,
) -> dict:
    """The JSON answer of /predict_multimodal for one product."""
    best = top_k(fused, k)
    return {
        "prdtypecode": best[0]["prdtypecode"],
        "category": best[0]["category"],
        "probability": best[0]["probability"],
        "top_k": best,
        "text": None if text_proba is None else top_k(text_proba, k),
        "image": None if image_proba is None else top_k(image_proba, k),
        "text_weight": text_weight,
        "models": models,
    }


def coerce_image(image: Image.Image | str | bytes | None) -> Image.Image | None:
    """Accept a PIL image, a path or raw bytes; decode with the shared preprocessing."""
    if image is None:
        return None
    return load_image(image)
