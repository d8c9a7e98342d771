"""Limits, the periodic drift refresh and /metrics values over HTTP, on one server with small limits.

RAKUTEN_MAX_IMAGE_BYTES is far below RAKUTEN_MAX_BODY_BYTES here, so a 413 naming the image limit
comes from the image check, not from the body limit. Nobody calls /monitor/drift on this server:
the drift figures it shows come from the periodic refresh alone.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT, SESSION_BENTOML_HOME, Server, json_error, server_env
from prometheus_client.parser import text_string_to_metric_families

from rakuten_classifier.monitoring.drift import MIN_OBSERVATIONS
from rakuten_classifier.pipeline.training_data import load_training_data

pytestmark = pytest.mark.slow

IMAGE_LIMIT = 100_000  # the sample's JPEGs are 82 KB at most: one padded past it is over the limit
BATCH_LIMIT = 3
DRIFT_INTERVAL_S = 2


@pytest.fixture(scope="module")
def limited(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("limited")
    # Own BentoML home (its metrics directory is emptied at start), the session's models linked in.
    home = folder / "bentoml"
    home.mkdir()
    (home / "models").symlink_to(Path(SESSION_BENTOML_HOME) / "models", target_is_directory=True)
    env = server_env(
        folder / "data",
        BENTOML_HOME=str(home),
        RAKUTEN_MAX_IMAGE_BYTES=str(IMAGE_LIMIT),
        RAKUTEN_MAX_BATCH_ITEMS=str(BATCH_LIMIT),
        RAKUTEN_DRIFT_INTERVAL_SECONDS=str(DRIFT_INTERVAL_S),
        RAKUTEN_DRIFT_WINDOW="500",
        RAKUTEN_LOG_FLUSH_SECONDS="0.5",
    )
    server = Server("service:RakutenClassifier", env, REPO_ROOT, folder / "serve.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sample_jpeg(sample_dir) -> bytes:
    """A real product photo of the sample."""
    row = load_training_data(sample_dir).split("test").dropna(subset=["image_path"]).iloc[0]
    data = Path(row.image_path).read_bytes()
    assert len(data) < IMAGE_LIMIT
    return data


def _padded(jpeg: bytes, size: int) -> bytes:
    """The JPEG with zero bytes after its end marker up to ``size`` bytes (decoders ignore them)."""
    return jpeg + b"\0" * (size - len(jpeg))


def _upload(server: Server, route: str, image: bytes) -> httpx.Response:
    data = {"designation": "piscine hors sol"} if route == "/predict_multimodal" else None
    return httpx.post(f"{server.url}{route}", data=data, files={"image": ("p.jpg", image, "image/jpeg")}, timeout=120)


def _batch(server: Server, items: list[dict]) -> httpx.Response:
    return httpx.post(f"{server.url}/predict_batch", json={"items": items, "top_k": 1}, timeout=120)


# ---------------------------------------------------------------- image size (RAKUTEN_MAX_IMAGE_BYTES)


@pytest.mark.parametrize("route", ["/predict_multimodal", "/predict_image"])
def test_uploaded_image_over_the_byte_limit_is_a_413_and_at_the_limit_is_answered(limited, sample_jpeg, route):
    over = json_error(_upload(limited, route, _padded(sample_jpeg, IMAGE_LIMIT + 1)), 413)
    assert over["error"] == f"image is {IMAGE_LIMIT + 1} bytes; the limit is {IMAGE_LIMIT}"
    far_over = json_error(_upload(limited, route, _padded(sample_jpeg, 3 * IMAGE_LIMIT)), 413)
    assert far_over["error"] == f"image is {3 * IMAGE_LIMIT} bytes; the limit is {IMAGE_LIMIT}"
    at_limit = _upload(limited, route, _padded(sample_jpeg, IMAGE_LIMIT))
    assert at_limit.status_code == 200, at_limit.text
    assert at_limit.json()["image"], at_limit.json()  # the image model answered for it


def test_batch_image_over_the_byte_limit_is_a_413_naming_the_item(limited, sample_jpeg):
    at_limit = base64.b64encode(_padded(sample_jpeg, IMAGE_LIMIT)).decode()
    for size in (IMAGE_LIMIT + 1, 3 * IMAGE_LIMIT):
        over = base64.b64encode(_padded(sample_jpeg, size)).decode()
        body = json_error(_batch(limited, [{"designation": "livre"}, {"image_base64": over}]), 413)
        assert body["error"].startswith("items[1]: image is "), body
        assert f"the limit is {IMAGE_LIMIT}" in body["error"], body
    answered = _batch(limited, [{"designation": "livre", "image_base64": at_limit}])
    assert answered.status_code == 200, answered.text
    [prediction] = answered.json()["predictions"]
    assert prediction["image"], prediction


# ---------------------------------------------------------------- batch size (RAKUTEN_MAX_BATCH_ITEMS)


def test_batch_over_the_item_limit_is_a_400_and_the_limit_itself_is_answered(limited):
    items = [{"designation": f"jeu de société {n}"} for n in range(BATCH_LIMIT + 1)]
    body = json_error(_batch(limited, items), 400)
    assert body["error"] == "1 validation error for BatchInput"
    [detail] = body["detail"]
    assert detail["loc"] == ["items"]
    assert detail["type"] == "too_long"
    assert f"at most {BATCH_LIMIT} items" in detail["msg"]
    assert f"not {BATCH_LIMIT + 1}" in detail["msg"]
    answered = _batch(limited, items[:BATCH_LIMIT])
    assert answered.status_code == 200, answered.text
    assert len(answered.json()["predictions"]) == BATCH_LIMIT


# ---------------------------------------------------------------- /metrics values


def _metrics(server: Server) -> list:
    """Every sample of /metrics (name, labels, value)."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _total(samples: list, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _moved(server: Server, act: Callable[[], None], *keys: tuple) -> list[float]:
    """How much each (name, labels) total moved while ``act`` ran."""
    before = _metrics(server)
    act()
    after = _metrics(server)
    return [_total(after, name, **labels) - _total(before, name, **labels) for name, labels in keys]


