"""Alertmanager's webhook (serving/alerts.py, monitoring/alert_log.py), on SQLite and PostgreSQL: every alert
stored once per firing with what it started, a drift alert starts one job, a re-send starts nothing, a running
job is a 409 that stores nothing, and a bad payload (fuzzed with hypothesis) is a 4xx that stores nothing.

The job starter here is the service's own JobManager where the one-at-a-time rule is the subject (its lock,
held by a live process); elsewhere a recording function, so no training process starts in these units.
The served webhook, with Prometheus and Alertmanager in front of it: tests/test_prometheus.py."""

from __future__ import annotations

import copy
import os
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rakuten_classifier.data.schema import alerts
from rakuten_classifier.monitoring.alert_log import RECORDED, STARTED, recorded_alerts
from rakuten_classifier.pipeline.job_status import LOCK_FILE
from rakuten_classifier.serving.alerts import AlertReceiver
from rakuten_classifier.serving.errors import ClientError
from rakuten_classifier.serving.jobs import JobManager

DRIFT: dict[str, Any] = {
    "status": "firing",
    "labels": {"alertname": "RakutenInputDrift", "severity": "warning", "service": "rakuten-classifier"},
    "annotations": {"summary": "Incoming products drifted from the training reference (score 0.61)"},
    "startsAt": "2026-12-06T23:12:34.123456789Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
    "fingerprint": "4b4f1e1c0e2a9d77",
}
ERRORS: dict[str, Any] = {
    **DRIFT,
    "labels": {"alertname": "RakutenServerErrors", "severity": "critical"},
    "fingerprint": "0d3e5c1a2b4f6e88",
}


