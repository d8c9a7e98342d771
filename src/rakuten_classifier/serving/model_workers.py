"""What the text and image model services compute for a batch (called on their inference threads).

Each item names the model version that must compute it (``{"model": tag, "text": ...}`` or
``{"model": tag, "image": <base64 of the encoded image>}``): the entry asks for the versions its
fusion version combines, so one batch may hold items for the outgoing and the incoming version
during a swap. Items and answers are JSON (base64 images, probabilities as lists): a model
service run apart (``RAKUTEN_IMAGE_SERVICE_URL``) is called with JSON, not pickle. With ``explain``
a text item gets the word weights of its most probable class beside its probabilities (or, with
``explain_class``, those of that class alone), an image item its class maps (modeling/explain.py).
"""

from __future__ import annotations

import asyncio
import base64
import typing as t
from concurrent.futures import Executor

from ..data.preprocessing import ImageError, load_image
from ..modeling.explain import text_explanation
from ..modeling.image.class_maps import image_maps
from ..monitoring.signals import image_brightness
from .hot_swap import ModelVersions
from .metrics import EMBEDDING_MEMORY


def encode_image(data: bytes) -> str:
    """An encoded image as it travels to the image model service (JSON-safe)."""
    return base64.b64encode(data).decode("ascii")


def _by_version(items: list[dict]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item["model"], []).append(i)
    return groups


def _model_or_error(versions: ModelVersions, tag: str) -> tuple[t.Any, str | None]:
    try:
        return versions.get(tag), None
    except Exception as exc:  # answered per item (the entry says 503), never a failed batch for the others
        return None, f"{tag} cannot be loaded ({type(exc).__name__}: {exc})"


def _memory_counts(model: t.Any) -> tuple[int, int]:
    """Hits and misses so far of a text model's memory of recent embeddings (0, 0 without an encoder)."""
    channel = getattr(model, "channel", None)
    return (channel.encoder.hits, channel.encoder.misses) if channel is not None else (0, 0)


def text_answers(versions: ModelVersions, items: list[dict]) -> list[dict]:
    """Probabilities (27, CATEGORY_CODES order) of already-cleaned product texts, each by the version it names.

    An item with ``explain`` also gets why the model scores it for its most probable class, an item
    with ``explain_class`` (a class's column) only why it scores it for that class.
    """
    answers: list[dict] = [{} for _ in items]
    for tag, rows in _by_version(items).items():
        model, error = _model_or_error(versions, tag)
        if model is None:
            for i in rows:
                answers[i] = {"model": tag, "unavailable": error}
            continue
        for i in rows:
            answers[i] = {"model": tag}
            if "explain_class" in items[i]:
                answers[i]["explanation"] = text_explanation(model, items[i]["text"], items[i]["explain_class"])
        scored = [i for i in rows if "explain_class" not in items[i]]
        hits, misses = _memory_counts(model)
        probabilities = model.predict_proba([items[i]["text"] for i in scored]) if scored else []
        for result, before, after in zip(("hit", "miss"), (hits, misses), _memory_counts(model), strict=True):
            if after > before:
                EMBEDDING_MEMORY.labels(result=result).inc(after - before)
        for i, proba in zip(scored, probabilities, strict=True):
            answers[i]["proba"] = proba.tolist()
            if items[i].get("explain"):
                answers[i]["explanation"] = text_explanation(model, items[i]["text"], int(proba.argmax()))
    return answers


def image_answers(
    versions: ModelVersions, items: list[dict], max_pixels: int, view_executor: Executor | None
) -> list[dict]:
    """Probabilities and brightness (for drift) of encoded images; an undecodable one gets an error entry."""
    answers: list[dict] = [{} for _ in items]
    for tag, rows in _by_version(items).items():
        model, error = _model_or_error(versions, tag)
        decoded, decoded_rows = [], []
        for i in rows:
            if model is None:
                answers[i] = {"model": tag, "unavailable": error}
                continue
            try:
                decoded.append(load_image(base64.b64decode(items[i]["image"]), max_pixels=max_pixels))
                decoded_rows.append(i)
                answers[i] = {"model": tag, "brightness": round(image_brightness(decoded[-1]), 3)}
            except ImageError as exc:
                answers[i] = {"model": tag, "error": str(exc)}
        images = dict(zip(decoded_rows, decoded, strict=True))
        plain = [i for i in decoded_rows if not items[i].get("explain")]
        explained = [i for i in decoded_rows if items[i].get("explain")]  # class maps come with their probabilities
        if plain:
            found = model.predict_proba([images[i] for i in plain], view_executor=view_executor)
            for i, proba in zip(plain, found, strict=True):
                answers[i]["proba"] = proba.tolist()
        if explained:
            for i, maps in zip(
                explained, image_maps(model, [images[i] for i in explained], view_executor), strict=True
            ):
                answers[i].update({"proba": maps.pop("proba").tolist(), "maps": maps})
    return answers


def load_versions(
    executor: Executor,
    model_ref: t.Any,
    load_path: t.Callable[[str], t.Any],
    load_tag: t.Callable[[str], t.Any],
) -> ModelVersions:
    """A model service's versions, starting with its declared model (loaded on the worker's inference thread)."""
    model = executor.submit(load_path, model_ref.path).result()
    return ModelVersions(str(model_ref.tag), model, load_tag)


async def prepare_version(executor: Executor, versions: ModelVersions, tag: str) -> dict:
    """Load ``tag`` on the inference thread before the entry names it; an error entry when it cannot load."""
    try:
        await asyncio.get_running_loop().run_in_executor(executor, versions.get, tag)
    except Exception as exc:  # the entry refuses the trio and keeps serving the last good one
        return {"error": f"{tag}: {type(exc).__name__}: {exc}"}
    return {"loaded": versions.loaded}
