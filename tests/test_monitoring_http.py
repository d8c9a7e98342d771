"""Monitoring over HTTP: the 300 + 300 drift scenario, feedback, Prometheus metrics (their values, and the
example Prometheus/Grafana configuration's queries), and no prediction-log row lost at a graceful stop."""

import json
import os
import re
import signal
import sys
import threading
import time

import httpx
import pytest
import yaml
from conftest import REPO_ROOT, json_error

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import monitoring_scenario

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": "Bearer test-token"}
MONITORING = REPO_ROOT / "deploy"


def _use_data_root(monkeypatch, data_root):
    from rakuten_classifier.config import get_settings

    monkeypatch.setenv("RAKUTEN_DATA_ROOT", str(data_root))
    get_settings.cache_clear()
    return get_settings()


def test_drift_scenario_flags_the_drifted_window_only(served, sample_dir, session_data_root, monkeypatch, tmp_path):
    from rakuten_classifier.cli import main
    from rakuten_classifier.monitoring.drift import compare, load_profile
    from rakuten_classifier.monitoring.drift_report import write_report
    from rakuten_classifier.monitoring.prediction_log import recent_predictions
    from rakuten_classifier.registry import model_path, production_trio

    outcome = monitoring_scenario.run(served.url, sample_dir, "test-token", drift="books", size=300)
    ordinary, drifted = outcome["ordinary"], outcome["drifted"]
    assert ordinary["ok"] == drifted["ok"] == 300
    assert ordinary["window"] == drifted["window"] == 300
    assert ordinary["drifted"] is False
    assert ordinary["gauges"]["rakuten_drift_detected"] == 0
    assert drifted["drifted"] is True
    assert drifted["gauges"]["rakuten_drift_detected"] == 1
    assert "prdtypecode" in drifted["drifted_features"]
    assert drifted["gauges"]["rakuten_drift_score"] == pytest.approx(drifted["drift_score"])
    assert drifted["drift_score"] > 0.25 > ordinary["drift_score"]

    settings = _use_data_root(monkeypatch, session_data_root)
    logged = recent_predictions(settings.database_url, last=600)
    sent = ordinary["prediction_ids"] + drifted["prediction_ids"]
    assert len(set(sent)) == 600
    assert set(sent) <= set(logged["id"])
    assert logged["modality"].isin(["both", "text"]).all()
    assert logged["latency_ms"].gt(0).all()

    # The CLI report on the latest window says drift; the same report on the first window does not.
    report = tmp_path / "drift.html"
    assert main(["monitor", "drift", "--last", "300", "--out", str(report), "--json"]) == 0
    assert "DRIFT DETECTED" in report.read_text()
    production = production_trio()
    assert production is not None
    profile = load_profile(model_path(production.fusion))
    first = logged.iloc[:300]
    assert set(first["id"]) == set(ordinary["prediction_ids"])
    first_result = compare(profile, first, settings.drift_psi_threshold, settings.drift_p_value)
    assert first_result["drifted"] is False
    assert "no drift detected" in write_report(first_result, profile, first, tmp_path / "first.html", "x").read_text()


def test_feedback_over_http_gives_live_accuracy(served):
    answer = httpx.post(f"{served.url}/predict_text", json={"designation": "Piscine tubulaire hors sol 3m"}, timeout=60)
    assert answer.status_code == 200
    prediction = answer.json()
    body = {"prediction_id": prediction["prediction_id"], "prdtypecode": prediction["prdtypecode"]}
    assert httpx.post(f"{served.url}/feedback", json=body).status_code == 401
    assert httpx.post(f"{served.url}/feedback", json=body, headers={"Authorization": "Bearer nope"}).status_code == 403
    recorded = httpx.post(f"{served.url}/feedback", json=body, headers=ADMIN)
    assert recorded.status_code == 200, recorded.text
    assert recorded.json()["correct"] is True
    assert recorded.json()["live_accuracy"]["labelled"] >= 1
    unknown = httpx.post(f"{served.url}/feedback", json={**body, "prediction_id": "0" * 32}, headers=ADMIN)
    assert unknown.status_code == 404
    assert "no logged prediction" in unknown.json()["error"]
    bad_code = httpx.post(f"{served.url}/feedback", json={**body, "prdtypecode": 7}, headers=ADMIN)
    assert bad_code.status_code == 400
    assert "unknown prdtypecode" in bad_code.json()["error"]
    extra = httpx.post(f"{served.url}/feedback", json={**body, "note": "x"}, headers=ADMIN)
    assert extra.status_code == 400
    accuracy = httpx.get(f"{served.url}/monitor/accuracy", headers=ADMIN).json()
    assert accuracy["labelled"] >= 1
    assert 0 <= accuracy["accuracy"] <= 1


