"""The record of the alerts Alertmanager sent (the ``alerts`` table), and what each one started.

An alert is one firing: Alertmanager names it by its fingerprint (a hash of its labels) and the time
it started firing, and re-sends it, unchanged, until it resolves. ``record_alerts`` stores each new
one in the same transaction as the action it calls for, so a re-send (the same key) starts nothing,
and a call whose action is refused (a 409) leaves the store as it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from ..data.schema import alerts, get_engine

log = logging.getLogger(__name__)

# What an alert's arrival did (the `action` column and the webhook's answer).
STARTED = "started retraining job"
RECORDED = "recorded"
RECORDED_RESOLVED = "recorded (already resolved)"


@dataclass(frozen=True)
class Alert:
    """One alert of an Alertmanager notification, as the webhook validated it."""

    fingerprint: str
    starts_at: datetime  # UTC
    alertname: str
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]
    ends_at: datetime | None  # UTC; None while firing (Alertmanager sends its zero time)

    @property
    def key(self) -> tuple[str, datetime]:
        return self.fingerprint, self.starts_at


def _existing(conn: sa.Connection, alert: Alert) -> sa.RowMapping | None:
    """The stored firing of an alert (its key: fingerprint and start, in UTC as every time is written)."""
    query = sa.select(alerts).where(alerts.c.fingerprint == alert.fingerprint, alerts.c.starts_at == alert.starts_at)
    return conn.execute(query).mappings().first()


Outcomes = tuple[list[dict], str | None]  # one outcome a distinct alert, and the job started (or None)


def record_alerts(
    engine: sa.Engine, received: list[Alert], acts: Callable[[Alert], bool], start: Callable[[], str]
) -> Outcomes:
    """Store each alert of a notification not stored yet, and start one job for the new firing ones that
    ``acts`` selects; a resolved alert marks its stored firing resolved. Returns one outcome a distinct alert
    (alertname, fingerprint, starts_at, status, outcome, job_id) and the job started (or None).

    One transaction: when ``start`` raises (a job already runs: a 409), nothing is stored, so Alertmanager's
    next re-send of the same alert starts the job then. Concurrent identical calls: the unique key lets one
    commit; the other's transaction fails and is retried once, then sees the stored alert.
    """
    for attempt in range(2):
        try:
            with engine.begin() as conn:
                return _record(conn, received, acts, start)
        except sa.exc.IntegrityError:
            if attempt:
                raise
            log.info("alerts: a concurrent call stored the same alert; reading it again")
    raise AssertionError("unreachable")


def _record(
    conn: sa.Connection, received: list[Alert], acts: Callable[[Alert], bool], start: Callable[[], str]
) -> Outcomes:
    now = datetime.now(UTC)
    outcomes: list[dict] = []
    to_start: list[tuple[int, int]] = []  # (outcome index, row id) of the alerts waiting for the job id
    seen: set[tuple[str, datetime]] = set()
    for alert in received:
        if alert.key in seen:  # the same alert twice in one notification: the first one counts
            continue
        seen.add(alert.key)
        outcome = {
            "alertname": alert.alertname,
            "fingerprint": alert.fingerprint,
            "starts_at": alert.starts_at.isoformat(),
            "status": alert.status,
            "job_id": None,
        }
        stored = _existing(conn, alert)
        if stored is not None:
            outcome["job_id"] = stored["job_id"]
            if alert.status == "resolved" and stored["status"] != "resolved":
                conn.execute(
                    alerts.update()
                    .where(alerts.c.id == stored["id"])
                    .values(status="resolved", resolved_at=alert.ends_at or now)
                )
                outcome["outcome"] = "marked resolved"
            else:
                outcome["outcome"] = "already received: nothing started"
            outcomes.append(outcome)
            continue
        acting = alert.status == "firing" and acts(alert)
        action = STARTED if acting else (RECORDED if alert.status == "firing" else RECORDED_RESOLVED)
        inserted = conn.execute(
            alerts.insert().values(
                fingerprint=alert.fingerprint,
                starts_at=alert.starts_at,
                alertname=alert.alertname,
                status=alert.status,
                labels=json.dumps(alert.labels, sort_keys=True),
                annotations=json.dumps(alert.annotations, sort_keys=True),
                received_at=now,
                resolved_at=alert.ends_at if alert.status == "resolved" else None,
                action=action,
            )
        )
        outcome["outcome"] = action
        if acting:
            assert inserted.inserted_primary_key is not None  # an INSERT always returns its primary key
            to_start.append((len(outcomes), inserted.inserted_primary_key[0]))
        outcomes.append(outcome)
    job_id = None
    if to_start:
        job_id = start()  # raises (a 409) before anything is committed
        conn.execute(alerts.update().where(alerts.c.id.in_([row for _, row in to_start])).values(job_id=job_id))
        for index, _ in to_start:
            outcomes[index]["job_id"] = job_id
        log.info("alerts: %s started job %s", ", ".join(outcomes[i]["alertname"] for i, _ in to_start), job_id)
    return outcomes, job_id


def recorded_alerts(url: str) -> list[dict]:
    """Every stored alert, oldest first, labels and annotations decoded."""
    engine = get_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(alerts).order_by(alerts.c.id)).mappings().all()
    engine.dispose()
    return [{**row, "labels": json.loads(row["labels"]), "annotations": json.loads(row["annotations"])} for row in rows]
