"""The alert loop end to end, with the real tools: drifted traffic (as benchmarks/monitoring_scenario.py sends it)
moves the service's drift gauge, Prometheus fires RakutenInputDrift, Alertmanager posts it to the service's
webhook, and the webhook starts the gated retraining job.

On a copy of the session's tiny trio, with the configuration of deploy/ rendered by tools/monitoring_config.py
and shortened for the test only (1 s intervals, no `for`: tests/monitoring_stack.py), a drift window of 30:
1. no new labelled rows: the job trains nothing; it writes the drift report and the predictions to label;
2. the same alert re-sent (built from Alertmanager's own API) starts nothing;
3. ordinary traffic resolves the alert; new labelled rows are loaded; drifted traffic fires it again (a new
   firing): the job retrains, and the promotion gate decides.
Every alert is stored with its job in the service's SQL store."""

from __future__ import annotations

import asyncio
import csv
import re
import sys
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT, TINY_SETTINGS, VENV_BIN, few_rows, free_port, run_json, server_env
from monitoring_stack import query, render, start_alertmanager, start_prometheus, until

from rakuten_classifier.monitoring.alert_log import STARTED, recorded_alerts
from rakuten_classifier.monitoring.labelling import TO_LABEL_FILE

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import monitoring_scenario  # benchmarks/ is no package: on the path above

TOKEN = "alert-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
WINDOW = 30  # RAKUTEN_DRIFT_WINDOW's least


def _send(url: str, products: list[dict]) -> list[str]:
    answers = asyncio.run(monitoring_scenario.send_window(url, products, clients=4))
    assert all(answer["status"] == 200 for answer in answers), answers
    return [answer["prediction_id"] for answer in answers]


def _finished_job(url: str, job_id: str, timeout: float) -> dict:
    def done() -> dict | None:
        status = httpx.get(f"{url}/jobs/{job_id}", headers=ADMIN, timeout=10).json()
        return status if status["state"] != "running" else None

    return until(done, timeout, f"job {job_id} to finish", period=1)


def _drift_alerts(database_url: str) -> list[dict]:
    return [row for row in recorded_alerts(database_url) if row["alertname"] == "RakutenInputDrift"]


def _resent(alertmanager_url: str) -> dict:
    """The webhook payload Alertmanager re-sends for its active RakutenInputDrift, built from its API."""
    active = httpx.get(f"{alertmanager_url}/api/v2/alerts", params={"filter": 'alertname="RakutenInputDrift"'}).json()
    (alert,) = active
    item = {key: alert[key] for key in ("labels", "annotations", "startsAt", "endsAt", "fingerprint")}
    return {"version": "4", "status": "firing", "receiver": "rakuten-service", "alerts": [{**item, "status": "firing"}]}


