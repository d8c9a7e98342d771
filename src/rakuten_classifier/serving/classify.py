"""The entry service's prediction: both model services called concurrently, then fused per product."""

from __future__ import annotations

import asyncio
import typing as t

import numpy as np

from .answers import build_answer
from .errors import ClientError
from .model_workers import encode_image
from .schemas import Product

ModelCall = t.Callable[[list], t.Awaitable[list[dict]]]


async def _nothing() -> list[dict]:
    return []


async def classify(
    items: list[Product],
    fusion: tuple[str, dict],
    text_weight: float | None,
    k: int,
    text_call: ModelCall,
    image_call: ModelCall,
    timeout_s: float,
) -> list[tuple[dict, float | None]]:
    """Each product's answer and its image brightness (None without an image), fused as the production fusion says.

    Each model service is asked for the version this fusion version combines, so every answer is
    computed by one trio, even while a newly promoted one is being adopted.
    """
    fusion_tag, config = fusion
    text_rows = [i for i, item in enumerate(items) if item.text]
    images = {i: item.image for i, item in enumerate(items) if item.image is not None}
    image_rows = list(images)
    text_items = [{"model": config["text_model"], "text": items[i].text} for i in text_rows]
    image_items = [{"model": config["image_model"], "image": encode_image(data)} for data in images.values()]
    text_future = text_call(text_items) if text_rows else _nothing()
    image_future = image_call(image_items) if image_rows else _nothing()
    try:
        text_answers, image_answers = await asyncio.wait_for(asyncio.gather(text_future, image_future), timeout_s)
    except TimeoutError:
        raise ClientError(
            f"prediction took longer than {timeout_s:g} s (RAKUTEN_REQUEST_TIMEOUT_S); try again or send fewer items",
            504,
        ) from None
    for answer in (*text_answers, *image_answers):
        if "unavailable" in answer:  # a version the model service could not load (see /health)
            raise ClientError(f"model {answer['unavailable']}; try again later", 503)
    for answer in image_answers:
        if "error" in answer:
            raise ClientError(f"image could not be decoded: {answer['error']}")
    texts = dict(zip(text_rows, text_answers, strict=True))
    image_by_row = dict(zip(image_rows, image_answers, strict=True))
    results = []
    for i in range(len(items)):
        text_answer, image_answer = texts.get(i), image_by_row.get(i)
        text_p = None if text_answer is None else np.asarray(text_answer["proba"])
        image_p = None if image_answer is None else np.asarray(image_answer["proba"])
        models = {"fusion": fusion_tag}
        if text_answer:
            models["text"] = text_answer["model"]
        if image_answer:
            models["image"] = image_answer["model"]
        answer = build_answer(text_p, image_p, config, text_weight, k, models)
        results.append((answer, image_answer.get("brightness") if image_answer else None))
    return results
