"""The JSON answer of a prediction: the fused top-k, each modality's top-k, the fusion used and the model tags;
with ``explain``, why (modeling/explain.py): the key ``explanation`` with ``text``, ``image`` and ``modalities``."""

from __future__ import annotations

import numpy as np

from ..categories import CATEGORY_CODES, category_name
from ..modeling.explain import image_explanation, modality_shares
from ..modeling.fusion import fuse


def top_k(proba: np.ndarray, k: int) -> list[dict]:
    """The k most probable categories of one probability vector."""
    order = np.argsort(-proba, kind="stable")[:k]
    return [
        {
            "prdtypecode": int(CATEGORY_CODES[i]),
            "category": category_name(CATEGORY_CODES[i]),
            "probability": round(float(proba[i]), 6),
        }
        for i in order
    ]


def build_answer(
    text_proba: np.ndarray | None,
    image_proba: np.ndarray | None,
    fusion: dict,
    text_weight: float | None,
    k: int,
    models: dict,
    explain: bool = False,
) -> dict:
    """The JSON answer for one product: its modalities' probabilities fused as the fusion config says.

    ``text_weight`` is a request's override (None: the stored fusion decides); the answer reports the
    weight and the fusion method used (for a learned combiner, 0.5 is the combiner itself: see
    modeling.fusion.fuse). With ``explain`` the answer's ``explanation`` holds each modality's share
    (``modalities``); its ``text`` and ``image`` parts come from the models (None until then, and
    for a modality the product lacks).
    """
    fused = fuse(
        None if text_proba is None else text_proba[None],
        None if image_proba is None else image_proba[None],
        fusion,
        text_weight,
    )[0]
    best = top_k(fused, k)
    answer = {
        "prdtypecode": best[0]["prdtypecode"],
        "category": best[0]["category"],
        "probability": best[0]["probability"],
        "top_k": best,
        "text": None if text_proba is None else top_k(text_proba, k),
        "image": None if image_proba is None else top_k(image_proba, k),
        "text_weight": fusion["text_weight"] if text_weight is None else float(text_weight),
        "fusion_method": fusion["method"],
        "models": models,
    }
    if explain:
        answer["explanation"] = {
            "prdtypecode": best[0]["prdtypecode"],
            "category": best[0]["category"],
            "text": None,
            "image": None,
            "modalities": modality_shares(text_proba, image_proba, fused, fusion, text_weight),
        }
    return answer


def explained_class(answer: dict) -> int:
    """The probability column of the category an answer explains (its chosen one)."""
    return CATEGORY_CODES.index(answer["prdtypecode"])


def image_part(maps: dict, class_index: int) -> dict:
    """The ``explanation.image`` of one class from an image model's class maps (modeling/image/class_maps.py)."""
    explained = image_explanation(
        np.asarray(maps["maps"]), np.asarray(maps["logits"]), class_index, maps["temperature"]
    )
    return {**explained, "crop": maps["crop"]}
