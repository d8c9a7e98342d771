"""Production monitoring: the prediction log, feedback and live accuracy.

Every served prediction becomes one row of the ``predictions`` table. The request path only puts
a record on an in-memory queue; a writer thread inserts queued records in batches, and
``PredictionLog.close`` (called when the service stops) writes whatever is still queued, so a
graceful stop loses nothing. If the database is unreachable the records stay queued (bounded by
``log_buffer_max``; overflow is counted and logged, never silent) and are retried.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

from ..categories import CATEGORY_CODES
from ..data.schema import feedback, get_engine, predictions
from .signals import detect_language, text_fingerprint

log = logging.getLogger(__name__)


def new_prediction_id() -> str:
    """A random id returned with the prediction and used to send feedback on it."""
    return uuid.uuid4().hex


def prediction_record(
    *,
    prediction_id: str,
    endpoint: str,
    text: str,
    image: dict | None,
    answer: dict,
    latency_ms: float,
) -> dict:
    """The log row of one answered prediction (``image``: width, height, brightness, or None)."""
    top = [[entry["prdtypecode"], entry["probability"]] for entry in answer["top_k"]]
    modality = "both" if text and image else ("text" if text else "image")
    models = answer["models"]
    return {
        "id": prediction_id,
        "created_at": datetime.now(UTC),
        "endpoint": endpoint,
        "text_sha256": text_fingerprint(text),
        "text_length": len(text),
        "language": detect_language(text),
        "image_present": image is not None,
        "image_width": image.get("width") if image else None,
        "image_height": image.get("height") if image else None,
        "image_brightness": image.get("brightness") if image else None,
        "modality": modality,
        "prdtypecode": answer["prdtypecode"],
        "confidence": answer["probability"],
        "top_probabilities": json.dumps(top),
        "text_weight": answer["text_weight"],
        "fusion_model": models.get("fusion", ""),
        "text_model": models.get("text"),
        "image_model": models.get("image"),
        "latency_ms": round(latency_ms, 2),
    }


class PredictionLog:
    """Buffered writer of prediction rows: ``record`` never blocks on the database."""

    def __init__(
        self,
        url: str,
        flush_seconds: float = 1.0,
        buffer_max: int = 100_000,
        on_dropped: Callable[[int], None] | None = None,
        on_backlog: Callable[[int], None] | None = None,
    ):
        self.engine = get_engine(url)
        self.flush_seconds = flush_seconds
        self.buffer_max = buffer_max
        self.on_dropped = on_dropped
        self.on_backlog = on_backlog  # told the backlog at start and after each period's write (a gauge)
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[dict] = queue.Queue()
        self._pending: list[dict] = []  # taken from the queue, not yet committed
        self._lock = threading.Lock()  # one writer at a time: the thread, or flush()/close()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def record(self, row: dict) -> None:
        """Queue one row for writing (called on the request path: no I/O here)."""
        if self._queue.qsize() + len(self._pending) >= self.buffer_max:
            self.dropped += 1
            if self.on_dropped:
                self.on_dropped(1)
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("prediction log buffer full (%d rows): %d rows dropped so far", self.buffer_max, self.dropped)
            return
        self._queue.put_nowait(row)

    @property
    def backlog(self) -> int:
        """Rows recorded but not yet in the database."""
        return self._queue.qsize() + len(self._pending)

    def flush(self) -> int:
        """Write every queued row now; returns how many were written (raises if the database fails)."""
        with self._lock:
            while True:
                try:
                    self._pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not self._pending:
                return 0
            rows = self._pending
            with self.engine.begin() as conn:
                conn.execute(predictions.insert(), rows)
            self._pending = []
            self.written += len(rows)
            return len(rows)

    def _report_backlog(self) -> None:
        if self.on_backlog:
            self.on_backlog(self.backlog)

    def _run(self) -> None:
        self._report_backlog()
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # database down: rows stay pending and are retried next period
                log.exception("prediction log: write failed; %d rows kept for retry", self.backlog)
            self._report_backlog()

    def close(self) -> None:
        """Stop the writer and write what is left (the service calls this on shutdown)."""
        self._stop.set()
        self._thread.join(timeout=10)
        for attempt in range(3):
            try:
                written = self.flush()
                log.info("prediction log closed: %d rows written in total (%d at close)", self.written, written)
                break
            except Exception:
                log.exception("prediction log: final write failed (attempt %d)", attempt + 1)
                time.sleep(0.5)
        self.engine.dispose()


class UnknownPrediction(LookupError):
    """Feedback names a prediction id that is not in the log."""


def record_feedback(engine: sa.Engine, prediction_id: str, prdtypecode: int) -> dict:
    """Store the true category of a logged prediction (a second call corrects the first)."""
    if prdtypecode not in CATEGORY_CODES:
        raise ValueError(f"unknown prdtypecode {prdtypecode}; expected one of the 27 challenge codes")
    with engine.begin() as conn:
        predicted = conn.execute(
            sa.select(predictions.c.prdtypecode).where(predictions.c.id == prediction_id)
        ).scalar_one_or_none()
        if predicted is None:
            raise UnknownPrediction(f"no logged prediction with id {prediction_id!r}")
        row = {"prdtypecode": prdtypecode, "correct": predicted == prdtypecode, "created_at": datetime.now(UTC)}
        updated = conn.execute(feedback.update().where(feedback.c.prediction_id == prediction_id).values(**row))
        if updated.rowcount == 0:
            conn.execute(feedback.insert().values(prediction_id=prediction_id, **row))
    return {
        "prediction_id": prediction_id,
        "predicted": predicted,
        "prdtypecode": prdtypecode,
        "correct": row["correct"],
    }


def live_accuracy(engine: sa.Engine, window: int) -> dict:
    """Accuracy of the predictions behind the latest ``window`` feedback rows."""
    with engine.connect() as conn:
        latest = (
            conn.execute(sa.select(feedback.c.correct).order_by(feedback.c.created_at.desc()).limit(window))
            .scalars()
            .all()
        )
    labelled = len(latest)
    return {"window": window, "labelled": labelled, "accuracy": round(sum(latest) / labelled, 6) if labelled else None}


def recent_predictions(url: str, last: int | None = None, since: datetime | None = None) -> pd.DataFrame:
    """Logged predictions, newest ``last`` rows and/or those after ``since``, oldest first."""
    engine = get_engine(url)
    query = sa.select(predictions).order_by(predictions.c.created_at.desc())
    if since is not None:
        query = query.where(predictions.c.created_at >= since)
    if last is not None:
        query = query.limit(last)
    with engine.connect() as conn:
        frame = pd.read_sql(query, conn)
    engine.dispose()
    return frame.iloc[::-1].reset_index(drop=True)
