"""In-process prediction with the production models (the Python API; the service computes the same thing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..data.preprocessing import load_image, product_text
from ..modeling.fusion import fuse_probabilities
from ..modeling.loading import image_model_for, text_model_for
from ..registry import ProductionModels, current_models, read_fusion_config
from .answers import build_answer


def predict_multimodal(
    designation: str | None = None,
    description: str | None = "",
    image: Image.Image | str | Path | bytes | None = None,
    text_weight: float | None = None,
    top_k: int = 5,
    models: ProductionModels | None = None,
) -> dict:
    """Classify one product from its text and/or image with the production models."""
    models = models or current_models()
    config = read_fusion_config(models.fusion)
    text = product_text(designation, description)
    picture = None if image is None else load_image(str(image) if isinstance(image, Path) else image)
    if not text and picture is None:
        raise ValueError("give a designation, an image, or both")
    if not 1 <= top_k <= len(config["classes"]):
        raise ValueError(f"top_k must lie in 1..{len(config['classes'])}")
    weight = config["text_weight"] if text_weight is None else float(text_weight)
    text_proba = text_model_for(models.text).predict_proba([text])[0] if text else None
    image_proba = image_model_for(models.image).predict_proba([picture])[0] if picture is not None else None
    fused = fuse_probabilities(
        None if text_proba is None else text_proba[None],
        None if image_proba is None else image_proba[None],
        weight,
        config["method"],
    )[0]
    tags = {"text": models.text, "image": models.image, "fusion": models.fusion}
    return build_answer(np.asarray(fused), text_proba, image_proba, weight, top_k, tags)
