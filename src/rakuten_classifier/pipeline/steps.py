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
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..config import Settings, get_settings
from ..data.origin import origin_warning
from ..data.reader import DataError
from ..modeling.image.options import ImageTrainingOptions
from ..modeling.text import TextModel, TfidfParams
from ..modeling.text_cross_fit import calibrate, cross_fit_text_model
from ..modeling.text_encoder import EncoderParams
from ..modeling.text_encoder_fitting import cross_fit_with_encoder
from ..modeling.text_transformer import TransformerParams
from ..modeling.text_transformer_fitting import fine_tune_transformer
from ..modeling.tfidf_cross_fit import cross_fit_tfidf
from ..registry import IMAGE_MODEL, STAGE_CANDIDATE, TEXT_MODEL, model_info, save_to_store
from .fusion_step import train_fusion
from .job_status import STAGES
from .protocol import common_metadata, learning_folds, save_oof, scores_and_log
from .scoring import image_proba_for_paths, remember_proba
from .tracking import tracked_run
from .training_data import TrainingData, load_training_data

log = logging.getLogger(__name__)


class Fitted(NamedTuple):
    """What a model step's fit gives `_cross_fit_step`."""

    model: Any  # refit on every learning row
    oof: np.ndarray  # out-of-fold probabilities of the learning rows
    params: dict  # logged to MLflow and stored in the version's metadata
    labels: dict  # labels of the stored version (its stage is added)


def _cross_fit_step(
    name: str,
    kind: str,
    data: TrainingData,
    settings: Settings,
    fit: Callable[[pd.DataFrame, np.ndarray], Fitted],
    test_proba: Callable[[Any, pd.DataFrame], np.ndarray],
    write: Callable[[Any, Path], None],
    counts: dict[str, int] | None = None,
    refit_of: dict | None = None,
) -> dict:
    """The text and image steps: a tracked run that cross-fits the model on the learning rows, scores it
    out-of-fold and on the held-out rows, and stores it as a candidate with its out-of-fold probabilities.

    ``name`` is the store's model name, ``kind`` names the MLflow run and the logged scores.
    ``write`` saves the model's files into the new version's folder; ``counts`` (facts about the data,
    such as rows without an image) are logged, stored in the metadata and returned. In the refit on every
    labelled row (``data.held_out`` False) there is no held-out row: the version reports the held-out scores
    of ``refit_of`` (the gated fit's step result) and records its tag.
    """
    import mlflow

    if data.held_out == (refit_of is not None):
        raise ValueError("a refit on every labelled row (data.every_row_learned()) needs the gated fit's result")
    counts = counts or {}
    learning, test = data.learning(), data.held_out_rows()
    with tracked_run(settings, kind, {"stage": kind}) as run, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        fitted = fit(learning, learning_folds(data, settings))
        seconds = time.perf_counter() - started
        mlflow.log_params(fitted.params)
        mlflow.log_metrics({"train_seconds": seconds, **counts})
        oof = scores_and_log(f"{kind}_oof", learning["label_index"].to_numpy(), fitted.oof, Path(tmp))
        if refit_of is None:
            proba = test_proba(fitted.model, test)
            scores = scores_and_log(f"{kind}_test", test["label_index"].to_numpy(), proba, Path(tmp))
            metrics = {"oof": oof, "test": scores}
        else:
            metrics = {"oof": oof, "test": refit_of["metrics"]["test"]}
            counts = {**counts, "refit_of": refit_of["tag"]}
        metadata = common_metadata(data, run.info.run_id, fitted.params, metrics, seconds, settings.cv_folds)

        def write_version(directory: Path) -> None:
            write(fitted.model, directory)
            save_oof(directory, learning["productid"], fitted.oof)

        labels = {**fitted.labels, "stage": STAGE_CANDIDATE}
        tag = save_to_store(name, write_version, labels, {**metadata, **counts})
        if refit_of is None:
            remember_proba(tag, test, proba)  # the fusion step scores the same rows
        mlflow.set_tag("model_tag", tag)
    log.info(
        "%s model %s: out-of-fold weighted F1 %.4f, test %.4f",
        kind,
        tag,
        metrics["oof"]["weighted_f1"],
        metrics["test"]["weighted_f1"],
    )
    return {"tag": tag, "metrics": metrics, "seconds": round(seconds, 2), **counts}


