"""POST /alerts: Alertmanager's webhook (admin token, serving/http_guard.py).

Alertmanager posts a notification (webhook payload version 4) for a group of alerts, and posts it
again while they fire (its repeat interval, and retries). Every alert is stored once per firing in
the ``alerts`` table (monitoring/alert_log.py); a new firing ``RakutenInputDrift`` starts the same
gated retraining job as ``POST /train {"retrain": true}``, in its alert variant: with no new labelled
rows it trains nothing, and writes the drift report and the predictions to label instead
(pipeline/retrain.py, docs/monitoring.md). The other alerts are recorded only: a retrain cannot fix
5xx answers or a database that drops log rows.

Answers: 202 when a job started, 200 otherwise (a re-send starts nothing), 400 for a payload that is
not Alertmanager's (nothing stored), 409 while a job runs (nothing stored: the next re-send starts it).
"""

from __future__ import annotations

import json
import typing as t
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..monitoring.alert_log import Alert, record_alerts
from .errors import ClientError

# The alerts whose firing starts a job (deploy/alerts.yml names them; docs/monitoring.md says why these).
ACTING_ALERTS = frozenset({"RakutenInputDrift"})
MAX_ALERTS = 1000  # alerts in one notification (Alertmanager's max_alerts: 0, unlimited, by default)


def _utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:30:00+01:00
        raise ValueError("time out of range") from exc


class AlertItem(BaseModel):
    """One alert of the notification (fields Alertmanager always sends; others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    status: t.Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: AwareDatetime  # Alertmanager's field names
    endsAt: AwareDatetime | None = None
    fingerprint: str = Field(pattern=r"^[0-9a-fA-F]{1,64}$")

    @field_validator("startsAt", "endsAt")
    @classmethod
    def in_utc(cls, moment: datetime | None) -> datetime | None:
        return None if moment is None else _utc(moment)

    @field_validator("labels")
    @classmethod
    def named(cls, labels: dict[str, str]) -> dict[str, str]:
        name = labels.get("alertname")
        if not name:
            raise ValueError("labels.alertname is missing")
        if len(name) > 128 or not name.isprintable():
            raise ValueError("labels.alertname: at most 128 printable characters")
        return labels


class Notification(BaseModel):
    """Alertmanager's webhook payload (version 4)."""

    model_config = ConfigDict(extra="ignore")

    version: t.Literal["4"]
    status: t.Literal["firing", "resolved"]
    alerts: list[AlertItem] = Field(min_length=1, max_length=MAX_ALERTS)


def parse_notification(body: object) -> list[Alert]:
    """The alerts of a webhook payload; ClientError (400) saying what is wrong with it."""
    try:
        notification = Notification.model_validate(body)
    except ValidationError as exc:
        detail = json.loads(exc.json(include_url=False, include_context=False, include_input=False))
        raise ClientError("not an Alertmanager webhook payload (version 4)", 400, detail) from None
    found = []
    for item in notification.alerts:
        if item.startsAt.year < 2000:
            raise ClientError(f"alert {item.fingerprint}: startsAt is before 2000", 400)
        ended = item.endsAt if item.endsAt is not None and item.endsAt.year >= 2000 else None  # 0001: still firing
        found.append(
            Alert(
                fingerprint=item.fingerprint.lower(),
                starts_at=item.startsAt,
                alertname=item.labels["alertname"],
                status=item.status,
                labels=item.labels,
                annotations=item.annotations,
                ends_at=ended,
            )
        )
    return found


class AlertReceiver:
    """The webhook's work: validate, then store and act in one transaction (monitoring/alert_log.py)."""

    def __init__(self, database_url: str, start_retrain: Callable[[], str]):
        from ..data.schema import get_engine

        self.engine = get_engine(database_url)
        self.start_retrain = start_retrain  # JobManager.start(retrain=True, from_alert=True): a job id, or a 409

    def receive(self, body: object) -> tuple[int, dict]:
        """HTTP status and answer for a notification; ClientError for a bad payload (400) or a running job (409)."""
        received = parse_notification(body)
        outcomes, job_id = record_alerts(
            self.engine, received, lambda alert: alert.alertname in ACTING_ALERTS, self.start_retrain
        )
        answer = {"job_id": job_id, "alerts": outcomes}
        if job_id is not None:
            answer["status_url"] = f"/jobs/{job_id}"
        return (202 if job_id else 200), answer
