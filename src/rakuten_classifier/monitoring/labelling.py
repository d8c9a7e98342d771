"""What a drift alert does when there is nothing new to learn from: the drift report and the predictions to label.

The recent window drifted, but no labelled row arrived since the production models were trained:
retraining would fit the same rows again. What helps is labels for the new kind of traffic, so this
writes, into one folder, the HTML drift report of the window and ``to_label.csv``: its predictions,
least confident first (``RAKUTEN_ALERT_LABEL_COUNT`` of them). Each row names a ``prediction_id``:
the catalogue that sent the product labels it through ``POST /corrections`` (with the product's text
and photo and that id), and those corrections are the new labelled rows the next retrain learns from.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import Settings
from .drift import drift_of_recent
from .drift_report import write_report

log = logging.getLogger(__name__)

REPORT_FILE = "drift.html"
TO_LABEL_FILE = "to_label.csv"
# The prediction-log columns listed (the log keeps no text, only its fingerprint: the id finds the product).
LISTED = (
    "id",
    "created_at",
    "endpoint",
    "modality",
    "language",
    "text_length",
    "image_present",
    "prdtypecode",
    "confidence",
)


def labelling_request(settings: Settings, fusion_tag: str, out_dir: Path) -> dict:
    """Write the drift report of the recent window and its predictions to label (least confident first)
    into ``out_dir``; what was written, and the window's verdict."""
    found = drift_of_recent(settings, fusion_tag, last=settings.drift_window)
    if found is None:
        return {"report": None, "to_label": None, "listed": 0, "drifted": None, "drifted_features": []}
    result, profile, recent = found
    out_dir.mkdir(parents=True, exist_ok=True)
    report = write_report(result, profile, recent, out_dir / REPORT_FILE, fusion_tag)
    listed = (
        recent.sort_values("confidence", kind="stable")
        .head(settings.alert_label_count)
        .loc[:, list(LISTED)]
        .rename(columns={"id": "prediction_id", "prdtypecode": "predicted"})
    )
    listed.to_csv(out_dir / TO_LABEL_FILE, index=False)
    log.info("drift report %s; %d predictions to label in %s", report, len(listed), out_dir / TO_LABEL_FILE)
    return {
        "report": str(report),
        "to_label": str(out_dir / TO_LABEL_FILE),
        "listed": len(listed),
        "window": result["window"],
        "drifted": result["drifted"],
        "drift_score": result["drift_score"],
        "drifted_features": result["drifted_features"],
    }
