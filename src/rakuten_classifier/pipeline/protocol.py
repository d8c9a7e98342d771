"""The learning protocol shared by the training steps: folds, out-of-fold files, metadata, scores.

The ``test`` split is held out; every other labelled row is a learning row, cross-fitted over
``RAKUTEN_CV_FOLDS`` stratified folds (the same folds for the text, image and fusion steps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..categories import CATEGORY_CODES
from ..config import Settings
from ..data.reader import DataError
from ..modeling.cross_fitting import assign_folds
from ..modeling.scores import classification_scores, report_text, save_confusion_matrix
from ..registry import code_version, model_path
from .tracking import log_evaluation
from .training_data import TrainingData

OOF_FILE = "oof_predictions.npz"
# The products of the data a fusion version was trained with (learning and held-out rows), whatever it
# was read from: `rakuten retrain` counts every labelled row of the store not among them as new.
TRAINED_ROWS_FILE = "trained_productids.npz"
# How each reported score was obtained (stored in every model's metadata).
SCORE_PROTOCOL = {
    "oof": "K-fold out-of-fold predictions on the learning rows (all labelled rows but the test split); "
    "every temperature and hyper-parameter is chosen on them",
    "test": "the held-out test split: no fitting and no selection ever used these rows",
}
# A refit on every labelled row learned from the test split too: its scores there would not be held-out
# figures, so it reports those of the gated fit it was refit from (`refit_of`), and says so.
REFIT_SCORE_PROTOCOL = {
    "oof": "K-fold out-of-fold predictions on every labelled row, the test split included",
    "test": "the gated fit's (refit_of) held-out scores: this version learned from those rows, and has none of its own",
}


def scores_and_log(prefix: str, labels: np.ndarray, proba: np.ndarray, work_dir: Path) -> dict:
    """Score rows with probabilities (NaN rows skipped), log report and confusion matrix to MLflow."""
    scored = ~np.isnan(proba).any(axis=1)
    predicted = proba[scored].argmax(axis=1)
    scores = classification_scores(labels[scored], predicted)
    if scores["n"]:
        png = save_confusion_matrix(labels[scored], predicted, work_dir / f"{prefix}_confusion_matrix.png", prefix)
        log_evaluation(prefix, scores, report_text(labels[scored], predicted), png)
    return scores


def common_metadata(data: TrainingData, run_id: str, params: dict, metrics: dict, seconds: float, folds: int) -> dict:
    """Metadata of every model version: classes, scores and how they were obtained, the rows it learned from."""
    learning = data.learning()
    return {
        "classes": list(CATEGORY_CODES),
        "metrics": metrics,
        "score_protocol": SCORE_PROTOCOL if data.held_out else REFIT_SCORE_PROTOCOL,
        "data_fingerprint": data.fingerprint,
        "trained_on": data.origin,  # 'synthetic' makes the service warn (data/origin.py)
        "learned_from": {
            "rows": len(learning),
            "splits": sorted(learning["split"].unique().tolist()),
            "held_out_split": "test" if data.held_out else "none",  # BentoML's metadata holds no null
            "held_out_rows": len(data.held_out_rows()),
            "folds": folds,
        },
        "params": params,
        "code_version": code_version(),
        "mlflow_run_id": run_id,
        "train_seconds": round(seconds, 2),
    }


def learning_folds(data: TrainingData, settings: Settings) -> np.ndarray:
    """The fold of each learning row: the same for the text, image and fusion steps of one data set."""
    return assign_folds(data.learning()["label_index"].to_numpy(), settings.cv_folds, settings.seed)


def save_oof(directory: Path, productids: pd.Series, proba: np.ndarray) -> None:
    """Store a model's out-of-fold probabilities beside it, keyed by productid."""
    np.savez(directory / OOF_FILE, productid=productids.to_numpy(dtype=np.int64), proba=proba)


def load_oof(tag: str, productids: pd.Series) -> np.ndarray:
    """A stored model's out-of-fold probabilities for these products; DataError if it learned from other rows."""
    path = model_path(tag) / OOF_FILE
    if not path.is_file():
        raise DataError(f"{tag} has no out-of-fold predictions (trained before cross-fitting): train it again")
    with np.load(path) as stored:
        row = {int(pid): i for i, pid in enumerate(stored["productid"])}
        missing = [int(pid) for pid in productids if int(pid) not in row]
        if missing:
            raise DataError(
                f"{tag} was not cross-fitted on these learning rows ({len(missing)} products missing, "
                f"e.g. {missing[0]}): train it again on this data"
            )
        return stored["proba"][[row[int(pid)] for pid in productids]]


def save_trained_rows(directory: Path, productids: pd.Series) -> None:
    """Store the products of a training run's data in a version's folder (sorted; 286 KB compressed for the
    challenge's 84,916)."""
    np.savez_compressed(directory / TRAINED_ROWS_FILE, productid=np.sort(productids.to_numpy(dtype=np.int64)))


def trained_rows(tag: str) -> np.ndarray:
    """The products of the data version ``tag`` was trained with; DataError if it does not record them."""
    path = model_path(tag) / TRAINED_ROWS_FILE
    if not path.is_file():
        raise DataError(f"{tag} does not record the products it was trained with: train the models again")
    with np.load(path) as stored:
        return stored["productid"]
