"""The promotion gate: a candidate trio replaces production only if its fused score is not worse."""

from __future__ import annotations

import pandas as pd

from ..modeling.fusion import fuse_probabilities
from ..modeling.scores import classification_scores
from .scoring import image_proba, text_proba


def promotion_decision(candidate_f1: float, production_f1: float | None) -> tuple[bool, str]:
    """The promotion gate: promote unless the candidate's fused test weighted F1 is worse than production's."""
    if production_f1 is None:
        return True, "no production models yet"
    if candidate_f1 >= production_f1:
        return True, f"candidate fused test weighted F1 {candidate_f1:.4f} >= production {production_f1:.4f}"
    return False, f"candidate fused test weighted F1 {candidate_f1:.4f} < production {production_f1:.4f}"


def fused_scores(text_tag: str, image_tag: str, weight: float, method: str, frame: pd.DataFrame) -> dict:
    """Scores of a text/image/weight combination on ``frame`` (missing images: text alone)."""
    fused = fuse_probabilities(text_proba(text_tag, frame), image_proba(image_tag, frame), weight, method)
    return classification_scores(frame["label_index"].to_numpy(), fused.argmax(axis=1))
