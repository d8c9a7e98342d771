"""The promotion gate: a candidate trio replaces production only if its fused held-out score is not worse.

Both are scored on the same held-out test rows, which no model, temperature or fusion parameter was
fitted or selected on (pipeline/protocol.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..modeling.fusion import fuse
from ..modeling.scores import classification_scores
from ..registry import Trio, read_fusion_config
from .scoring import image_proba, text_proba


def promotion_decision(candidate_f1: float, production_f1: float | None) -> tuple[bool, str]:
    """Promote unless the candidate's fused test weighted F1 is worse than production's."""
    if production_f1 is None:
        return True, "no production models yet"
    if candidate_f1 >= production_f1:
        return True, f"candidate fused test weighted F1 {candidate_f1:.4f} >= production {production_f1:.4f}"
    return False, f"candidate fused test weighted F1 {candidate_f1:.4f} < production {production_f1:.4f}"


def production_scores(production: Trio, frame: pd.DataFrame, cache_dir: Path | None = None) -> dict:
    """Scores of the production trio on ``frame`` (missing images: text alone; features cached in ``cache_dir``)."""
    config = read_fusion_config(production.fusion)
    fused = fuse(text_proba(production.text, frame), image_proba(production.image, frame, cache_dir), config)
    return classification_scores(frame["label_index"].to_numpy(), fused.argmax(axis=1))