def train_text(
    data: TrainingData | None = None,
    *,
    data_dir: str | Path | None = None,
    db_url: str | None = None,
    backbone: str | None = None,
    tfidf: TfidfParams | None = None,
    encoder: EncoderParams | None = None,
    transformer: TransformerParams | None = None,
    settings: Settings | None = None,
    refit_of: dict | None = None,
) -> dict:
    """Cross-fit the text model (TF-IDF + linear SVM with the ``encoder`` channel unless it is off, or a
    transformer if ``backbone`` is given) and store it (``refit_of``: see `_cross_fit_step`)."""
    settings = settings or get_settings()
    data = data or load_training_data(data_dir, db_url, settings)
    params: TransformerParams | TfidfParams
    encoder_params = encoder or EncoderParams.from_settings(settings)
    if backbone:
        params = replace(transformer or TransformerParams.from_settings(settings), backbone=backbone)
    else:
        params = tfidf or TfidfParams()

    def fit(learning: pd.DataFrame, folds: np.ndarray) -> Fitted:
        texts, codes = learning["text"].tolist(), learning["prdtypecode"].astype(int).tolist()
        model: TextModel
        info: dict = {}
        if isinstance(params, TransformerParams):
            model, oof = cross_fit_text_model(texts, codes, folds, partial(fine_tune_transformer, params=params))
        elif encoder_params.enabled:
            model, oof, info = cross_fit_with_encoder(
                texts, codes, folds, params, encoder_params, settings.features_dir, settings.seed
            )
        else:
            model, oof = calibrate(
                *cross_fit_tfidf(texts, codes, folds, params, cache_dir=settings.features_dir), codes
            )
        logged = {"kind": model.kind, **asdict(params), "temperature": model.temperature}
        logged.update({k: v for k, v in info.items() if isinstance(v, (int, float, str))})
        labels = {"kind": model.kind, "encoder": info["encoder"] if info else "none"}
        return Fitted(model, oof, logged, labels)

    return _cross_fit_step(
        TEXT_MODEL,
        "text",
        data,
        settings,
        fit,
        test_proba=lambda model, test: model.predict_proba(test["text"].tolist()),
        write=lambda model, directory: model.save(directory),
        refit_of=refit_of,
    )


def train_image(
    data: TrainingData | None = None,
    *,
    data_dir: str | Path | None = None,
    db_url: str | None = None,
    settings: Settings | None = None,
    options: ImageTrainingOptions | None = None,
    refit_of: dict | None = None,
) -> dict:
    """Cross-fit the image model on the learning rows that have an image and store it; missing images are counted
    (``refit_of``: see `_cross_fit_step`)."""
    # Lazy: torch takes seconds to import, and training only the text model never needs it.
    from ..modeling.image.onnx_export import export_onnx
    from ..modeling.image.onnx_runtime import ONNX_FILE
    from ..modeling.image.training import fit_image_model

    settings = settings or get_settings()
    training_options = options or ImageTrainingOptions.from_settings(settings)
    data = data or load_training_data(data_dir, db_url, settings)
    learning, test = data.learning(), data.held_out_rows()
    without_image = int(learning["image_path"].isna().sum())
    if without_image == len(learning):
        raise DataError("no learning row has an image file; cannot train the image model")

    def fit(learning: pd.DataFrame, folds: np.ndarray) -> Fitted:
        model, oof, info = fit_image_model(
            learning["image_path"].tolist(),
            learning["prdtypecode"].astype(int).tolist(),
            folds,
            training_options,
            cache_dir=settings.features_dir,
        )
        params = {k: str(v) if isinstance(v, tuple) else v for k, v in training_options.as_params().items()}
        params.update({k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))})
        return Fitted(model, oof, params, {"backbone": training_options.backbone, "mode": training_options.mode})

    def write(model: Any, directory: Path) -> None:
        model.save(directory)
        # The served graph lives in the same version folder (and manifest): a promotion swaps both.
        export_onnx(model, directory / ONNX_FILE)

    return _cross_fit_step(
        IMAGE_MODEL,
        "image",
        data,
        settings,
        fit,
        test_proba=lambda model, test: image_proba_for_paths(
            model, test["image_path"].tolist(), settings.features_dir, desc="scoring test images"
        ),
        write=write,
        counts={
            "learning_rows_without_image": without_image,
            "test_rows_without_image": int(test["image_path"].isna().sum()),
        },
        refit_of=refit_of,
    )


