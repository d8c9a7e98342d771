"""Tokens, limits, /metrics values, the periodic drift refresh, the request timeout and the retrain job over HTTP.

One server with both tokens and small limits answers every claim that does not change it. Its
RAKUTEN_MAX_IMAGE_BYTES is far below RAKUTEN_MAX_BODY_BYTES, so a 413 naming the image limit comes from
the image check, not from the body limit; nobody calls /monitor/drift on it successfully, so the drift
figures it shows come from the periodic refresh alone. A second server, on a copy of the session's
store (a retrain job could promote there), has a 1 ms prediction budget: a prediction that reaches the
models answers 504, which proves the timeout answers JSON, not a hang. Every refusal asserts the
status and the JSON message.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import Server, json_error
from prometheus_client.parser import text_string_to_metric_families
from store_tools import copy_session_store

from rakuten_classifier.monitoring.drift import MIN_OBSERVATIONS
from rakuten_classifier.pipeline.training_data import load_training_data

pytestmark = pytest.mark.slow

PREDICT = {"Authorization": "Bearer predict-token"}
ADMIN = {"Authorization": "Bearer admin-token"}
WRONG = {"Authorization": "Bearer not-the-token"}
MAX_TEXT_CHARS = 300  # above the sample's longest title (250 characters), which the drift test sends
IMAGE_LIMIT = 100_000  # the sample's JPEGs are 82 KB at most: one padded past it is over the limit
# Above a batch carrying an image of 3 x IMAGE_LIMIT in base64 (400 KB): such a batch meets the image limit.
MAX_BODY_BYTES = 500_000
BATCH_LIMIT = 3
DRIFT_INTERVAL_S = 2


@pytest.fixture(scope="module")
def limited(trained, serve, request) -> Server:
    return serve(
        request,
        RAKUTEN_PREDICT_TOKEN="predict-token",
        RAKUTEN_ADMIN_TOKEN="admin-token",
        RAKUTEN_MAX_TEXT_CHARS=str(MAX_TEXT_CHARS),
        RAKUTEN_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        RAKUTEN_MAX_IMAGE_BYTES=str(IMAGE_LIMIT),
        RAKUTEN_MAX_BATCH_ITEMS=str(BATCH_LIMIT),
        RAKUTEN_DRIFT_INTERVAL_SECONDS=str(DRIFT_INTERVAL_S),
        RAKUTEN_DRIFT_WINDOW="500",
        RAKUTEN_LOG_FLUSH_SECONDS="0.5",
    )


def _error(answer: httpx.Response, status: int) -> str:
    """The JSON error message of an answer that must have ``status``."""
    return json_error(answer, status)["error"]


def _text(server: Server, headers: dict | None = None, **fields) -> httpx.Response:
    return httpx.post(
        f"{server.url}/predict_text",
        json={"designation": "piscine hors sol tubulaire", **fields},
        headers=headers,
        timeout=60,
    )


def _multimodal(server: Server, headers: dict | None = None, image: bytes | None = None, **fields) -> httpx.Response:
    files = {"image": ("p.jpg", image, "image/jpeg")} if image is not None else None
    return httpx.post(
        f"{server.url}/predict_multimodal",
        data={"designation": "piscine hors sol", **fields},
        files=files,
        headers=headers,
        timeout=60,
    )


# ---------------------------------------------------------------- tokens (RAKUTEN_PREDICT_TOKEN, RAKUTEN_ADMIN_TOKEN)


@pytest.mark.parametrize("call", [_text, _multimodal], ids=["predict_text", "predict_multimodal"])
def test_predictions_need_the_prediction_token(limited, call):
    assert "needs a bearer token" in _error(call(limited), 401)
    assert "needs a bearer token" in _error(call(limited, {"Authorization": "Basic cHJlZGljdA=="}), 401)
    assert _error(call(limited, WRONG), 403) == "invalid token"
    assert _error(call(limited, ADMIN), 403) == "invalid token"  # the admin token is not a prediction token
    authorised = call(limited, PREDICT)
    assert authorised.status_code == 200, authorised.text
    assert authorised.json()["top_k"], authorised.json()  # it reached the models


def test_other_prediction_routes_are_guarded_too(limited):
    batch = httpx.post(f"{limited.url}/predict_batch", json={"items": [{"designation": "livre"}]}, timeout=60)
    assert "needs a bearer token" in _error(batch, 401)
    image = httpx.post(f"{limited.url}/predict_image", files={"image": ("p.jpg", b"x", "image/jpeg")}, timeout=60)
    assert "needs a bearer token" in _error(image, 401)


def test_health_and_readiness_stay_open(limited):
    health = httpx.get(f"{limited.url}/health", timeout=30)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["models"]["fusion"].startswith("rakuten-fusion:")
    assert httpx.get(f"{limited.url}/readyz", timeout=30).status_code == 200
    assert httpx.get(f"{limited.url}/livez", timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/train", {}),
        ("GET", "/jobs/20260101T000000-abcdef", None),
        ("POST", "/feedback", {"prediction_id": "x", "prdtypecode": 10}),
        ("GET", "/monitor/accuracy", None),
        ("POST", "/monitor/drift", None),
    ],
)
def test_admin_endpoints_refuse_the_prediction_token(limited, method, path, body):
    url = f"{limited.url}{path}"
    assert _error(httpx.request(method, url, json=body, headers=PREDICT, timeout=60), 403) == "invalid token"
    assert "needs a bearer token" in _error(httpx.request(method, url, json=body, timeout=60), 401)


def test_admin_token_opens_the_admin_endpoints(limited):
    accuracy = httpx.get(f"{limited.url}/monitor/accuracy", headers=ADMIN, timeout=60)
    assert accuracy.status_code == 200
    assert "accuracy" in accuracy.json()
    unknown = httpx.get(f"{limited.url}/jobs/20260101T000000-abcdef", headers=ADMIN, timeout=60)
    assert "unknown job" in _error(unknown, 404)


# ------------------------------------------------- text and body size (RAKUTEN_MAX_TEXT_CHARS, RAKUTEN_MAX_BODY_BYTES)


def test_text_over_the_limit_is_a_400(limited):
    long = "x" * (MAX_TEXT_CHARS + 1)
    for field, answer, form in (
        ("designation", _text(limited, PREDICT, designation=long), "TextInput"),
        ("description", _text(limited, PREDICT, description=long), "TextInput"),
        ("designation", _multimodal(limited, PREDICT, designation=long), "MultimodalInput"),
    ):
        assert _error(answer, 400) == f"1 validation error for {form}"
        [detail] = answer.json()["detail"]  # BentoML's validation answer: which field, and why
        assert detail["loc"] == [field]
        assert detail["type"] == "too_long"
        assert f"at most {MAX_TEXT_CHARS} " in detail["msg"]
        assert f"not {MAX_TEXT_CHARS + 1}" in detail["msg"]
    at_limit = _text(limited, PREDICT, designation="x" * MAX_TEXT_CHARS)
    assert at_limit.status_code == 200, at_limit.text


def test_body_over_the_limit_is_a_413(limited):
    big = b"\xff\xd8" + b"\0" * MAX_BODY_BYTES
    message = _error(_multimodal(limited, PREDICT, image=big), 413)
    assert f"the limit is {MAX_BODY_BYTES}" in message
    # Without a token the token is checked first: a stranger learns nothing about the limits.
    assert "needs a bearer token" in _error(_multimodal(limited, image=big), 401)
    # Streamed without Content-Length: counted while reading.
    streamed = httpx.post(
        f"{limited.url}/predict_text",
        headers={**PREDICT, "content-type": "application/json"},
        content=iter([b'{"designation": "', b"x" * MAX_BODY_BYTES, b'"}']),
        timeout=60,
    )
    assert f"over the limit of {MAX_BODY_BYTES} bytes" in _error(streamed, 413)
    # Admin routes have the same body limit.
    train = httpx.post(
        f"{limited.url}/feedback", headers=ADMIN, content=b"{" + b" " * MAX_BODY_BYTES + b"}", timeout=60
    )
    assert f"the limit is {MAX_BODY_BYTES}" in _error(train, 413)


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
    files = {"image": ("p.jpg", image, "image/jpeg")}
    return httpx.post(f"{server.url}{route}", data=data, files=files, headers=PREDICT, timeout=120)


def _batch(server: Server, items: list[dict]) -> httpx.Response:
    return httpx.post(f"{server.url}/predict_batch", json={"items": items, "top_k": 1}, headers=PREDICT, timeout=120)


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
        reply = _text(limited, PREDICT, designation="Lot de 3 romans policiers")
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
        json_error(_text(limited, PREDICT, designation="  "), 400)

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
        reply = _text(limited, PREDICT, designation=title)
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
    # No answered /monitor/drift call (the admin-token tests' refused calls compute nothing).
    manual = _total(samples, "bentoml_service_request_total", endpoint="/monitor/drift", http_response_code="200")
    assert manual == 0


# ---------------------------------------------------------------- a 1 ms budget, and POST /train {"retrain": true}


@pytest.fixture(scope="module")
def out_of_time(trained, sample_dir, serve, request, tmp_path_factory) -> tuple[Server, dict]:
    """A server on a copy of the session's store, the sample loaded in its database, with a 1 ms prediction
    budget (RAKUTEN_REQUEST_TIMEOUT_S); and what loading the sample answered."""
    from rakuten_classifier.config import Settings
    from rakuten_classifier.data.store import load_into_db

    folder = tmp_path_factory.mktemp("out-of-time")
    settings = Settings(data_root=folder / "data")
    # The sample in the database: the retrain check counts it, and finds no row the models were not trained with.
    loaded = load_into_db(
        sample_dir, settings.database_url, settings.seed, settings.val_fraction, settings.test_fraction
    )
    server = serve(
        request,
        data_root=settings.data_root,
        home=copy_session_store(folder),  # should the retrain check ever train, its promotion stays there
        RAKUTEN_ADMIN_TOKEN="retrain-token",
        RAKUTEN_REQUEST_TIMEOUT_S="0.001",
    )
    return server, loaded


@pytest.mark.parametrize("call", [_text, _multimodal], ids=["predict_text", "predict_multimodal"])
def test_a_prediction_over_the_time_budget_is_a_504_with_a_message(out_of_time, call):
    server, _ = out_of_time
    message = _error(call(server), 504)
    assert "longer than 0.001 s" in message
    assert "RAKUTEN_REQUEST_TIMEOUT_S" in message


def test_retrain_request_runs_the_retrain_check_and_records_its_decision(out_of_time):
    server, loaded = out_of_time
    token = {"Authorization": "Bearer retrain-token"}
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
    assert "drift" not in decision  # nothing logged: a prediction past the 1 ms budget is never logged
    assert any("retrain skipped: no trigger fired" in line for line in status["log_tail"]), status["log_tail"]
    assert after == before
