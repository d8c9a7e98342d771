"""What the text and image model services compute for a batch (called on their inference threads)."""

from __future__ import annotations

import typing as t
from concurrent.futures import Executor

from ..data.preprocessing import ImageError, load_image
from ..monitoring.signals import image_brightness


def text_answers(current: tuple[str, t.Any], texts: list[str]) -> list[dict]:
    """Probabilities (27, CATEGORY_CODES order) of already-cleaned product texts, with the model's tag."""
    tag, model = current
    return [{"model": tag, "proba": row} for row in model.predict_proba(texts)]


def image_answers(
    current: tuple[str, t.Any], images: list[bytes], max_pixels: int, view_executor: Executor | None
) -> list[dict]:
    """Probabilities and brightness (for drift) of encoded images; an undecodable one gets an error entry."""
    tag, model = current
    decoded, answers = [], []
    for data in images:
        try:
            decoded.append(load_image(data, max_pixels=max_pixels))
            answers.append({"model": tag, "brightness": round(image_brightness(decoded[-1]), 3)})
        except ImageError as exc:
            answers.append({"model": tag, "error": str(exc)})
    if decoded:
        rows = iter(model.predict_proba(decoded, view_executor=view_executor))
        for answer in answers:
            if "error" not in answer:
                answer["proba"] = next(rows)
    return answers
