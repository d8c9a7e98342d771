"""The entry service's monitoring: the prediction log, drift gauges, feedback and live accuracy, /health."""

from __future__ import annotations

import logging
import threading
import time
import typing as t

from pydantic import ValidationError

from ..categories import CATEGORY_CODES
from ..config import Settings
from ..data.origin import UNKNOWN, origin_warning
from ..monitoring.drift import drift_of_recent
from ..monitoring.prediction_log import (
    PredictionLog,
    UnknownPrediction,
    live_accuracy,
    new_prediction_id,
    prediction_record,
    record_feedback,
)
from . import metrics
from .errors import ClientError, plain_words
from .hot_swap import ProductionFollower
from .schemas import FeedbackInput, Product

log = logging.getLogger(__name__)


class Observer:
    """Logs every answered prediction off the request path and keeps the drift gauges fresh."""

    def __init__(self, settings: Settings, fusion: ProductionFollower):
        self.settings, self.fusion = settings, fusion
        self.prediction_log = PredictionLog(
            settings.database_url,
            settings.log_flush_seconds,
            settings.log_buffer_max,
            on_dropped=metrics.LOG_DROPPED.inc,
            on_backlog=metrics.LOG_BACKLOG.set,  # a series from the start, not only after /health or a drift refresh
        )
        self.last_drift: dict | None = None
        for missing in ("image", "text"):  # exported at 0 from the start, so dashboards find the series
            metrics.FALLBACKS.labels(missing=missing)
        warning = origin_warning(fusion.current[1].get("trained_on"))
        if warning:
            log.warning("serving %s: %s", fusion.current[0], warning)
        threading.Thread(target=self._refresh_drift_periodically, name="drift", daemon=True).start()

    def record(self, endpoint: str, product: Product, answer: dict, brightness: float | None, started: float) -> None:
        """Give the answer its id, queue its log row and count it in the metrics (no I/O here)."""
        answer["prediction_id"] = new_prediction_id()
        image = None
        if product.image is not None and product.size is not None:
            image = {"width": product.size[0], "height": product.size[1], "brightness": brightness}
        record = prediction_record(
            prediction_id=answer["prediction_id"],
            endpoint=endpoint,
            text=product.text,
            image=image,
            answer=answer,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        self.prediction_log.record(record)
        metrics.count_prediction(endpoint, answer, record["modality"])

    def refresh_drift(self) -> dict | None:
        """Compare the recent prediction log with the production reference profile; update the gauges."""
        self.prediction_log.flush()
        found = drift_of_recent(self.settings, self.fusion.current[0], last=self.settings.drift_window)
        if found is None:
            return None
        result = found[0]
        metrics.DRIFT_SCORE.set(result["drift_score"])
        metrics.DRIFT_DETECTED.set(1 if result["drifted"] else 0)
        for entry in result["features"]:
            if entry.get("psi") is not None:
                metrics.DRIFT_FEATURE_PSI.labels(feature=entry["feature"]).set(entry["psi"])
        self.last_drift = result
        return result

    def _refresh_drift_periodically(self) -> None:
        while True:
            time.sleep(self.settings.drift_interval_seconds)
            try:
                self.refresh_drift()
            except Exception:  # monitoring must never take the service down
                log.exception("drift refresh failed")

    def feedback(self, body: dict) -> dict:
        """Store the true category of a logged prediction; ClientError for a bad body or an unknown id."""
        try:
            item = FeedbackInput.model_validate(body)
        except ValidationError as exc:
            raise ClientError(f"invalid feedback: {plain_words(exc, FeedbackInput)}", 400) from exc
        if item.prdtypecode not in CATEGORY_CODES:
            raise ClientError(f"unknown prdtypecode {item.prdtypecode}")
        self.prediction_log.flush()  # the prediction may still be queued
        try:
            result = record_feedback(self.prediction_log.engine, item.prediction_id, item.prdtypecode)
        except UnknownPrediction as exc:
            raise ClientError(str(exc), 404) from exc
        metrics.FEEDBACK.labels(correct=str(result["correct"]).lower()).inc()
        accuracy = self.accuracy()
        if accuracy["accuracy"] is not None:
            metrics.LIVE_ACCURACY.set(accuracy["accuracy"])
        return {**result, "live_accuracy": accuracy}

    def accuracy(self) -> dict:
        """Accuracy over the latest feedback window."""
        return live_accuracy(self.prediction_log.engine, self.settings.accuracy_window)

    def problems(self, services: dict[str, dict | str]) -> list[str]:
        """Why the service is degraded: silent model services, a refused or pending trio, lost or piled-up log rows."""
        found = [f"{name} model service: {state}" for name, state in services.items() if isinstance(state, str)]
        found += self.fusion.problems()
        if self.prediction_log.dropped:
            found.append(f"prediction log dropped {self.prediction_log.dropped} rows (database unreachable?)")
        if self.prediction_log.backlog > self.settings.log_backlog_alert:
            found.append(
                f"prediction log backlog {self.prediction_log.backlog} rows > {self.settings.log_backlog_alert}"
                " (RAKUTEN_LOG_BACKLOG_ALERT): rows pile up"
            )
        return found

    def health(self, training_job: str | None, services: dict[str, dict | str]) -> dict[str, t.Any]:
        """Service status with its reasons, the models answering, what data they learned from (with a
        warning when it is the synthetic catalogue) and their test metrics, the log and drift state.

        ``services`` holds each model service's status, or why it gave none (see `clients.probe_services`).
        """
        fusion_tag, config = self.fusion.current
        metrics.LOG_BACKLOG.set(self.prediction_log.backlog)
        problems = self.problems(services)
        trained_on = config.get("trained_on", UNKNOWN)  # absent from versions trained before it was recorded
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            # Not a problem (the service works as built), but what its answers are worth: shown on /ui.
            "trained_on": trained_on,
            "warning": origin_warning(trained_on),
            "models": {"fusion": fusion_tag, "text": config["text_model"], "image": config["image_model"]},
            "model_services": services,
            "text_weight": config["text_weight"],
            "method": config["method"],
            "metrics": config.get("test", {}),
            "training_job": training_job,
            "refused_models": self.fusion.refused,
            "prediction_log": {
                "written": self.prediction_log.written,
                "backlog": self.prediction_log.backlog,
                "dropped": self.prediction_log.dropped,
            },
            "drift": None
            if self.last_drift is None
            else {k: self.last_drift[k] for k in ("drift_score", "drifted", "drifted_features", "window")},
        }

    def close(self) -> None:
        """Write every queued prediction-log row (the service calls this on shutdown)."""
        self.prediction_log.close()
