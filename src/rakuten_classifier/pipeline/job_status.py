"""The status file of a training job: what the job process (job_runner) writes and the server (serving/jobs) reads.

Each job has a folder under ``<data_root>/jobs`` holding STATUS_FILE (JSON: state, stage, progress,
metrics...); LOCK_FILE in the jobs folder names the running job and its process, so jobs run one at a time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

STATUS_FILE = "status.json"
LOCK_FILE = "active.lock"
# The stages `train_all` goes through (pipeline/steps.py announces each; the refit only with
# RAKUTEN_REFIT_ALL_ROWS), then "done".
STAGES = ("loading data", "text model", "image model", "fusion and promotion", "refit on every labelled row", "done")


def now() -> str:
    """The time a status records (UTC, ISO 8601, to the second)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_status(job_dir: Path, **fields) -> None:
    """Update the job's status file with ``fields``; atomic, so a reader never sees half a file."""
    path = job_dir / STATUS_FILE
    status = json.loads(path.read_text()) if path.exists() else {}
    status.update(fields)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2, default=str))
    tmp.replace(path)
