"""The job process started by POST /train: ``python -m rakuten_classifier.pipeline.job_runner JOB_DIR``.

Runs `train_all` (or the retrain check), records its stages and results in the job's status file
(pipeline/job_status.py), and releases the lock that makes jobs run one at a time.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import get_settings
from .job_status import LOCK_FILE, STAGES, now, write_status
from .retrain import retrain

log = logging.getLogger(__name__)


def _retrain_results(job_dir: Path, from_alert: bool) -> dict:
    """The retrain variant: `rakuten retrain` with its default thresholds; started by an alert, it trains
    only on new labelled rows, and writes its drift report and predictions to label beside the others."""
    if from_alert:
        settings = get_settings()
        result = retrain(settings, new_rows_required=True, action_dir=settings.reports_dir / f"alert-{job_dir.name}")
    else:
        result = retrain()
    return {"retrain": result, "promoted": result["promoted"], "outcome": result["outcome"]}


def _train_results(job_dir: Path, data_dir: Path | None) -> dict:
    """`train_all`, each stage recorded in the status file as it begins."""

    from .steps import train_all  # the modelling stack: not for a retrain check that trains nothing

    def stage(name: str) -> None:
        write_status(job_dir, stage=name, progress=round(STAGES.index(name) / (len(STAGES) - 1), 2))
        log.info("stage: %s", name)

    result = train_all(data_dir=data_dir, on_stage=stage)
    text, image, fusion = result["text"], result["image"], result["fusion"]
    return {
        "seconds": result["seconds"],
        "metrics": {
            "text_test": text["metrics"]["test"],
            "image_test": image["metrics"]["test"],
            "fused_test": fusion["metrics"]["fused"],
        },
        "models": {"text": text["tag"], "image": image["tag"], "fusion": fusion["tag"]},
        "promoted": fusion["promoted"],
        "promotion": fusion["promotion"],
    }


def run_job(job_dir: Path, data_dir: Path | None, retrain_check: bool = False, from_alert: bool = False) -> int:
    """The job process: train everything (or run the retrain check), record the outcome, release the lock."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        results = _retrain_results(job_dir, from_alert) if retrain_check else _train_results(job_dir, data_dir)
        write_status(job_dir, state="succeeded", stage=STAGES[-1], progress=1.0, finished_at=now(), **results)
        return 0
    except Exception as exc:  # recorded for the status call; the traceback is in the log
        log.exception("training job failed")
        write_status(job_dir, state="failed", error=f"{type(exc).__name__}: {exc}", finished_at=now())
        return 1
    finally:
        (job_dir.parent / LOCK_FILE).unlink(missing_ok=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="run one training job (started by POST /train)")
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--from-alert", action="store_true", help="the retrain a drift alert started (POST /alerts)")
    arguments = parser.parse_args()
    raise SystemExit(run_job(arguments.job_dir, arguments.data_dir, arguments.retrain, arguments.from_alert))
