"""The fusion step: choose the combiner on out-of-fold predictions, score it on the held-out rows, gate it.

Every candidate combiner (modeling/fusion_selection.py) is scored by nested cross-validation over
the text and image models' stored out-of-fold probabilities; the best is refit on all of them. The
held-out test rows only score the result and feed the promotion gate.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..categories import CATEGORY_CODES
from ..config import Settings, get_settings
from ..data.reader import DataError
from ..modeling.fusion import fuse
from ..modeling.fusion_selection import select_fusion
from ..modeling.scores import classification_scores
from ..monitoring.drift import build_profile, reference_features, save_profile
from ..registry import (
    FUSION_FILE,
    FUSION_MODEL,
    IMAGE_MODEL,
    STAGE_CANDIDATE,
    STAGE_PRODUCTION,
    TEXT_MODEL,
    latest_tag,
    production_trio,
    save_to_store,
)
from .gate import production_scores, promotion_decision
from .protocol import common_metadata, learning_folds, load_oof, scores_and_log
from .scoring import image_proba, text_proba, trio_scores
from .tracking import tracked_run
from .training_data import TrainingData, load_training_data

log = logging.getLogger(__name__)


def _drift_profile(rows: pd.DataFrame, fused: np.ndarray, seed: int) -> dict:
    """Reference for drift monitoring: the held-out rows answered by this trio, as the service would log them
    (products the models never saw, so the confidence is what unseen products get)."""
    features = reference_features(rows["text"].tolist(), rows["image_path"].tolist(), fused, seed=seed)
    return build_profile(features, label_codes=rows["prdtypecode"], seed=seed)


def train_fusion(
    data: TrainingData | None = None,
    *,
    data_dir: str | Path | None = None,
    db_url: str | None = None,
    text_tag: str | None = None,
    image_tag: str | None = None,
    settings: Settings | None = None,
) -> dict:
    """Choose and fit the fusion on out-of-fold predictions, score on test, store it; promote it past the gate."""
    import mlflow

    settings = settings or get_settings()
    data = data or load_training_data(data_dir, db_url, settings)
    text_tag = text_tag or latest_tag(TEXT_MODEL)
    image_tag = image_tag or latest_tag(IMAGE_MODEL)
    if text_tag is None or image_tag is None:
        raise DataError("train the text and image models first (rakuten train text / rakuten train image)")
    learning, test = data.learning(), data.split("test")
    with tracked_run(settings, "fusion", {"stage": "fusion"}) as run, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        oof_text = load_oof(text_tag, learning["productid"])
        oof_image = load_oof(image_tag, learning["productid"])
        labels = learning["label_index"].to_numpy()
        name, fitted, selection = select_fusion(
            oof_text,
            oof_image,
            labels,
            learning_folds(data, settings),
            settings.seed,
            fit_rows=settings.fusion_fit_rows,
        )
        config = fitted[name]
        for candidate, scores in selection.items():
            mlflow.log_metric(f"oof_{candidate.replace(' ', '_').replace('=', '')}_weighted_f1", scores["weighted_f1"])
        seconds = time.perf_counter() - started
        test_labels = test["label_index"].to_numpy()
        test_text, test_image = text_proba(text_tag, test), image_proba(image_tag, test, settings.features_dir)
        fused = fuse(test_text, test_image, config)
        # The fused scores again through scores_and_log, which also logs their report and confusion matrix.
        test_metrics = {
            **trio_scores(test_labels, test_text, test_image, fused),
            "fused": scores_and_log("fused_test", test_labels, fused, Path(tmp)),
        }
        # For the record only (the choice above never saw these): every candidate refit on all
        # out-of-fold rows, scored on the held-out rows.
        for candidate, other in fitted.items():
            selection[candidate]["test_weighted_f1"] = classification_scores(
                test_labels, fuse(test_text, test_image, other).argmax(axis=1)
            )["weighted_f1"]
        current = production_trio()
        production_f1 = (
            None if current is None else production_scores(current, test, settings.features_dir)["weighted_f1"]
        )
        promote, reason = promotion_decision(test_metrics["fused"]["weighted_f1"], production_f1)
        mlflow.log_params(
            {
                "method": config["method"],
                "combiner": name,
                "text_weight": config["text_weight"],
                "text_model": text_tag,
                "image_model": image_tag,
                "promoted": promote,
            }
        )
        mlflow.set_tag("promotion", reason)
        config.update(
            {
                "combiner": name,
                "text_model": text_tag,
                "image_model": image_tag,
                "classes": list(CATEGORY_CODES),
                "selection": selection,
                "test": test_metrics,
                "production_before": current.fusion if current else None,
                "production_before_test_weighted_f1": production_f1,
                "promotion": reason,
                "train_seconds": round(seconds, 2),
                "trained_on": data.origin,  # the service warns when it is not real data (data/origin.py)
            }
        )
        profile = _drift_profile(test, fused, settings.seed)

        def write(directory: Path) -> None:
            (directory / FUSION_FILE).write_text(json.dumps(config, indent=2))
            save_profile(profile, directory)

        params = {"method": config["method"], "combiner": name, "text_weight": config["text_weight"]}
        metadata = common_metadata(
            data, run.info.run_id, params, {"test": test_metrics, "oof": selection[name]}, seconds, settings.cv_folds
        )
        metadata.update({"text_model": text_tag, "image_model": image_tag, "promotion": reason, **data.provenance()})
        stage = STAGE_PRODUCTION if promote else STAGE_CANDIDATE
        tag = save_to_store(FUSION_MODEL, write, {"method": config["method"], "stage": stage}, metadata)
        mlflow.set_tag("model_tag", tag)
    log.info(
        "fusion %s (%s): out-of-fold weighted F1 %.4f, test %.4f; %s",
        tag,
        name,
        selection[name]["weighted_f1"],
        test_metrics["fused"]["weighted_f1"],
        reason,
    )
    return {
        "tag": tag,
        "method": config["method"],
        "combiner": name,
        "text_weight": config["text_weight"],
        "selection": selection,
        "metrics": test_metrics,
        "promoted": promote,
        "promotion": reason,
        "text_model": text_tag,
        "image_model": image_tag,
        "production_before": current.fusion if current else None,
        "production_before_test_weighted_f1": production_f1,
        "seconds": round(seconds, 2),
        "trained_on": data.origin,
        "learned_from": metadata["learned_from"],
    }
