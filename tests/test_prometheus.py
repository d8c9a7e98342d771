"""deploy/'s monitoring files against the real tools: promtool checks the Prometheus configuration (as shipped
and as tools/monitoring_config.py renders it) and the rules, and runs each alert's unit test (deploy/alert-tests:
firing and quiet cases); amtool checks the Alertmanager configuration; the Grafana dashboard is checked against
a JSON schema of the fields Grafana needs (no Grafana server installs here: docs/monitoring.md); and a real
Prometheus scrapes a real `bentoml serve` of the tiny trio, under a short load that moves every metric, and
answers every dashboard query with a series.

The alert loop end to end (Prometheus, Alertmanager, the webhook, the job): tests/test_alert_loop.py."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from pathlib import Path

import httpx
import jsonschema_rs
import pytest
import yaml
from conftest import REPO_ROOT, sample_requests
from monitoring_stack import AMTOOL, PROMTOOL, monitoring_config, query, render, start_prometheus, tool, until

DEPLOY = REPO_ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "rakuten-classifier.json"
ALERT_TESTS = sorted((DEPLOY / "alert-tests").glob("*.yml"))


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _alert_names() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"]]


def test_promtool_and_amtool_accept_the_shipped_and_rendered_configuration(tmp_path):
    promtool, amtool = tool(PROMTOOL), tool(AMTOOL)
    assert "SUCCESS" in _run(promtool, "check", "config", str(DEPLOY / "prometheus.yml"))
    assert f"SUCCESS: {len(_alert_names())} rules found" in _run(promtool, "check", "rules", str(DEPLOY / "alerts.yml"))
    assert "SUCCESS" in _run(amtool, "check-config", str(DEPLOY / "alertmanager.yml"))
    token = tmp_path / "token"
    token.write_text("t")
    written = monitoring_config.write(monitoring_config.configs("10.1.2.3:3100", "10.1.2.4:9093", token), tmp_path)
    assert "SUCCESS" in _run(promtool, "check", "config", written["prometheus.yml"])
    assert "SUCCESS" in _run(amtool, "check-config", written["alertmanager.yml"])
    prometheus = yaml.safe_load(Path(written["prometheus.yml"]).read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["10.1.2.3:3100"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["10.1.2.4:9093"]
    hook = yaml.safe_load(Path(written["alertmanager.yml"]).read_text())["receivers"][0]["webhook_configs"][0]
    assert hook["url"] == "http://10.1.2.3:3100/alerts"
    assert hook["http_config"]["authorization"] == {"type": "Bearer", "credentials_file": str(token.resolve())}
    assert hook["send_resolved"] is True
    # As shipped: the demo's service, and its token file (relative to deploy/).
    shipped = yaml.safe_load((DEPLOY / "alertmanager.yml").read_text())["receivers"][0]["webhook_configs"][0]
    assert shipped["url"] == "http://127.0.0.1:3000/alerts"
    assert (DEPLOY / shipped["http_config"]["authorization"]["credentials_file"]).resolve() == (
        REPO_ROOT / "data" / ".demo-admin-token"
    )


@pytest.mark.parametrize("path", ALERT_TESTS, ids=[path.stem for path in ALERT_TESTS])
def test_promtool_unit_test_of_each_alert_fires_and_stays_quiet(path):
    assert "SUCCESS" in _run(tool(PROMTOOL), "test", "rules", str(path))
    # Each test file is about one alert, with cases where it fires and cases where it stays quiet.
    cases = [case for test in yaml.safe_load(path.read_text())["tests"] for case in test["alert_rule_test"]]
    (alert,) = {case["alertname"] for case in cases}
    assert re.sub(r"(?<!^)([A-Z])", r"-\1", alert).lower() == path.stem
    assert any(case["exp_alerts"] for case in cases), "no firing case"
    assert sum(not case["exp_alerts"] for case in cases) >= 2, "fewer than two quiet cases"


def test_every_alert_has_its_unit_test_file():
    tested = {path.stem for path in ALERT_TESTS}
    assert tested == {re.sub(r"(?<!^)([A-Z])", r"-\1", name).lower() for name in _alert_names()}


def test_grafana_dashboard_matches_the_schema_and_its_datasource():
    dashboard = json.loads(DASHBOARD.read_text())
    schema = json.loads((DEPLOY / "grafana" / "dashboard.schema.json").read_text())
    validator = jsonschema_rs.validator_for(schema)
    errors = [f"{error.instance_path}: {error.message}" for error in validator.iter_errors(dashboard)]
    assert not errors, errors
    # What a schema cannot say: unique panel ids, refIds unique in a panel, panels that do not overlap, and
    # every panel's data source the dashboard's variable, which offers the provisioned Prometheus.
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
    cells = [
        (x, y)
        for panel in panels
        for x in range(panel["gridPos"]["x"], panel["gridPos"]["x"] + panel["gridPos"]["w"])
        for y in range(panel["gridPos"]["y"], panel["gridPos"]["y"] + panel["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells)), "panels overlap"
    (variable,) = [item for item in dashboard["templating"]["list"] if item["type"] == "datasource"]
    sources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert variable["query"] in {source["type"] for source in sources["datasources"]}
    for panel in panels:
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": f"${{{variable['name']}}}"}, panel["title"]
    # The schema refuses what Grafana would: a panel without a grid position, a width past the 24 columns.
    broken = json.loads(DASHBOARD.read_text())
    del broken["panels"][0]["gridPos"]
    broken["panels"][1]["gridPos"]["w"] = 30
    assert len(list(validator.iter_errors(broken))) == 2


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def _load(url: str, products: list[tuple[dict, dict]]) -> list[str]:
    """Traffic that moves every exported metric: each prediction endpoint (a text-only multimodal call is a
    fallback), a client mistake (a 4xx answer); the prediction ids."""
    ids = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for fields, files in products:
            answer = client.post("/predict_multimodal", data=fields, files=files)
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["prediction_id"])
        text = {"designation": "Lot de 3 romans policiers", "description": "poche, bon état"}
        assert client.post("/predict_multimodal", data=text).status_code == 200
        assert client.post("/predict_text", json=text).status_code == 200
        assert client.post("/predict_image", files=products[0][1]).status_code == 200
        assert client.post("/predict_batch", json={"items": [{"designation": "Piscine 3 m"}] * 3}).status_code == 200
        assert client.post("/predict_text", json={"designation": ""}).status_code == 400
    return ids


@pytest.mark.system
def test_prometheus_scrapes_the_service_and_every_dashboard_query_has_a_series(
    tiny, sample_dir, serve, request, tmp_path
):
    home, data_root = tiny.copy(tmp_path / "trio")
    server = serve(request, data_root=data_root, home=home, RAKUTEN_ADMIN_TOKEN="t", RAKUTEN_LOG_FLUSH_SECONDS="0.2")
    admin = {"Authorization": "Bearer t"}
    prometheus = start_prometheus(serve, request, render(tmp_path / "monitoring", server, alertmanager_port=9))
    # The service is up, and scraped: its backlog gauge has a series before anything called /health.
    until(lambda: [s for s in query(prometheus, "up") if s["value"][1] == "1"], 30, "target up")
    backlog = until(lambda: query(prometheus, "rakuten_prediction_log_backlog"), 15, "backlog series")
    assert backlog[0]["metric"]["service"] == "rakuten-classifier"
    assert backlog[0]["metric"]["instance"] == f"127.0.0.1:{server.port}"

    products = sample_requests(sample_dir, 30)  # 30 with photos: the fewest a drift score needs
    ids = _load(server.url, products[:15])
    time.sleep(2.5)  # two scrapes between the halves: every rate has two points that differ
    ids += _load(server.url, products[15:])
    for prediction_id in ids[:3]:
        body = {"prediction_id": prediction_id, "prdtypecode": 10}
        assert httpx.post(f"{server.url}/feedback", json=body, headers=admin, timeout=30).status_code == 200
    assert httpx.post(f"{server.url}/monitor/drift", headers=admin, timeout=60).status_code == 200

    def answered() -> dict[str, list]:
        return {f"{title}: {expr}": query(prometheus, expr) for title, expr in _dashboard_queries()}

    def all_have_a_number() -> dict[str, list] | None:
        found = answered()
        return (
            found
            if all(any(math.isfinite(float(s["value"][1])) for s in series) for series in found.values())
            else None
        )

    deadline = time.monotonic() + 20
    while (found := all_have_a_number()) is None and time.monotonic() < deadline:
        time.sleep(1)
    results = found or answered()
    empty = [name for name, series in results.items() if not series]
    assert not empty, f"dashboard queries with no series: {empty}"
    no_number = [
        name for name, series in results.items() if not any(math.isfinite(float(s["value"][1])) for s in series)
    ]
    assert not no_number, f"dashboard queries answering NaN only: {no_number}"
    assert len(results) == 17
    # A few values that say the series are this traffic's, not zeros.
    assert float(query(prometheus, "max(rakuten_live_accuracy)")[0]["value"][1]) >= 0
    predicted = query(prometheus, "sum(rakuten_predictions_total)")
    assert float(predicted[0]["value"][1]) == len(ids) + 2 * 6  # each _load: 2 text, 1 image, 3 batch besides