def _exported_names(url: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


METRIC_RE = re.compile(r"\b((?:rakuten|bentoml)_[a-zA-Z0-9_]+)")


def test_metrics_parse_and_every_dashboard_and_alert_query_exists(served, sample_dir):
    # Self-sufficient in any order: 30 products with photos (the fewest a drift score needs, so every
    # per-feature PSI gauge gets a value), a text-only multimodal call (fallback), feedback
    # (accuracy), a drift refresh (gauges). In multiprocess mode a series nobody set is not exported.
    from rakuten_classifier.pipeline.training_data import load_training_data

    rows = load_training_data(sample_dir).split("test").dropna(subset=["image_path"]).head(30)
    for row in rows.itertuples():
        with open(row.image_path, "rb") as photo:
            files = {"image": ("p.jpg", photo.read(), "image/jpeg")}
        reply = httpx.post(
            f"{served.url}/predict_multimodal", data={"designation": row.designation}, files=files, timeout=60
        )
        assert reply.status_code == 200, reply.text
    answer = httpx.post(
        f"{served.url}/predict_multimodal", data={"designation": "Lot de 3 romans policiers"}, timeout=60
    ).json()
    httpx.post(
        f"{served.url}/feedback", json={"prediction_id": answer["prediction_id"], "prdtypecode": 10}, headers=ADMIN
    )
    assert httpx.post(f"{served.url}/monitor/drift", headers=ADMIN, timeout=60).status_code == 200
    exported = _exported_names(served.url)
    for name in (
        "rakuten_predictions_total",
        "rakuten_prediction_confidence_bucket",
        "rakuten_modality_fallbacks_total",
        "rakuten_drift_score",
        "rakuten_drift_detected",
        "rakuten_drift_feature_psi",
        "rakuten_model_info",
        "rakuten_live_accuracy",
        "rakuten_feedback_total",
        "rakuten_prediction_log_backlog",
    ):
        assert name in exported, name

    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "rakuten-classifier.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    alerts = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    queries += [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    used = {name for query in queries for name in METRIC_RE.findall(query)}
    assert len(used) >= 12
    missing = sorted(used - exported)
    assert not missing, f"dashboard/alerts query metrics the service does not export: {missing}"

    prometheus = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    job = prometheus["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:3000"]
    assert all((MONITORING / rule_file).is_file() for rule_file in prometheus["rule_files"])
    for provisioning in (MONITORING / "grafana" / "provisioning").rglob("*.yml"):
        assert yaml.safe_load(provisioning.read_text())["apiVersion"] == 1


def _samples(url: str) -> list:
    """Every sample of /metrics (name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _total(samples: list, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _moved(url: str, act, *keys: tuple) -> list[float]:
    """How much each (name, labels) total of /metrics moved while ``act`` ran."""
    before = _samples(url)
    act()
    after = _samples(url)
    return [_total(after, name, **labels) - _total(before, name, **labels) for name, labels in keys]


def test_metrics_count_each_answered_prediction_once(served):
    answers: list[dict] = []

    def one_text() -> None:
        reply = httpx.post(f"{served.url}/predict_text", json={"designation": "Lot de 3 romans policiers"}, timeout=60)
        assert reply.status_code == 200, reply.text
        answers.append(reply.json())

    keys: list[tuple] = [
        ("rakuten_predictions_total", {}),
        ("rakuten_predictions_total", {"endpoint": "text", "modality": "text"}),
        ("rakuten_prediction_confidence_count", {}),
        ("bentoml_service_request_duration_seconds_count", {"endpoint": "/predict_text", "http_response_code": "200"}),
        ("bentoml_service_request_total", {"endpoint": "/predict_text", "http_response_code": "200"}),
    ]
    assert _moved(served.url, one_text, *keys) == [1, 1, 1, 1, 1]
    code = str(answers[0]["prdtypecode"])
    by_code = ("rakuten_predictions_total", {"endpoint": "text", "prdtypecode": code})
    assert _moved(served.url, one_text, by_code) == [1]

    items = 3

    def text_only_batch() -> None:
        body = {"items": [{"designation": f"piscine tubulaire {n}"} for n in range(items)], "top_k": 1}
        reply = httpx.post(f"{served.url}/predict_batch", json=body, timeout=60)
        assert reply.status_code == 200, reply.text

    keys = [
        ("rakuten_predictions_total", {"endpoint": "batch", "modality": "text"}),
        ("rakuten_prediction_confidence_count", {}),
        ("rakuten_modality_fallbacks_total", {"missing": "image"}),
        ("bentoml_service_request_duration_seconds_count", {"endpoint": "/predict_batch", "http_response_code": "200"}),
    ]
    assert _moved(served.url, text_only_batch, *keys) == [items, items, items, 1]

    def refused() -> None:
        answer = httpx.post(f"{served.url}/predict_text", json={"designation": "  "}, timeout=60)
        json_error(answer, 400)

    keys = [
        ("rakuten_predictions_total", {}),
        ("rakuten_prediction_confidence_count", {}),
        ("bentoml_service_request_total", {"endpoint": "/predict_text", "http_response_code": "400"}),
    ]
    assert _moved(served.url, refused, *keys) == [0, 0, 1]


def test_graceful_stop_under_load_loses_no_logged_prediction(trained, serve, request, tmp_path):
    """The log is written only at shutdown here (flush period one hour): every 200 must be in the table."""
    import sqlalchemy as sa

    data_root = tmp_path / "data"
    server = serve(
        request, data_root=data_root, RAKUTEN_LOG_FLUSH_SECONDS="3600", RAKUTEN_DRIFT_INTERVAL_SECONDS="3600"
    )
    answered: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def keep_sending(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    reply = client.post("/predict_text", json={"designation": f"Jeu de société {worker}-{n}"})
                except httpx.HTTPError as exc:  # the server has stopped listening
                    failures.append(type(exc).__name__)
                    time.sleep(0.05)
                    continue
                if reply.status_code == 200:
                    answered.append(reply.json()["prediction_id"])
                else:
                    failures.append(str(reply.status_code))

    try:
        senders = [threading.Thread(target=keep_sending, args=(i,)) for i in range(8)]
        for sender in senders:
            sender.start()
        time.sleep(6)
        answered_before_stop = len(answered)
        # Graceful stop with requests in flight, as Ctrl-C or `docker stop` does; senders stop
        # issuing new requests at the same moment (a stopping server accepts no new connections).
        stop.set()
        os.killpg(server.process.pid, signal.SIGTERM)
        stopped_at = time.monotonic()
        for sender in senders:
            sender.join(60)
        server.process.wait(120)
        shutdown_seconds = time.monotonic() - stopped_at
    finally:
        stop.set()
    assert answered_before_stop > 50, "the load did not run"
    engine = sa.create_engine(f"sqlite:///{data_root / 'rakuten.db'}")
    with engine.connect() as conn:
        logged = set(conn.execute(sa.text("SELECT id FROM predictions")).scalars())
    lost = set(answered) - logged
    assert not lost, f"{len(lost)} of {len(answered)} answered predictions missing from the log"
    sys.stderr.write(
        f"graceful stop: {len(answered)} answered, {len(logged)} logged, "
        f"{len(failures)} failed ({sorted(set(failures))}), shutdown {shutdown_seconds:.1f} s\n"
    )
