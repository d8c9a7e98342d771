"""The entry service's prediction: both model services called concurrently, then fused per product.

With ``explain`` the image service returns class maps beside its probabilities and the text service
the word weights of its own most probable category; when the fused category is another one, the text
service is asked, in one more call, for the word weights of that category.
"""

from __future__ import annotations

import asyncio
import typing as t

import numpy as np

from .answers import build_answer, explained_class, image_part
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
    explain: bool = False,
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
    if explain:  # the text model's own top category is most often the fused one: its words come at once
        for item in (*text_items, *image_items):
            item["explain"] = True
    started = asyncio.get_running_loop().time()
    text_future = text_call(text_items) if text_rows else _nothing()
    image_future = image_call(image_items) if image_rows else _nothing()
    text_answers, image_answers = await _within(asyncio.gather(text_future, image_future), started, timeout_s)
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
        answer = build_answer(text_p, image_p, config, text_weight, k, models, explain)
        if explain and image_answer:
            answer["explanation"]["image"] = image_part(image_answer["maps"], explained_class(answer))
        results.append((answer, image_answer.get("brightness") if image_answer else None))
    if explain and text_rows:  # the words' weights for the category each product was given
        missed = []
        for n, i in enumerate(text_rows):
            explanation = results[i][0]["explanation"]
            if texts[i]["explanation"]["prdtypecode"] == explanation["prdtypecode"]:
                explanation["text"] = texts[i]["explanation"]
            else:
                missed.append((i, {"model": text_items[n]["model"], "text": text_items[n]["text"]}))
        if missed:  # a category other than the text model's top one: one more call for its words
            asked = [{**item, "explain_class": explained_class(results[i][0])} for i, item in missed]
            (explained,) = await _within(asyncio.gather(text_call(asked)), started, timeout_s)
            for (i, _), text_answer in zip(missed, explained, strict=True):
                results[i][0]["explanation"]["text"] = text_answer["explanation"]
    return results


async def _within(calls: t.Awaitable[list], started: float, timeout_s: float) -> list:
    """The model services' answers, or a 504 ``timeout_s`` after ``started`` (the event loop's clock); a 503
    for a version a service cannot load."""
    try:
        answers = await asyncio.wait_for(calls, max(0.0, started + timeout_s - asyncio.get_running_loop().time()))
    except TimeoutError:
        raise ClientError(
            f"prediction took longer than {timeout_s:g} s (RAKUTEN_REQUEST_TIMEOUT_S); try again or send fewer items",
            504,
        ) from None
    for answer in (answer for service in answers for answer in service):
        if "unavailable" in answer:  # a version the model service could not load (see /health)
            raise ClientError(f"model {answer['unavailable']}; try again later", 503)
    return answers