def test_metrics_count_each_answered_prediction_once(limited):
    answers: list[dict] = []

    def one_text() -> None:
        reply = httpx.post(f"{limited.url}/predict_text", json={"designation": "Lot de 3 romans policiers"}, timeout=60)
        assert reply.status_code == 200, reply.text
        answers.append(reply.json())

    keys: list[tuple] = [
        ("rakuten_predictions_total", {}),
        ("rakuten_predictions_total", {"endpoint": "text", "modality": "text"}),
        ("rakuten_prediction_confidence_count", {}),
        ("bentoml_service_request_duration_seconds_count", {"endpoint": "/predict_text", "http_response_code": "200"}),
        ("bentoml_service_request_total", {"endpoint": "/predict_text", "http_response_code": "200"}),
    ]
    assert _moved(limited, one_text, *keys) == [1, 1, 1, 1, 1]
    code = str(answers[0]["prdtypecode"])
    by_code = ("rakuten_predictions_total", {"endpoint": "text", "prdtypecode": code})
    assert _moved(limited, one_text, by_code) == [1]

    def text_only_batch() -> None:
        reply = _batch(limited, [{"designation": f"piscine tubulaire {n}"} for n in range(BATCH_LIMIT)])
        assert reply.status_code == 200, reply.text

    keys = [
        ("rakuten_predictions_total", {"endpoint": "batch", "modality": "text"}),
        ("rakuten_prediction_confidence_count", {}),
        ("rakuten_modality_fallbacks_total", {"missing": "image"}),
        ("bentoml_service_request_duration_seconds_count", {"endpoint": "/predict_batch", "http_response_code": "200"}),
    ]
    assert _moved(limited, text_only_batch, *keys) == [BATCH_LIMIT, BATCH_LIMIT, BATCH_LIMIT, 1]

    def refused() -> None:
        json_error(httpx.post(f"{limited.url}/predict_text", json={"designation": "  "}, timeout=60), 400)

    keys = [
        ("rakuten_predictions_total", {}),
        ("rakuten_prediction_confidence_count", {}),
        ("bentoml_service_request_total", {"endpoint": "/predict_text", "http_response_code": "400"}),
    ]
    assert _moved(limited, refused, *keys) == [0, 0, 1]


