"""The job process started by POST /train: ``python -m rakuten_classifier.pipeline.job_runner JOB_DIR``.

Trains everything (or runs the retrain check), records stages and metrics in the job's status file,
and releases the lock that makes jobs run one at a time.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from .jobs import LOCK_FILE, STAGES, now, write_status
from .retrain import retrain
from .steps import train_fusion, train_image, train_text
from .training_data import load_training_data

log = logging.getLogger(__name__)


def run_retrain_job(job_dir: Path) -> None:
    """The retrain variant: `rakuten retrain` with its default thresholds, result in the status."""
    result = retrain()
    write_status(
        job_dir,
        state="succeeded",
        stage=STAGES[4],
        progress=1.0,
        finished_at=now(),
        retrain=result,
        promoted=result["promoted"],
        outcome=result["outcome"],
    )


def run_job(job_dir: Path, data_dir: Path | None, retrain_check: bool = False) -> int:
    """The job process: train everything, record stages and metrics, release the lock."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lock = job_dir.parent / LOCK_FILE

    def stage(index: int) -> None:
        write_status(job_dir, stage=STAGES[index], progress=round(index / (len(STAGES) - 1), 2))
        log.info("stage: %s", STAGES[index])

    try:
        started = time.perf_counter()
        if retrain_check:
            run_retrain_job(job_dir)
            return 0
        stage(0)
        data = load_training_data(data_dir=data_dir)
        stage(1)
        text = train_text(data)
        stage(2)
        image = train_image(data)
        stage(3)
        fusion = train_fusion(data, text_tag=text["tag"], image_tag=image["tag"])
        metrics = {
            "text_test": text["metrics"]["test"],
            "image_test": image["metrics"]["test"],
            "fused_test": fusion["metrics"]["fused"],
        }
        write_status(
            job_dir,
            state="succeeded",
            stage=STAGES[4],
            progress=1.0,
            finished_at=now(),
            seconds=round(time.perf_counter() - started, 1),
            metrics=metrics,
            models={"text": text["tag"], "image": image["tag"], "fusion": fusion["tag"]},
            promoted=fusion["promoted"],
            promotion=fusion["promotion"],
        )
        return 0
    except Exception as exc:  # recorded for the status call; the traceback is in the log
        log.exception("training job failed")
        write_status(job_dir, state="failed", error=f"{type(exc).__name__}: {exc}", finished_at=now())
        return 1
    finally:
        lock.unlink(missing_ok=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="run one training job (started by POST /train)")
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--retrain", action="store_true")
    arguments = parser.parse_args()
    raise SystemExit(run_job(arguments.job_dir, arguments.data_dir, arguments.retrain))
