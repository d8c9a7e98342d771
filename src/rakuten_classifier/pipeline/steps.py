"""Training pipeline: text, image and fusion models into the BentoML store, tracked in MLflow.

Splits: models fit on 'train'; temperatures, the fusion weight and early stopping use 'val';
every reported score is on 'test', which no model ever fits on.
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
from ..modeling.fusion import FUSION_METHODS, fuse_probabilities, learn_text_weight
from ..modeling.image.options import ImageTrainingOptions
from ..modeling.scores import classification_scores, report_text, save_confusion_matrix
from ..modeling.text import TfidfParams, TfidfTextModel, TransformerParams, TransformerTextModel
from ..monitoring.drift import build_profile, reference_features, save_profile
from ..registry import (
    FUSION_FILE,
    FUSION_MODEL,
    IMAGE_MODEL,
    STAGE_CANDIDATE,
    STAGE_PRODUCTION,
    TEXT_MODEL,
    code_version,
    latest_tag,
    model_info,
    production_models,
    read_fusion_config,
    save_to_store,
)
from .gate import fused_scores, promotion_decision
from .scoring import image_proba, image_proba_for_paths, text_proba
from .tracking import log_evaluation, tracked_run
from .training_data import TrainingData, load_training_data

log = logging.getLogger(__name__)


def _scores_and_log(prefix: str, labels: np.ndarray, proba: np.ndarray, work_dir: Path) -> dict:
    """Score rows with probabilities (NaN rows skipped), log report and confusion matrix to MLflow."""
    scored = ~np.isnan(proba).any(axis=1)
    predicted = proba[scored].argmax(axis=1)
    scores = classification_scores(labels[scored], predicted)
    if scores["n"]:
        png = save_confusion_matrix(labels[scored], predicted, work_dir / f"{prefix}_confusion_matrix.png", prefix)
        log_evaluation(prefix, scores, report_text(labels[scored], predicted), png)
    return scores


def _common_metadata(data: TrainingData, run_id: str, params: dict, metrics: dict, seconds: float) -> dict:
    return {
        "classes": list(CATEGORY_CODES),
        "metrics": metrics,
        "data_fingerprint": data.fingerprint,
        "params": params,
        "code_version": code_version(),
        "mlflow_run_id": run_id,
        "train_rows": int((data.products["split"] == "train").sum()),
        "train_seconds": round(seconds, 2),
    }


def train_text(
    data: TrainingData | None = None,
    *,
    data_dir: str | Path | None = None,
    db_url: str | None = None,
    backbone: str | None = None,
    tfidf: TfidfParams | None = None,
    transformer: TransformerParams | None = None,
    settings: Settings | None = None,
) -> dict:
    """Fit the text model (TF-IDF + linear SVM, or a transformer if ``backbone`` is given) and store it."""
    import mlflow

    settings = settings or get_settings()
    data = data or load_training_data(data_dir, db_url, settings)
    train, val, test = data.split("train"), data.split("val"), data.split("test")
    with tracked_run(settings, "text", {"stage": "text"}) as run, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        params: TransformerParams | TfidfParams
        model: TransformerTextModel | TfidfTextModel
        if backbone:
            params = transformer or TransformerParams(backbone=backbone)
            params.backbone = backbone
            model = TransformerTextModel.fit(
                train["text"], train["prdtypecode"], val["text"], val["prdtypecode"], params
            )
        else:
            params = tfidf or TfidfParams()
            model = TfidfTextModel.fit(train["text"], train["prdtypecode"], val["text"], val["prdtypecode"], params)
        seconds = time.perf_counter() - started
        param_dict = {"kind": model.kind, **vars(params), "temperature": model.temperature}
        mlflow.log_params({k: v for k, v in param_dict.items() if k != "extra"})
        mlflow.log_metric("train_seconds", seconds)
        metrics = {
            split: _scores_and_log(
                f"text_{split}", frame["label_index"].to_numpy(), model.predict_proba(frame["text"].tolist()), Path(tmp)
            )
            for split, frame in (("val", val), ("test", test))
        }
        metadata = _common_metadata(
            data, run.info.run_id, {k: v for k, v in param_dict.items() if k != "extra"}, metrics, seconds
        )
        tag = save_to_store(TEXT_MODEL, model.save, {"kind": model.kind, "stage": STAGE_CANDIDATE}, metadata)
        mlflow.set_tag("model_tag", tag)
    log.info("text model %s: test weighted F1 %.4f", tag, metrics["test"]["weighted_f1"])
    return {"tag": tag, "metrics": metrics, "seconds": round(seconds, 2)}


def train_image(
    data: TrainingData | None = None,
    *,
    data_dir: str | Path | None = None,
    db_url: str | None = None,
    settings: Settings | None = None,
    options: ImageTrainingOptions | None = None,
) -> dict:
    """Fit the image model on training rows that have an image and store it; missing images are counted."""
    import mlflow

    # Lazy: torch takes seconds to import, and training only the text model never needs it.
    from ..modeling.image.training import fit_image_model

    settings = settings or get_settings()
    options = options or ImageTrainingOptions(seed=settings.seed)
    data = data or load_training_data(data_dir, db_url, settings)
    train, val, test = data.split("train"), data.split("val"), data.split("test")
    train_with, val_with = train[train["image_path"].notna()], val[val["image_path"].notna()]
    skipped = {"train": int(train["image_path"].isna().sum()), "val": int(val["image_path"].isna().sum())}
    if train_with.empty or val_with.empty:
        raise DataError("no training or validation row has an image file; cannot train the image model")
    log.info("image model: %d training images (%d rows without image skipped)", len(train_with), skipped["train"])
    with tracked_run(settings, "image", {"stage": "image"}) as run, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        model, info = fit_image_model(
            train_with["image_path"].tolist(),
            train_with["prdtypecode"].astype(int).tolist(),
            val_with["image_path"].tolist(),
            val_with["prdtypecode"].astype(int).tolist(),
            options,
            cache_dir=settings.features_dir,
        )
        seconds = time.perf_counter() - started
        params = {k: str(v) if isinstance(v, tuple) else v for k, v in options.as_params().items()}
        params.update({k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))})
        mlflow.log_params(params)
        mlflow.log_metrics({"train_seconds": seconds, "train_rows_without_image": skipped["train"]})
        metrics = {}
        for split, frame in (("val", val), ("test", test)):
            proba = image_proba_for_paths(model, frame["image_path"].tolist(), desc=f"scoring {split} images")
            metrics[split] = _scores_and_log(f"image_{split}", frame["label_index"].to_numpy(), proba, Path(tmp))
            metrics[split]["missing_images"] = int(np.isnan(proba).any(axis=1).sum())
        metadata = _common_metadata(data, run.info.run_id, params, metrics, seconds)
        metadata["skipped_without_image"] = skipped
        labels = {"backbone": options.backbone, "mode": options.mode, "stage": STAGE_CANDIDATE}
        tag = save_to_store(IMAGE_MODEL, model.save, labels, metadata)
        mlflow.set_tag("model_tag", tag)
    log.info("image model %s: test weighted F1 %.4f", tag, metrics["test"]["weighted_f1"])
    return {"tag": tag, "metrics": metrics, "seconds": round(seconds, 2), "skipped_without_image": skipped}


def train_fusion(
    data: TrainingData | None = None,
    *,
    data_dir: str | Path | None = None,
    db_url: str | None = None,
    text_tag: str | None = None,
    image_tag: str | None = None,
    method: str | None = None,
    settings: Settings | None = None,
) -> dict:
    """Learn the text weight on validation, score on test, store the fusion; promote it if it passes the gate."""
    import mlflow

    settings = settings or get_settings()
    data = data or load_training_data(data_dir, db_url, settings)
    text_tag = text_tag or latest_tag(TEXT_MODEL)
    image_tag = image_tag or latest_tag(IMAGE_MODEL)
    if text_tag is None or image_tag is None:
        raise DataError("train the text and image models first (rakuten train text / rakuten train image)")
    val, test = data.split("val"), data.split("test")
    val_labels = val["label_index"].to_numpy()
    with tracked_run(settings, "fusion", {"stage": "fusion"}) as run, tempfile.TemporaryDirectory() as tmp:
        val_text, val_image = text_proba(text_tag, val), image_proba(image_tag, val)
        candidates = {m: learn_text_weight(val_text, val_image, val_labels, m) for m in FUSION_METHODS}
        for name, (weight, f1) in candidates.items():
            mlflow.log_metrics({f"val_{name}_weight": weight, f"val_{name}_weighted_f1": f1})
        method = method or max(FUSION_METHODS, key=lambda m: candidates[m][1])
        weight = candidates[method][0]
        test_labels = test["label_index"].to_numpy()
        test_text, test_image = text_proba(text_tag, test), image_proba(image_tag, test)
        fused = fuse_probabilities(test_text, test_image, weight, method)
        with_image = ~np.isnan(test_image).any(axis=1)
        test_metrics = {
            "text": classification_scores(test_labels, test_text.argmax(axis=1)),
            "image": classification_scores(test_labels[with_image], test_image[with_image].argmax(axis=1)),
            "fused": _scores_and_log("fused_test", test_labels, fused, Path(tmp)),
            "fused_on_rows_with_image": classification_scores(
                test_labels[with_image], fused[with_image].argmax(axis=1)
            ),
            "text_on_rows_with_image": classification_scores(
                test_labels[with_image], test_text[with_image].argmax(axis=1)
            ),
            "other_method": {
                m: classification_scores(test_labels, fuse_probabilities(test_text, test_image, w, m).argmax(axis=1))
                for m, (w, _) in candidates.items()
            },
        }
        current = production_models()
        production_f1 = None
        if current is not None:
            production_config = read_fusion_config(current.fusion)
            production_f1 = fused_scores(
                current.text, current.image, production_config["text_weight"], production_config["method"], test
            )["weighted_f1"]
        promote, reason = promotion_decision(test_metrics["fused"]["weighted_f1"], production_f1)
        mlflow.log_params(
            {
                "method": method,
                "text_weight": weight,
                "text_model": text_tag,
                "image_model": image_tag,
                "promoted": promote,
            }
        )
        mlflow.set_tag("promotion", reason)
        config = {
            "text_weight": weight,
            "method": method,
            "text_model": text_tag,
            "image_model": image_tag,
            "classes": list(CATEGORY_CODES),
            "validation": {m: {"text_weight": w, "weighted_f1": f} for m, (w, f) in candidates.items()},
            "test": test_metrics,
            "production_before": current.fusion if current else None,
            "production_before_test_weighted_f1": production_f1,
            "promotion": reason,
        }

        # Reference for drift monitoring: the held-out rows as the service would log them.
        held_out = pd.concat([val, test])
        held_out_fused = np.vstack([fuse_probabilities(val_text, val_image, weight, method), fused])
        profile = build_profile(
            reference_features(
                held_out["text"].tolist(), held_out["image_path"].tolist(), held_out_fused, seed=settings.seed
            ),
            label_codes=held_out["prdtypecode"],
            seed=settings.seed,
        )

        def write(directory: Path) -> None:
            (directory / FUSION_FILE).write_text(json.dumps(config, indent=2))
            save_profile(profile, directory)

        metadata = _common_metadata(
            data, run.info.run_id, {"method": method, "text_weight": weight}, {"test": test_metrics}, 0.0
        )
        metadata.update({"text_model": text_tag, "image_model": image_tag, "promotion": reason, **data.provenance()})
        tag = save_to_store(
            FUSION_MODEL, write, {"method": method, "stage": STAGE_PRODUCTION if promote else STAGE_CANDIDATE}, metadata
        )
        mlflow.set_tag("model_tag", tag)
    log.info(
        "fusion %s (%s, w=%.2f): test weighted F1 %.4f; %s",
        tag,
        method,
        weight,
        test_metrics["fused"]["weighted_f1"],
        reason,
    )
    return {
        "tag": tag,
        "method": method,
        "text_weight": weight,
        "metrics": test_metrics,
        "promoted": promote,
        "promotion": reason,
        "text_model": text_tag,
        "image_model": image_tag,
        "production_before": current.fusion if current else None,
        "production_before_test_weighted_f1": production_f1,
    }


def train_all(
    data_dir: str | Path | None = None,
    db_url: str | None = None,
    settings: Settings | None = None,
    text_backbone: str | None = None,
    transformer: TransformerParams | None = None,
    tfidf: TfidfParams | None = None,
    image_options: ImageTrainingOptions | None = None,
) -> dict:
    """Text, image, then fusion with the promotion gate; returns every tag and score.

    ``text_backbone`` selects the transformer text model; ``image_options`` go to `train_image`.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    data = load_training_data(data_dir, db_url, settings)
    text = train_text(data, backbone=text_backbone, transformer=transformer, tfidf=tfidf, settings=settings)
    image = train_image(data, settings=settings, options=image_options)
    fusion = train_fusion(data, text_tag=text["tag"], image_tag=image["tag"], settings=settings)
    return {
        "text": text,
        "image": image,
        "fusion": fusion,
        "seconds": round(time.perf_counter() - started, 1),
        "data_fingerprint": data.fingerprint,
        "production": model_info(fusion["tag"]) if fusion["promoted"] else None,
    }
