"""The fusion step: choose the combiner on out-of-fold predictions, score it on the held-out rows, gate it.

Every candidate combiner (modeling/fusion_selection.py) is scored by nested cross-validation over
the text and image models' stored out-of-fold probabilities; the best is refit on all of them. The
held-out test rows only score the result and feed the promotion gate.

`train_fusion` runs its parts in order, each a function of its own: `select_combiner`, `score_held_out`,
`gate_candidate` (against production), `log_to_mlflow`, `fusion_config` (the served JSON),
`drift_profile` (the monitoring reference) and `store_version`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..categories import CATEGORY_CODES
from ..config import Settings, get_settings
from ..data.reader import DataError
from ..modeling.fusion import fuse
from ..modeling.fusion_selection import select_fusion
from ..modeling.scores import classification_scores
from ..monitoring.drift import build_profile, load_profile, reference_features, save_profile
from ..registry import (
    FUSION_FILE,
    FUSION_MODEL,
    IMAGE_MODEL,
    STAGE_CANDIDATE,
    STAGE_PRODUCTION,
    TEXT_MODEL,
    Trio,
    latest_tag,
    model_path,
    production_trio,
    read_fusion_config,
    save_to_store,
    trio_of,
)
from .gate import production_scores, promotion_decision
from .protocol import common_metadata, learning_folds, load_oof, save_trained_rows, scores_and_log
from .scoring import image_proba, text_proba, trio_scores
from .tracking import tracked_run
from .training_data import TrainingData, load_training_data

log = logging.getLogger(__name__)


class Choice(NamedTuple):
    """The combiner chosen on the out-of-fold predictions, and how every candidate scored."""

    name: str  # the chosen candidate
    config: dict  # its fusion config (method, text_weight, ...), refit on every out-of-fold row
    fitted: dict[str, dict]  # every candidate's config, refit the same way
    selection: dict[str, dict]  # candidate -> nested out-of-fold scores (test_weighted_f1 added by `score_held_out`)
    seconds: float  # time to choose and refit


class Verdict(NamedTuple):
    """The promotion gate's answer for a candidate trio."""

    production: Trio | None  # the production trio it was compared with
    production_f1: float | None  # that trio's fused weighted F1 on the same held-out rows
    promote: bool
    reason: str


def select_combiner(data: TrainingData, text_tag: str, image_tag: str, settings: Settings) -> Choice:
    """Score every candidate combiner by nested cross-validation on the text and image models'
    out-of-fold probabilities of the learning rows; the best, refit on all of them, is chosen."""
    learning = data.learning()
    started = time.perf_counter()
    name, fitted, selection = select_fusion(
        load_oof(text_tag, learning["productid"]),
        load_oof(image_tag, learning["productid"]),
        learning["label_index"].to_numpy(),
        learning_folds(data, settings),
        settings.seed,
        fit_rows=settings.fusion_fit_rows,
    )
    return Choice(name, fitted[name], fitted, selection, time.perf_counter() - started)


def score_held_out(
    choice: Choice, test: pd.DataFrame, text_tag: str, image_tag: str, settings: Settings, work_dir: Path
) -> tuple[dict, np.ndarray]:
    """Scores of the text, image and fused probabilities on the held-out rows (the fused ones' report and
    confusion matrix logged to MLflow), and the fused probabilities.

    For the record only (the choice never saw these rows), every candidate's held-out weighted F1 is
    added to ``choice.selection``.
    """
    labels = test["label_index"].to_numpy()
    text, image = text_proba(text_tag, test), image_proba(image_tag, test, settings.features_dir)
    fused = fuse(text, image, choice.config)
    metrics = {
        **trio_scores(labels, text, image, fused),
        "fused": scores_and_log("fused_test", labels, fused, work_dir),
    }
    for candidate, other in choice.fitted.items():
        predicted = fuse(text, image, other).argmax(axis=1)
        choice.selection[candidate]["test_weighted_f1"] = classification_scores(labels, predicted)["weighted_f1"]
    return metrics, fused


def gate_candidate(candidate_f1: float, test: pd.DataFrame, settings: Settings) -> Verdict:
    """Compare the candidate's fused held-out weighted F1 with the production trio's on the same rows.

    A production trio refit on every labelled row learned from those rows: the gated trio it was refit
    from (which never saw them) stands in for it, so the comparison stays one of held-out figures.
    """
    current = production_trio()
    if current is None:
        return Verdict(None, None, *promotion_decision(candidate_f1, None))
    gated = read_fusion_config(current.fusion).get("refit_of")
    judged = trio_of(gated) if gated else current
    production_f1 = production_scores(judged, test, settings.features_dir)["weighted_f1"]
    promote, reason = promotion_decision(candidate_f1, production_f1)
    if gated:
        reason += f" (production is a refit on every labelled row: scored as the gated fit {gated} it came from)"
    return Verdict(current, production_f1, promote, reason)


def refit_verdict(gated_fusion: str) -> Verdict:
    """The refit on every labelled row of a trio the gate just promoted is promoted with it: it has no
    held-out rows to be gated on."""
    reason = f"refit of the promoted {gated_fusion} on every labelled row (held-out scores: the gated fit's)"
    return Verdict(production_trio(), None, True, reason)


def log_to_mlflow(choice: Choice, verdict: Verdict, text_tag: str, image_tag: str) -> None:
    """Every candidate's out-of-fold weighted F1, the chosen combiner and the gate's answer, in the active run."""
    import mlflow

    for candidate, scores in choice.selection.items():
        mlflow.log_metric(f"oof_{candidate.replace(' ', '_').replace('=', '')}_weighted_f1", scores["weighted_f1"])
    mlflow.log_params(
        {
            "method": choice.config["method"],
            "combiner": choice.name,
            "text_weight": choice.config["text_weight"],
            "text_model": text_tag,
            "image_model": image_tag,
            "promoted": verdict.promote,
        }
    )
    mlflow.set_tag("promotion", verdict.reason)


