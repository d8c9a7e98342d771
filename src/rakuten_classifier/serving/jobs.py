"""Training jobs started by POST /train: a separate process, one at a time, with status on disk.

The serving process only spawns and reads files (this module imports no training code); training
never runs inside a serving worker. The job process itself is :mod:`rakuten_classifier.pipeline.job_runner`;
the status file both sides share is :mod:`rakuten_classifier.pipeline.job_status`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from ..pipeline.job_status import LOCK_FILE, STAGES, STATUS_FILE, now, write_status
from .errors import ClientError

log = logging.getLogger(__name__)

LOG_FILE = "job.log"
# What a job process imports beyond serving (pyproject's [train] extra). The Bento and the container
# install the serving set only: there a job would die on its first import, so /train refuses at once.
TRAINING_PACKAGES = ("torch", "torchvision", "mlflow")


def missing_training_packages() -> list[str]:
    """Those of TRAINING_PACKAGES this Python cannot import (found without importing them)."""

    def importable(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ImportError:  # a finder that refuses the name
            return False

    return [name for name in TRAINING_PACKAGES if not importable(name)]


class JobConflict(ClientError):
    """A training job is already running: a 409."""

    def __init__(self, message: str):
        super().__init__(message, status=409)


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
            write_status(self.jobs_dir / job_id, state="failed", error="job process died", finished_at=now())
        return None

    def start(self, data_dir: Path | None = None, retrain: bool = False, from_alert: bool = False) -> str:
        """Spawn a training job (or a `rakuten retrain` check; ``from_alert``: its variant started by a drift
        alert, which trains only on new labelled rows: pipeline/retrain.py); JobConflict (409) if one is
        running, a ClientError (409) where the training requirements are not installed."""
        missing = missing_training_packages()
        if missing:
            raise ClientError(
                f"this install serves only: training needs {', '.join(missing)} (the training requirements: "
                "requirements.lock, or pip install '.[train]'); train where they are installed, then promote",
                status=409,
            )
        if self.active_job() is not None:
            raise JobConflict(f"training job {self.active_job()} is still running")
        job_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        lock = self.jobs_dir / LOCK_FILE
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError as exc:  # another worker won the race
            raise JobConflict("a training job is starting") from exc
        job_dir = self.jobs_dir / job_id
        job_dir.mkdir()
        write_status(
            job_dir,
            job_id=job_id,
            state="running",
            stage=STAGES[0],
            progress=0.0,
            started_at=now(),
            data_dir=str(data_dir) if data_dir else None,
            kind="retrain" if retrain or from_alert else "train",
            started_by="alert" if from_alert else "request",
        )
        command = [sys.executable, "-m", "rakuten_classifier.pipeline.job_runner", str(job_dir)]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        if retrain or from_alert:
            command.append("--retrain")
        if from_alert:
            command.append("--from-alert")
        with open(job_dir / LOG_FILE, "ab") as log_file:
            child = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
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