# ---------------------------------------------------------------- periodic drift refresh


def test_drift_refreshes_by_itself_on_the_configured_interval(limited, sample_dir):
    # Real titles, enough for a PSI (drift.MIN_OBSERVATIONS = 30 per feature): a non-zero score to find.
    titles = load_training_data(sample_dir).split("test")["designation"].head(MIN_OBSERVATIONS)
    for title in titles:
        reply = httpx.post(f"{limited.url}/predict_text", json={"designation": title}, timeout=60)
        assert reply.status_code == 200, reply.text
    answered = _total(_metrics(limited), "rakuten_predictions_total")
    assert MIN_OBSERVATIONS <= answered < 500  # the whole log fits in the drift window
    # Within a few refresh periods the drift window holds every answered prediction, with nobody
    # calling /monitor/drift; the default period (300 s) would not get there before the deadline.
    deadline = time.monotonic() + 30 * DRIFT_INTERVAL_S
    drift, samples = None, []
    while time.monotonic() < deadline:
        drift = httpx.get(f"{limited.url}/health", timeout=30).json()["drift"]
        samples = _metrics(limited)
        gauge = _total(samples, "rakuten_drift_score")
        if drift is not None and drift["window"] == answered and gauge == pytest.approx(drift["drift_score"]):
            break
        time.sleep(1)
    assert drift is not None, "no drift refresh happened"
    assert drift["window"] == answered, drift
    assert _total(samples, "rakuten_drift_score") == pytest.approx(drift["drift_score"])
    assert drift["drift_score"] > 0  # a measured PSI, so the gauge equality above is not 0 == 0
    assert _total(samples, "rakuten_drift_detected") == (1 if drift["drifted"] else 0)
    assert any(s.name == "rakuten_drift_feature_psi" and s.labels.get("feature") for s in samples)
    no_manual = _total(samples, "bentoml_service_request_total", endpoint="/monitor/drift")
    assert no_manual == 0


# ---------------------------------------------------------------- POST /train {"retrain": true}


def test_retrain_request_runs_the_retrain_check_and_records_its_decision(trained, sample_dir, tmp_path):
    import shutil

    from rakuten_classifier.config import Settings
    from rakuten_classifier.data.store import load_into_db

    # A copy of the session's store: should the check ever train, its promotion stays here.
    home = tmp_path / "bentoml"
    shutil.copytree(Path(SESSION_BENTOML_HOME) / "models", home / "models")
    settings = Settings(data_root=tmp_path / "data")
    # The sample in the database: the check counts it, and finds no row the models were not trained with.
    loaded = load_into_db(
        sample_dir, settings.database_url, settings.seed, settings.val_fraction, settings.test_fraction
    )
    token = {"Authorization": "Bearer retrain-token"}
    env = server_env(settings.data_root, BENTOML_HOME=str(home), RAKUTEN_ADMIN_TOKEN="retrain-token")
    server = Server("service:RakutenClassifier", env, REPO_ROOT, tmp_path / "serve.log")
    try:
        server.wait_ready()
        before = httpx.get(f"{server.url}/health", timeout=30).json()["models"]
        started = httpx.post(f"{server.url}/train", json={"retrain": True}, headers=token, timeout=30)
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
        status: dict = {}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = httpx.get(f"{server.url}/jobs/{job_id}", headers=token, timeout=30).json()
            if status["state"] != "running":
                break
            time.sleep(1)
        after = httpx.get(f"{server.url}/health", timeout=30).json()["models"]
    finally:
        server.stop()
    assert status["kind"] == "retrain", status
    assert status["state"] == "succeeded", status
    assert status["outcome"] == "skipped: no trigger fired", status
    assert status["promoted"] is False
    decision = status["retrain"]
    assert decision["production"] == before  # the check looked at the production the service answers with
    assert decision["labelled_in_database"] == loaded["rows"] == 1638
    assert decision["new_labelled_rows"] == 0  # the production models were trained on these very rows
    assert decision["triggers"] == []
    assert decision["trained"] is False
    assert "drift" not in decision  # nothing logged yet: no drift window to compare
    assert any("retrain skipped: no trigger fired" in line for line in status["log_tail"]), status["log_tail"]
    assert after == before