@pytest.mark.system
def test_drift_alert_goes_through_prometheus_and_alertmanager_to_the_gated_job(
    tiny, sample_dir, serve, request, tmp_path
):
    home, data_root = tiny.copy(tmp_path / "trio")
    database_url = f"sqlite:///{data_root / 'rakuten.db'}"
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    server = serve(
        request,
        data_root=data_root,
        home=home,
        RAKUTEN_ADMIN_TOKEN=TOKEN,
        RAKUTEN_DRIFT_WINDOW=str(WINDOW),
        RAKUTEN_DRIFT_INTERVAL_SECONDS="1",
        RAKUTEN_LOG_FLUSH_SECONDS="0.2",
        RAKUTEN_RELOAD_SECONDS="1",
        **TINY_SETTINGS,  # the job trains as the tiny trio was trained
    )
    manager_port = free_port()
    folder = render(tmp_path / "monitoring", server, manager_port, token_file)
    alertmanager = start_alertmanager(serve, request, folder, manager_port)
    prometheus = start_prometheus(serve, request, folder)
    ordinary, drifted = monitoring_scenario.scenario_windows(tiny.rows, "books", size=WINDOW)

    # 1. Drifted traffic, no new labelled rows: the alert starts the job, which trains nothing.
    drifted_ids = _send(server.url, drifted)
    (first,) = until(lambda: [a for a in _drift_alerts(database_url) if a["job_id"]], 90, "the drift alert stored")
    assert query(prometheus, 'ALERTS{alertname="RakutenInputDrift", alertstate="firing"}')
    assert first["action"] == STARTED
    assert re.search(r"\(score \d+\.\d{3}\)$", first["annotations"]["summary"]), first["annotations"]
    status = _finished_job(server.url, first["job_id"], 120)
    assert status["state"] == "succeeded", status
    assert status["started_by"] == "alert"
    outcome = status["retrain"]
    assert outcome["outcome"] == "not retrained: no new labelled rows"
    assert outcome["trained"] is False
    assert outcome["new_labelled_rows"] == 0
    labelling = outcome["labelling"]
    assert labelling["drifted"] is True
    assert "DRIFT DETECTED" in Path(labelling["report"]).read_text()
    with open(labelling["to_label"]) as listed:
        rows = list(csv.DictReader(listed))
    assert len(rows) == labelling["listed"] == WINDOW
    assert {row["prediction_id"] for row in rows} == set(drifted_ids)
    confidences = [float(row["confidence"]) for row in rows]
    assert confidences == sorted(confidences)  # least confident first
    assert labelling["to_label"].endswith(f"alert-{first['job_id']}/{TO_LABEL_FILE}")
    assert httpx.get(f"{server.url}/health").json()["models"] == tiny.production  # nothing retrained

    # 2. The same alert re-sent: stored once, nothing started.
    resent = httpx.post(f"{server.url}/alerts", json=_resent(alertmanager.url), headers=ADMIN, timeout=30)
    assert resent.status_code == 200, resent.text
    assert resent.json()["job_id"] is None
    assert resent.json()["alerts"][0]["outcome"] == "already received: nothing started"
    assert len(_drift_alerts(database_url)) == 1
    assert sorted(path.name for path in (data_root / "jobs").iterdir() if path.is_dir()) == [first["job_id"]]

    # 3. Ordinary traffic resolves the alert; new labelled rows; drifted traffic fires it anew: the job retrains.
    _send(server.url, ordinary)
    until(lambda: _drift_alerts(database_url)[0]["status"] == "resolved", 60, "the drift alert resolved")
    more = few_rows(sample_dir, tmp_path / "more", per_category=7)  # a new row of each category
    env = server_env(data_root, BENTOML_HOME=str(home), **TINY_SETTINGS)
    loaded = run_json([str(VENV_BIN / "rakuten"), "data", "load", "--data-dir", str(more), "--json"], env)
    assert loaded["inserted"] == 27
    _send(server.url, drifted)
    second = until(lambda: [a for a in _drift_alerts(database_url)[1:] if a["job_id"]], 90, "the new firing stored")[0]
    assert second["fingerprint"] == first["fingerprint"]
    assert second["starts_at"] > first["starts_at"]
    status = _finished_job(server.url, second["job_id"], 300)
    assert status["state"] == "succeeded", status
    outcome = status["retrain"]
    assert outcome["new_labelled_rows"] == 27
    assert outcome["trained"] is True
    assert any(trigger.startswith("drift in") for trigger in outcome["triggers"])
    assert outcome["outcome"] in ("promoted", "kept production")  # the gate decides
    assert outcome["promoted"] == (outcome["outcome"] == "promoted")
    assert outcome["promotion"]
    assert outcome["learned_from"]
    expected = outcome["models"] if outcome["promoted"] else tiny.production
    until(lambda: httpx.get(f"{server.url}/health").json()["models"] == expected, 60, "the gate's trio served")
    resent = httpx.post(f"{server.url}/alerts", json=_resent(alertmanager.url), headers=ADMIN, timeout=30)
    assert resent.status_code == 200, resent.text
    assert resent.json()["alerts"][0]["job_id"] == second["job_id"]
    assert [alert["job_id"] for alert in _drift_alerts(database_url)] == [first["job_id"], second["job_id"]]