def fusion_config(
    choice: Choice, metrics: dict, verdict: Verdict, text_tag: str, image_tag: str, trained_on: str
) -> dict:
    """The fusion version's JSON: what serving fuses with (the combiner and the trio's tags) and how it was chosen."""
    return {
        **choice.config,
        "combiner": choice.name,
        "text_model": text_tag,
        "image_model": image_tag,
        "classes": list(CATEGORY_CODES),
        "selection": choice.selection,
        "test": metrics,
        "production_before": verdict.production.fusion if verdict.production else None,
        "production_before_test_weighted_f1": verdict.production_f1,
        "promotion": verdict.reason,
        "train_seconds": round(choice.seconds, 2),
        "trained_on": trained_on,  # the service warns when it is not real data (data/origin.py)
    }


def drift_profile(rows: pd.DataFrame, fused: np.ndarray, seed: int) -> dict:
    """Reference for drift monitoring: the held-out rows answered by this trio, as the service would log them
    (products the models never saw, so the confidence is what unseen products get)."""
    features = reference_features(rows["text"].tolist(), rows["image_path"].tolist(), fused, seed=seed)
    return build_profile(features, label_codes=rows["prdtypecode"], seed=seed)


def store_version(config: dict, profile: dict, data: TrainingData, metadata: dict, promote: bool) -> str:
    """Save the fusion version (its JSON, drift profile and the products of its data), labelled production
    when the gate promoted it."""

    def write(directory: Path) -> None:
        (directory / FUSION_FILE).write_text(json.dumps(config, indent=2))
        save_profile(profile, directory)
        save_trained_rows(directory, data.products["productid"])

    stage = STAGE_PRODUCTION if promote else STAGE_CANDIDATE
    return save_to_store(FUSION_MODEL, write, {"method": config["method"], "stage": stage}, metadata)


def train_fusion(
    data: TrainingData | None = None,
    *,
    data_dir: str | Path | None = None,
    db_url: str | None = None,
    text_tag: str | None = None,
    image_tag: str | None = None,
    settings: Settings | None = None,
    refit_of: dict | None = None,
) -> dict:
    """Choose and fit the fusion on out-of-fold predictions, score on test, store it; promote it past the gate.

    ``refit_of``: the gated fit's fusion result, in the refit on every labelled row (`steps.refit_on_every_row`):
    no held-out scoring nor gate; the gated fit's held-out scores and drift reference are kept.
    """
    import mlflow

    settings = settings or get_settings()
    data = data or load_training_data(data_dir, db_url, settings)
    text_tag = text_tag or latest_tag(TEXT_MODEL)
    image_tag = image_tag or latest_tag(IMAGE_MODEL)
    if text_tag is None or image_tag is None:
        raise DataError("train the text and image models first (rakuten train text / rakuten train image)")
    if data.held_out == (refit_of is not None):
        raise ValueError("a refit on every labelled row (data.every_row_learned()) needs the gated fit's result")
    test = data.held_out_rows()
    with tracked_run(settings, "fusion", {"stage": "fusion"}) as run, tempfile.TemporaryDirectory() as tmp:
        choice = select_combiner(data, text_tag, image_tag, settings)
        if refit_of is None:
            metrics, fused = score_held_out(choice, test, text_tag, image_tag, settings, Path(tmp))
            verdict = gate_candidate(metrics["fused"]["weighted_f1"], test, settings)
            profile = drift_profile(test, fused, settings.seed)
        else:
            metrics, verdict = refit_of["metrics"], refit_verdict(refit_of["tag"])
            profile = load_profile(model_path(refit_of["tag"]))  # its held-out rows: the unseen products' answers
        log_to_mlflow(choice, verdict, text_tag, image_tag)
        params = {
            "method": choice.config["method"],
            "combiner": choice.name,
            "text_weight": choice.config["text_weight"],
        }
        scores = {"test": metrics, "oof": choice.selection[choice.name]}
        metadata = common_metadata(data, run.info.run_id, params, scores, choice.seconds, settings.cv_folds)
        metadata.update({"text_model": text_tag, "image_model": image_tag, "promotion": verdict.reason})
        config = fusion_config(choice, metrics, verdict, text_tag, image_tag, data.origin)
        if refit_of is not None:
            metadata["refit_of"] = config["refit_of"] = refit_of["tag"]
        tag = store_version(config, profile, data, metadata, verdict.promote)
        mlflow.set_tag("model_tag", tag)
    log.info(
        "fusion %s (%s): out-of-fold weighted F1 %.4f, test %.4f; %s",
        tag,
        choice.name,
        choice.selection[choice.name]["weighted_f1"],
        metrics["fused"]["weighted_f1"],
        verdict.reason,
    )
    return {
        "tag": tag,
        "method": config["method"],
        "combiner": choice.name,
        "text_weight": config["text_weight"],
        "selection": choice.selection,
        "metrics": metrics,
        "promoted": verdict.promote,
        "promotion": verdict.reason,
        "text_model": text_tag,
        "image_model": image_tag,
        "production_before": config["production_before"],
        "production_before_test_weighted_f1": verdict.production_f1,
        "seconds": round(choice.seconds, 2),
        "trained_on": data.origin,
        "learned_from": metadata["learned_from"],
        **({"refit_of": refit_of["tag"]} if refit_of else {}),
    }
