"""Training steps: text and image models into the BentoML store, cross-fitted and tracked in MLflow.

Protocol: the ``test`` split is held out (scores and the promotion gate only; nothing is fitted or
selected on it). Every other labelled row is a learning row: K-fold cross-fitting gives each model's
out-of-fold probabilities, on which temperatures, hyper-parameters and the fusion are chosen; the
models themselves are then refit on all learning rows. The out-of-fold probabilities are stored in
each model's folder (``oof_predictions.npz``) for the fusion step (pipeline/fusion_step.py).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from ..config import Settings, get_settings
from ..data.origin import origin_warning
from ..data.reader import DataError
from ..modeling.image.options import ImageTrainingOptions
from ..modeling.text import (
    TextModel,
    TfidfParams,
    TfidfTextModel,
    TransformerParams,
    TransformerTextModel,
    cross_fit_text_model,
)
from ..registry import IMAGE_MODEL, STAGE_CANDIDATE, TEXT_MODEL, model_info, save_to_store
from .fusion_step import train_fusion
from .protocol import common_metadata, learning_folds, save_oof, scores_and_log
from .scoring import image_proba_for_paths, remember_proba
from .tracking import tracked_run
from .training_data import TrainingData, load_training_data

log = logging.getLogger(__name__)


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
    """Cross-fit the text model (TF-IDF + linear SVM, or a transformer if ``backbone`` is given) and store it."""
    import mlflow

    settings = settings or get_settings()
    data = data or load_training_data(data_dir, db_url, settings)
    learning, test = data.learning(), data.split("test")
    folds = learning_folds(data, settings)
    params: TransformerParams | TfidfParams
    fit: Callable[[list[str], list[int]], TextModel]
    if backbone:
        transformer_params = transformer or TransformerParams(backbone=backbone)
        transformer_params.backbone = backbone
        params = transformer_params
        fit = partial(TransformerTextModel.fit, params=transformer_params)
    else:
        params = tfidf_params = tfidf or TfidfParams()
        fit = partial(TfidfTextModel.fit, params=tfidf_params)
    with tracked_run(settings, "text", {"stage": "text"}) as run, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        model: TextModel
        model, oof = cross_fit_text_model(learning["text"], learning["prdtypecode"], folds, fit)
        seconds = time.perf_counter() - started
        param_dict = {"kind": model.kind, **vars(params), "temperature": model.temperature}
        param_dict.pop("extra", None)
        mlflow.log_params(param_dict)
        mlflow.log_metric("train_seconds", seconds)
        test_proba = model.predict_proba(test["text"].tolist())
        metrics = {
            "oof": scores_and_log("text_oof", learning["label_index"].to_numpy(), oof, Path(tmp)),
            "test": scores_and_log("text_test", test["label_index"].to_numpy(), test_proba, Path(tmp)),
        }
        metadata = common_metadata(data, run.info.run_id, param_dict, metrics, seconds, settings.cv_folds)

        def write(directory: Path) -> None:
            model.save(directory)
            save_oof(directory, learning["productid"], oof)

        tag = save_to_store(TEXT_MODEL, write, {"kind": model.kind, "stage": STAGE_CANDIDATE}, metadata)
        remember_proba(tag, test, test_proba)  # the fusion step scores the same rows
        mlflow.set_tag("model_tag", tag)
    log.info(
        "text model %s: out-of-fold weighted F1 %.4f, test %.4f",
        tag,
        metrics["oof"]["weighted_f1"],
        metrics["test"]["weighted_f1"],
    )
    return {"tag": tag, "metrics": metrics, "seconds": round(seconds, 2)}


def train_image(
    data: TrainingData | None = None,
    *,
    data_dir: str | Path | None = None,
    db_url: str | None = None,
    settings: Settings | None = None,
    options: ImageTrainingOptions | None = None,
) -> dict:
    """Cross-fit the image model on the learning rows that have an image and store it; missing images are counted."""
    import mlflow

    # Lazy: torch takes seconds to import, and training only the text model never needs it.
    from ..modeling.image.onnx_export import export_onnx
    from ..modeling.image.onnx_runtime import ONNX_FILE
    from ..modeling.image.training import fit_image_model

    settings = settings or get_settings()
    options = options or ImageTrainingOptions(seed=settings.seed, backbone=settings.image_backbone)
    data = data or load_training_data(data_dir, db_url, settings)
    learning, test = data.learning(), data.split("test")
    skipped = int(learning["image_path"].isna().sum())
    if skipped == len(learning):
        raise DataError("no learning row has an image file; cannot train the image model")
    with tracked_run(settings, "image", {"stage": "image"}) as run, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        model, oof, info = fit_image_model(
            learning["image_path"].tolist(),
            learning["prdtypecode"].astype(int).tolist(),
            learning_folds(data, settings),
            options,
            cache_dir=settings.features_dir,
        )
        seconds = time.perf_counter() - started
        params = {k: str(v) if isinstance(v, tuple) else v for k, v in options.as_params().items()}
        params.update({k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))})
        mlflow.log_params(params)
        mlflow.log_metrics({"train_seconds": seconds, "learning_rows_without_image": skipped})
        test_proba = image_proba_for_paths(
            model, test["image_path"].tolist(), settings.features_dir, desc="scoring test images"
        )
        metrics = {
            "oof": scores_and_log("image_oof", learning["label_index"].to_numpy(), oof, Path(tmp)),
            "test": scores_and_log("image_test", test["label_index"].to_numpy(), test_proba, Path(tmp)),
        }
        metrics["test"]["missing_images"] = int(np.isnan(test_proba).any(axis=1).sum())
        metadata = common_metadata(data, run.info.run_id, params, metrics, seconds, settings.cv_folds)
        metadata["learning_rows_without_image"] = skipped

        def write(directory: Path) -> None:
            model.save(directory)
            # The served graph lives in the same version folder (and manifest): a promotion swaps both.
            export_onnx(model, directory / ONNX_FILE)
            save_oof(directory, learning["productid"], oof)

        labels = {"backbone": options.backbone, "mode": options.mode, "stage": STAGE_CANDIDATE}
        tag = save_to_store(IMAGE_MODEL, write, labels, metadata)
        remember_proba(tag, test, test_proba)  # the fusion step scores the same rows
        mlflow.set_tag("model_tag", tag)
    log.info(
        "image model %s: out-of-fold weighted F1 %.4f, test %.4f",
        tag,
        metrics["oof"]["weighted_f1"],
        metrics["test"]["weighted_f1"],
    )
    return {"tag": tag, "metrics": metrics, "seconds": round(seconds, 2), "skipped_without_image": skipped}


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
    result = {
        "text": text,
        "image": image,
        "fusion": fusion,
        "seconds": round(time.perf_counter() - started, 1),
        "data_fingerprint": data.fingerprint,
        "production": model_info(fusion["tag"]) if fusion["promoted"] else None,
        "trained_on": data.origin,
    }
    warning = origin_warning(data.origin)
    if warning:  # last, so it is the last line `rakuten train all` prints
        log.warning("%s", warning)
        result["warning"] = warning
    return result