def notification(*items: dict, status: str = "firing") -> dict:
    """An Alertmanager webhook payload (version 4) of ``items``."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="RakutenInputDrift"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "rakuten-service",
        "groupLabels": {"alertname": items[0]["labels"].get("alertname", "")} if items else {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(items),
    }


class Starter:
    """Records the jobs it is asked to start (the receiver's ``start_retrain``)."""

    def __init__(self):
        self.started: list[str] = []

    def __call__(self) -> str:
        self.started.append(f"job-{len(self.started) + 1}")
        return self.started[-1]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> str:
    return request.getfixturevalue("pg_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'r.db'}"


def test_drift_alert_starts_one_job_and_a_resend_starts_nothing(database_url):
    starter = Starter()
    receiver = AlertReceiver(database_url, starter)
    status, answer = receiver.receive(notification(DRIFT))
    assert status == 202
    assert answer["job_id"] == "job-1"
    assert answer["status_url"] == "/jobs/job-1"
    assert answer["alerts"][0]["outcome"] == STARTED
    resent = receiver.receive(notification(DRIFT))  # Alertmanager's repeat: same fingerprint, same start
    assert resent[0] == 200
    assert resent[1]["job_id"] is None
    assert resent[1]["alerts"][0]["outcome"] == "already received: nothing started"
    assert resent[1]["alerts"][0]["job_id"] == "job-1"  # the job this firing started
    assert starter.started == ["job-1"]
    # Fired again after resolving: a new start, so a new alert and a new job.
    resolved = {**DRIFT, "status": "resolved", "endsAt": "2026-12-06T23:40:00Z"}
    assert receiver.receive(notification(resolved, status="resolved"))[1]["alerts"][0]["outcome"] == "marked resolved"
    again = receiver.receive(notification({**DRIFT, "startsAt": "2026-12-07T01:00:00+01:00"}))
    assert again[0] == 202
    assert starter.started == ["job-1", "job-2"]

    stored = recorded_alerts(database_url)
    assert [(row["alertname"], row["action"], row["job_id"], row["status"]) for row in stored] == [
        ("RakutenInputDrift", STARTED, "job-1", "resolved"),
        ("RakutenInputDrift", STARTED, "job-2", "firing"),
    ]
    first = stored[0]
    assert first["fingerprint"] == DRIFT["fingerprint"]
    assert first["starts_at"].replace(tzinfo=UTC) == datetime(2026, 12, 6, 23, 12, 34, 123456, tzinfo=UTC)
    assert first["resolved_at"].replace(tzinfo=UTC) == datetime(2026, 12, 6, 23, 40, tzinfo=UTC)
    assert first["labels"] == DRIFT["labels"]
    assert first["annotations"] == DRIFT["annotations"]
    assert stored[1]["starts_at"].replace(tzinfo=UTC) == datetime(2026, 12, 7, 0, 0, tzinfo=UTC)  # stored in UTC


def test_other_alerts_are_recorded_without_a_job_and_one_job_serves_a_group(database_url):
    starter = Starter()
    receiver = AlertReceiver(database_url, starter)
    status, answer = receiver.receive(notification(ERRORS))
    assert status == 200
    assert answer["alerts"][0]["outcome"] == RECORDED
    assert starter.started == []
    # Two drift alerts (two label sets) and the same one twice in one notification: one job for the call.
    other = {**DRIFT, "labels": {**DRIFT["labels"], "instance": "b:3000"}, "fingerprint": "aa01"}
    status, answer = receiver.receive(notification(DRIFT, other, DRIFT, ERRORS))
    assert status == 202
    assert starter.started == ["job-1"]
    assert [entry["outcome"] for entry in answer["alerts"]] == [STARTED, STARTED, "already received: nothing started"]
    assert [(row["alertname"], row["job_id"]) for row in recorded_alerts(database_url)] == [
        ("RakutenServerErrors", None),
        ("RakutenInputDrift", "job-1"),
        ("RakutenInputDrift", "job-1"),
    ]


def test_drift_alert_while_a_job_runs_is_a_409_and_stores_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    jobs = JobManager(tmp_path / "jobs")
    (tmp_path / "jobs" / LOCK_FILE).write_text(f"running-job {os.getpid()}")  # a live process holds the lock
    receiver = AlertReceiver(url, lambda: jobs.start(from_alert=True))
    with pytest.raises(ClientError) as refused:
        receiver.receive(notification(ERRORS, DRIFT))
    assert refused.value.status == 409
    assert "running-job" in str(refused.value)
    assert recorded_alerts(url) == []  # not even the other alert: the re-send will bring both
    (tmp_path / "jobs" / LOCK_FILE).unlink()
    starter = Starter()
    assert AlertReceiver(url, starter).receive(notification(ERRORS, DRIFT))[0] == 202
    assert [row["action"] for row in recorded_alerts(url)] == [RECORDED, STARTED]


def _without(item: dict, key: str) -> dict:
    return {name: value for name, value in item.items() if name != key}


BAD_PAYLOADS = {
    "not an object": ["alerts"],
    "no version": _without(notification(DRIFT), "version"),
    "version 3": {**notification(DRIFT), "version": "3"},
    "no alerts": notification(),
    "alerts not a list": {**notification(DRIFT), "alerts": DRIFT},
    "unknown status": notification({**DRIFT, "status": "pending"}),
    "no alertname": notification({**DRIFT, "labels": {"severity": "warning"}}),
    "alertname with a NUL": notification({**DRIFT, "labels": {"alertname": "Rakuten\x00Drift"}}),
    "label not a string": notification({**DRIFT, "labels": {**DRIFT["labels"], "n": 3}}),
    "no fingerprint": notification(_without(DRIFT, "fingerprint")),
    "fingerprint not hex": notification({**DRIFT, "fingerprint": "'; DROP TABLE alerts; --"}),
    "no startsAt": notification(_without(DRIFT, "startsAt")),
    "startsAt without a zone": notification({**DRIFT, "startsAt": "2026-12-06T23:12:34"}),
    "startsAt not a time": notification({**DRIFT, "startsAt": "yesterday"}),
    "startsAt the zero time": notification({**DRIFT, "startsAt": "0001-01-01T00:00:00Z"}),
    "startsAt out of range in UTC": notification({**DRIFT, "startsAt": "9999-12-31T23:59:59-01:00"}),
    "a good alert beside a bad one": notification(DRIFT, {**ERRORS, "fingerprint": ""}),
}


@pytest.mark.parametrize("body", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_bad_payload_is_a_400_and_stores_nothing(database_url, body):
    starter = Starter()
    with pytest.raises(ClientError) as refused:
        AlertReceiver(database_url, starter).receive(body)
    assert refused.value.status == 400
    assert str(refused.value)
    assert starter.started == []
    assert recorded_alerts(database_url) == []


# Payloads near Alertmanager's: a valid notification with one field of one alert (or of the notification)
# replaced by any JSON value, or removed; and JSON values of any shape.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["status", "labels", "annotations", "startsAt", "endsAt", "fingerprint"]


@st.composite
def mutated(draw) -> dict:
    body = copy.deepcopy(notification(DRIFT, ERRORS))
    where = draw(st.sampled_from(["alert", "notification"]))
    target = body["alerts"][draw(st.integers(0, 1))] if where == "alert" else body
    key = draw(st.sampled_from(FIELDS if where == "alert" else ["version", "status", "alerts"]))
    if draw(st.booleans()):
        target.pop(key)
    else:
        target[key] = draw(JSON | st.text())
    return body


RECEIVERS: dict[str, AlertReceiver] = {}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mutated() | JSON)
def test_fuzzed_payloads_get_a_4xx_or_an_answer_and_a_refusal_stores_nothing(tmp_path, body):
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    if url not in RECEIVERS:  # one store a test run (tmp_path is the same for every example): emptied each time
        RECEIVERS[url] = AlertReceiver(url, Starter())
    receiver = RECEIVERS[url]
    engine = receiver.engine
    with engine.begin() as conn:
        conn.execute(alerts.delete())
    starter = receiver.start_retrain = Starter()
    refusal = None
    try:
        status, answer = receiver.receive(body)
    except ClientError as exc:  # the 4xx the route answers; anything else would be a 500
        refusal = exc.status
    if refusal is not None:
        assert 400 <= refusal < 500
        assert recorded_alerts(url) == []
        assert starter.started == []
        return
    assert status in (200, 202)
    assert len(starter.started) == (status == 202)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(alerts)).scalar_one() == len(answer["alerts"])
