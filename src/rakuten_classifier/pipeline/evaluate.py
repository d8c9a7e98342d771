"""Score the production models on any labelled folder in the challenge layout."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from ..config import Settings, get_settings
from ..modeling.fusion import fuse
from ..modeling.scores import report_text, save_confusion_matrix
from ..registry import read_fusion_config, require_production_trio
from .scoring import image_proba, text_proba, trio_scores
from .training_data import load_training_data

log = logging.getLogger(__name__)


def evaluate_production(
    data_dir: str | Path, split: str | None = None, report_dir: Path | None = None, settings: Settings | None = None
) -> dict:
    """Weighted F1, macro F1 and accuracy of text, image and fused on a folder's labelled rows.

    ``split`` restricts to one split of the folder ('test' scores the held-out rows of the data the
    models were trained on); None scores every labelled row (for a folder the models never saw).
    Image scores cover rows with an image; fused rows without one are decided by the text (`trio_scores`).
    """
    settings = settings or get_settings()
    trio = require_production_trio()
    config = read_fusion_config(trio.fusion)
    data = load_training_data(data_dir=data_dir, settings=settings)
    frame = data.products if split is None else data.split(split)
    labels = frame["label_index"].to_numpy()
    text = text_proba(trio.text, frame)
    image = image_proba(trio.image, frame, settings.features_dir)
    fused = fuse(text, image, config)
    result = {
        **trio_scores(labels, text, image, fused),
        "n": len(frame),
        "split": split or "all",
        "text_weight": config["text_weight"],
        "method": config["method"],
        "models": {"text": trio.text, "image": trio.image, "fusion": trio.fusion},
    }
    if config.get("refit_of") and split == "test":  # not a held-out figure: say so where it is read
        result["warning"] = (
            f"the production trio was refit on every labelled row, the test split included: these are not "
            f"held-out scores (the gated fit {config['refit_of']}'s are in its metadata)"
        )
        log.warning("%s", result["warning"])
    report_dir = report_dir or settings.reports_dir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    report_dir.mkdir(parents=True, exist_ok=True)
    predicted = fused.argmax(axis=1)
    save_confusion_matrix(labels, predicted, report_dir / "fused_confusion_matrix.png", "fused")
    (report_dir / "fused_classification_report.txt").write_text(report_text(labels, predicted))
    (report_dir / "scores.json").write_text(json.dumps(result, indent=2))
    result["report_dir"] = str(report_dir)
    log.info("report written to %s", report_dir)
    return result
