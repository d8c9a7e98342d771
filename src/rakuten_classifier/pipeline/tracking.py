"""MLflow tracking: the store and artifact location of the settings (config.py: SQLite under the data root
unless RAKUTEN_MLFLOW_TRACKING_URI or MLFLOW_TRACKING_URI says otherwise)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings

if TYPE_CHECKING:
    from mlflow import ActiveRun

EXPERIMENT = "rakuten-classifier"


def tracking_uri(settings: Settings) -> str:
    """The tracking store of the settings; the data root is created for the default SQLite store."""
    if settings.mlflow_tracking_uri is None:
        settings.data_root.mkdir(parents=True, exist_ok=True)
    return settings.mlflow_uri


@contextlib.contextmanager
def tracked_run(settings: Settings, run_name: str, tags: dict | None = None) -> Iterator[ActiveRun]:
    """An MLflow run in the project's experiment (artifacts at ``settings.mlflow_artifacts``)."""
    import mlflow

    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which Settings then read as the
    # user's choice: a second run in the same process with another data root logged into the first
    # one's store (seen in the test suite). The variable is restored when the outermost run ends.
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri(settings))
    # "Creating initial MLflow database tables...", "Updating database tables": MLflow's INFO lines on a
    # new SQLite store, nothing a user acts on (issue 38); its warnings and errors still show.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    try:
        with _run(settings, run_name, tags) as run:
            yield run
    finally:
        if exported is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = exported


@contextlib.contextmanager
def _run(settings: Settings, run_name: str, tags: dict | None) -> Iterator[ActiveRun]:
    import mlflow

    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=settings.mlflow_artifacts)
    else:
        experiment_id = experiment.experiment_id
    # Inside another run (a retrain wrapping the training steps) the step becomes a child run.
    nested = mlflow.active_run() is not None
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags, nested=nested) as run:
        yield run


def log_evaluation(prefix: str, scores: dict, report: str, confusion_png: Path | None) -> None:
    """Log a split's scores as metrics and the report and confusion matrix as artifacts."""
    import mlflow

    mlflow.log_metrics({f"{prefix}_{k}": v for k, v in scores.items() if isinstance(v, (int, float)) and v is not None})
    mlflow.log_text(report, f"{prefix}_classification_report.txt")
    if confusion_png is not None:
        mlflow.log_artifact(str(confusion_png))
