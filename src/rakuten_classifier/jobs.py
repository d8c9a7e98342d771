"""Training jobs started by POST /train: a separate process, one at a time, with status on disk.

The serving process only spawns and reads files; training never runs inside a serving worker.
``python -m rakuten_classifier.jobs JOB_DIR [--data-dir DIR]`` is the job process itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
LOG_FILE = "job.log"
LOCK_FILE = "active.lock"
STAGES = ("loading data", "text model", "image model", "fusion and promotion", "done")


class JobConflict(RuntimeError):
    """A training job is already running."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A finished child that nobody waited for is a zombie: it exists but is not running.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return True


def _write_status(job_dir: Path, **fields) -> None:
    path = job_dir / STATUS_FILE
    status = json.loads(path.read_text()) if path.exists() else {}
    status.update(fields)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2, default=str))
    tmp.replace(path)  # atomic: a reader never sees half a file


class JobManager:
    """Starts job processes and reports their status from their folders under ``jobs_dir``."""

    def __init__(self, jobs_dir: Path):
        self.jobs_dir = Path(jobs_dir)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._children: dict[str, subprocess.Popen] = {}

    def active_job(self) -> str | None:
        """Id of the running job, clearing a lock left by a process that died."""
        lock = self.jobs_dir / LOCK_FILE
        try:
            job_id, pid = lock.read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        child = self._children.get(job_id)
        if child is not None and child.poll() is None:
            return job_id
        if child is None and _pid_alive(int(pid)):
            return job_id
        lock.unlink(missing_ok=True)
        status = self.status(job_id)
        if status and status.get("state") == "running":
            _write_status(self.jobs_dir / job_id, state="failed", error="job process died", finished_at=_now())
        return None

    def start(self, data_dir: Path | None = None, retrain: bool = False) -> str:
        """Spawn a training job (or a `rakuten retrain` check); JobConflict if one is running."""
        if self.active_job() is not None:
            raise JobConflict(f"training job {self.active_job()} is still running")
        job_id = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        lock = self.jobs_dir / LOCK_FILE
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError as exc:  # another worker won the race
            raise JobConflict("a training job is starting") from exc
        job_dir = self.jobs_dir / job_id
        job_dir.mkdir()
        _write_status(job_dir, job_id=job_id, state="running", stage=STAGES[0], progress=0.0, started_at=_now(),
                      data_dir=str(data_dir) if data_dir else None, kind="retrain" if retrain else "train")
        command = [sys.executable, "-m", "rakuten_classifier.jobs", str(job_dir)]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        if retrain:
            command.append("--retrain")
        with open(job_dir / LOG_FILE, "ab") as log_file:
            child = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self._children[job_id] = child
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{job_id} {child.pid}")
        return job_id

    def status(self, job_id: str, tail_lines: int = 20) -> dict | None:
        """State, stage, progress, metrics and log tail of a job; None if unknown."""
        if not job_id or "/" in job_id or job_id.startswith("."):
            return None
        job_dir = self.jobs_dir / job_id
        try:
            status = json.loads((job_dir / STATUS_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        try:
            lines = (job_dir / LOG_FILE).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        status["log_tail"] = [line[-300:] for line in lines[-tail_lines:]]
        return status


def run_retrain_job(job_dir: Path) -> None:
    """The retrain variant: `rakuten retrain` with its default thresholds, result in the status."""
    from .retrain import retrain

    result = retrain()
    _write_status(job_dir, state="succeeded", stage=STAGES[4], progress=1.0, finished_at=_now(),
                  retrain=result, promoted=result["promoted"], outcome=result["outcome"])


def run_job(job_dir: Path, data_dir: Path | None, retrain: bool = False) -> int:
    """The job process: train everything, record stages and metrics, release the lock."""
    from . import training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lock = job_dir.parent / LOCK_FILE

    def stage(index: int) -> None:
        _write_status(job_dir, stage=STAGES[index], progress=round(index / (len(STAGES) - 1), 2))
        log.info("stage: %s", STAGES[index])

    try:
        started = time.perf_counter()
        if retrain:
            run_retrain_job(job_dir)
            return 0
        stage(0)
        data = training.load_training_data(data_dir=data_dir)
        stage(1)
        text = training.train_text(data)
        stage(2)
        image = training.train_image(data)
        stage(3)
        fusion = training.train_fusion(data, text_tag=text["tag"], image_tag=image["tag"])
        metrics = {"text_test": text["metrics"]["test"], "image_test": image["metrics"]["test"],
                   "fused_test": fusion["metrics"]["fused"]}
        _write_status(job_dir, state="succeeded", stage=STAGES[4], progress=1.0, finished_at=_now(),
                      seconds=round(time.perf_counter() - started, 1), metrics=metrics,
                      models={"text": text["tag"], "image": image["tag"], "fusion": fusion["tag"]},
                      promoted=fusion["promoted"], promotion=fusion["promotion"])
        return 0
    except Exception as exc:  # recorded for the status call; the traceback is in the log
        log.exception("training job failed")
        _write_status(job_dir, state="failed", error=f"{type(exc).__name__}: {exc}", finished_at=_now())
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
