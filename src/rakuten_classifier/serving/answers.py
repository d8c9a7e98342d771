"""The JSON answer of a prediction: the fused top-k, each modality's top-k, the weight and the model tags."""

from __future__ import annotations

import numpy as np

from ..categories import CATEGORY_CODES, category_name


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
    fused: np.ndarray,
    text_proba: np.ndarray | None,
    image_proba: np.ndarray | None,
    text_weight: float,
    k: int,
    models: dict,
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