def train_all(
    data_dir: str | Path | None = None,
    db_url: str | None = None,
    settings: Settings | None = None,
    text_backbone: str | None = None,
    transformer: TransformerParams | None = None,
    tfidf: TfidfParams | None = None,
    encoder: EncoderParams | None = None,
    image_options: ImageTrainingOptions | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict:
    """Text, image, then fusion with the promotion gate; returns every tag and score.

    ``text_backbone`` selects the transformer text model, ``tfidf`` and ``encoder`` tune the TF-IDF one;
    ``image_options`` go to `train_image`.
    ``on_stage`` is called with the name of each stage (job_status.STAGES) as it begins (the
    training job records them in its status file).
    """
    stage = on_stage or (lambda name: None)
    settings = settings or get_settings()
    started = time.perf_counter()
    stage(STAGES[0])
    data = load_training_data(data_dir, db_url, settings)
    stage(STAGES[1])
    text = train_text(
        data, backbone=text_backbone, transformer=transformer, tfidf=tfidf, encoder=encoder, settings=settings
    )
    stage(STAGES[2])
    image = train_image(data, settings=settings, options=image_options)
    stage(STAGES[3])
    fusion = train_fusion(data, text_tag=text["tag"], image_tag=image["tag"], settings=settings)
    result: dict[str, Any] = {"text": text, "image": image, "fusion": fusion}
    if settings.refit_all_rows and fusion["promoted"]:
        stage(STAGES[4])
        gated = result
        result = refit_on_every_row(data, gated, settings, text_backbone, transformer, tfidf, encoder, image_options)
        result["gated"] = gated
    elif settings.refit_all_rows:
        log.info("the gate kept production: no refit on every labelled row")
    result.update(
        {
            "seconds": round(time.perf_counter() - started, 1),
            "data_fingerprint": data.fingerprint,
            "production": model_info(result["fusion"]["tag"]) if fusion["promoted"] else None,
            "trained_on": data.origin,
        }
    )
    warning = origin_warning(data.origin)
    if warning:  # last, so it is the last line `rakuten train all` prints
        log.warning("%s", warning)
        result["warning"] = warning
    return result


def refit_on_every_row(
    data: TrainingData,
    gated: dict,
    settings: Settings,
    text_backbone: str | None = None,
    transformer: TransformerParams | None = None,
    tfidf: TfidfParams | None = None,
    encoder: EncoderParams | None = None,
    image_options: ImageTrainingOptions | None = None,
) -> dict:
    """The promoted trio ``gated`` (`train_all`'s text, image and fusion results) trained again, the same way,
    on every labelled row, the held-out test split included, and promoted in its place: the learning curve
    still rises at 100 % of the rows (docs/accuracy.md). It has no held-out rows left, so each version reports
    the gated fit's held-out scores and names it (``refit_of``); the next gate compares candidates with
    that gated trio (fusion_step.gate_candidate)."""
    every_row = data.every_row_learned()
    text = train_text(
        every_row,
        backbone=text_backbone,
        transformer=transformer,
        tfidf=tfidf,
        encoder=encoder,
        settings=settings,
        refit_of=gated["text"],
    )
    image = train_image(every_row, settings=settings, options=image_options, refit_of=gated["image"])
    fusion = train_fusion(
        every_row, text_tag=text["tag"], image_tag=image["tag"], settings=settings, refit_of=gated["fusion"]
    )
    return {"text": text, "image": image, "fusion": fusion}
