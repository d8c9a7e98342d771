"""Tokens, limits, the periodic drift refresh, the request timeout and the retrain job over HTTP.

Tokens, limits and the drift refresh are HTTP answers of the entry service's ASGI app in this process
(conftest.in_process_service: its routes, the request guard and both model services, over the session's
tiny trio), without a server. One app with both tokens and small limits answers every claim that does
not change it. Its RAKUTEN_MAX_IMAGE_BYTES is far below RAKUTEN_MAX_BODY_BYTES, so a 413 naming the
image limit comes from the image check, not from the body limit. The drift refresh has an app of its
own (a fresh prediction log, a 2 s period).

A real `bentoml serve`, over a copy of the tiny trio and of its database (a retrain job could promote
there), has a 1 ms prediction budget: a prediction that reaches the models answers 504, which proves the
timeout answers JSON, not a hang. Every refusal asserts the status and the JSON message. The service's
other answers over a real server: tests/test_service.py (client errors, /train's token),
tests/test_monitoring_http.py (/metrics and its values, /feedback, /monitor), tests/test_hot_swap.py.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import TINY_ROWS_PER_CATEGORY, TINY_SETTINGS, Server, in_process_service, json_error
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.monitoring.drift import MIN_OBSERVATIONS
from rakuten_classifier.pipeline.training_data import load_training_data

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
def limited(tiny, tmp_path_factory) -> Iterator[httpx.Client]:
    """The app with both tokens and small limits (its client)."""
    with in_process_service(
        tiny.home,
        tmp_path_factory.mktemp("limited") / "data",
        RAKUTEN_PREDICT_TOKEN="predict-token",
        RAKUTEN_ADMIN_TOKEN="admin-token",
        RAKUTEN_MAX_TEXT_CHARS=str(MAX_TEXT_CHARS),
        RAKUTEN_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        RAKUTEN_MAX_IMAGE_BYTES=str(IMAGE_LIMIT),
        RAKUTEN_MAX_BATCH_ITEMS=str(BATCH_LIMIT),
    ) as client:
        yield client


def _error(answer: httpx.Response, status: int) -> str:
    """The JSON error message of an answer that must have ``status``."""
    return json_error(answer, status)["error"]


def _text(client: httpx.Client, headers: dict | None = None, **fields) -> httpx.Response:
    return client.post("/predict_text", json={"designation": "piscine hors sol tubulaire", **fields}, headers=headers)


def _multimodal(
    client: httpx.Client, headers: dict | None = None, image: bytes | None = None, **fields
) -> httpx.Response:
    files = {"image": ("p.jpg", image, "image/jpeg")} if image is not None else None
    return client.post(
        "/predict_multimodal", data={"designation": "piscine hors sol", **fields}, files=files, headers=headers
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
    batch = limited.post("/predict_batch", json={"items": [{"designation": "livre"}]})
    assert "needs a bearer token" in _error(batch, 401)
    image = limited.post("/predict_image", files={"image": ("p.jpg", b"x", "image/jpeg")})
    assert "needs a bearer token" in _error(image, 401)


def test_health_and_readiness_stay_open(limited):
    health = limited.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["models"]["fusion"].startswith("rakuten-fusion:")
    assert limited.get("/readyz").status_code == 200
    assert limited.get("/livez").status_code == 200


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
    assert _error(limited.request(method, path, json=body, headers=PREDICT), 403) == "invalid token"
    assert "needs a bearer token" in _error(limited.request(method, path, json=body), 401)


def test_admin_token_opens_the_admin_endpoints(limited):
    accuracy = limited.get("/monitor/accuracy", headers=ADMIN)
    assert accuracy.status_code == 200
    assert "accuracy" in accuracy.json()
    unknown = limited.get("/jobs/20260101T000000-abcdef", headers=ADMIN)
    assert "unknown job" in _error(unknown, 404)


# ------------------------------------------------- text and body size (RAKUTEN_MAX_TEXT_CHARS, RAKUTEN_MAX_BODY_BYTES)


def test_text_over_the_limit_is_a_400(limited):
    long = "x" * (MAX_TEXT_CHARS + 1)
    for field, answer in (
        ("designation", _text(limited, PREDICT, designation=long)),
        ("description", _text(limited, PREDICT, description=long)),
        ("designation", _multimodal(limited, PREDICT, designation=long)),
    ):
        # In characters, with the field's name (not pydantic's "1 validation error for TextInput ... items").
        body = json_error(answer, 400)
        assert body == {"error": f"{field} is {MAX_TEXT_CHARS + 1} characters long; the limit is {MAX_TEXT_CHARS}"}
    at_limit = _text(limited, PREDICT, designation="x" * MAX_TEXT_CHARS)
    assert at_limit.status_code == 200, at_limit.text


def test_body_over_the_limit_is_a_413(limited):
    big = b"\xff\xd8" + b"\0" * MAX_BODY_BYTES
    message = _error(_multimodal(limited, PREDICT, image=big), 413)
    assert message.startswith("the request body is 488.")  # 500,000 bytes and a few: in KB, not bytes
    assert message.endswith("the limit is 488.3 KB")
    # Without a token the token is checked first: a stranger learns nothing about the limits.
    assert "needs a bearer token" in _error(_multimodal(limited, image=big), 401)
    # Streamed without Content-Length: counted while reading.
    streamed = limited.post(
        "/predict_text",
        headers={**PREDICT, "content-type": "application/json"},
        content=iter([b'{"designation": "', b"x" * MAX_BODY_BYTES, b'"}']),
    )
    assert "content-length" not in streamed.request.headers
    assert _error(streamed, 413) == "the request body is over the limit of 488.3 KB"
    # Admin routes have the same body limit.
    train = limited.post("/feedback", headers=ADMIN, content=b"{" + b" " * MAX_BODY_BYTES + b"}")
    assert "the limit is 488.3 KB" in _error(train, 413)


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


def _upload(client: httpx.Client, route: str, image: bytes) -> httpx.Response:
    data = {"designation": "piscine hors sol"} if route == "/predict_multimodal" else None
    return client.post(route, data=data, files={"image": ("p.jpg", image, "image/jpeg")}, headers=PREDICT)


def _batch(client: httpx.Client, items: list[dict], headers: dict | None = PREDICT) -> httpx.Response:
    return client.post("/predict_batch", json={"items": items, "top_k": 1}, headers=headers)


# ---------------------------------------------------------------- image size (RAKUTEN_MAX_IMAGE_BYTES)


@pytest.mark.parametrize("route", ["/predict_multimodal", "/predict_image"])
def test_uploaded_image_over_the_byte_limit_is_a_413_and_at_the_limit_is_answered(limited, sample_jpeg, route):
    over = json_error(_upload(limited, route, _padded(sample_jpeg, IMAGE_LIMIT + 1)), 413)
    # In KB; one byte over rounds to the limit's figure, so the exact bytes are said too.
    assert over["error"] == "the image is 97.7 KB (100,001 bytes); the limit is 97.7 KB (100,000 bytes)"
    far_over = json_error(_upload(limited, route, _padded(sample_jpeg, 3 * IMAGE_LIMIT)), 413)
    assert far_over["error"] == "the image is 293 KB; the limit is 97.7 KB"
    at_limit = _upload(limited, route, _padded(sample_jpeg, IMAGE_LIMIT))
    assert at_limit.status_code == 200, at_limit.text
    assert at_limit.json()["image"], at_limit.json()  # the image model answered for it


def test_batch_image_over_the_byte_limit_is_a_413_naming_the_item(limited, sample_jpeg):
    at_limit = base64.b64encode(_padded(sample_jpeg, IMAGE_LIMIT)).decode()
    for size in (IMAGE_LIMIT + 1, 3 * IMAGE_LIMIT):
        over = base64.b64encode(_padded(sample_jpeg, size)).decode()
        body = json_error(_batch(limited, [{"designation": "livre"}, {"image_base64": over}]), 413)
        assert body["error"].startswith("items[1]: the image is "), body
        assert body["error"].endswith("the limit is 97.7 KB" + (" (100,000 bytes)" if size == IMAGE_LIMIT + 1 else ""))
    answered = _batch(limited, [{"designation": "livre", "image_base64": at_limit}])
    assert answered.status_code == 200, answered.text
    [prediction] = answered.json()["predictions"]
    assert prediction["image"], prediction


# ---------------------------------------------------------------- batch size (RAKUTEN_MAX_BATCH_ITEMS)


def test_batch_over_the_item_limit_is_a_400_and_the_limit_itself_is_answered(limited):
    items = [{"designation": f"jeu de société {n}"} for n in range(BATCH_LIMIT + 1)]
    body = json_error(_batch(limited, items), 400)
    assert body == {"error": f"items has {BATCH_LIMIT + 1} items; the limit is {BATCH_LIMIT}"}
    answered = _batch(limited, items[:BATCH_LIMIT])
    assert answered.status_code == 200, answered.text
    assert len(answered.json()["predictions"]) == BATCH_LIMIT


# ---------------------------------------------------------------- periodic drift refresh


def _metrics() -> list:
    """Every sample of the service's metrics (name, labels, value): in this process, prometheus_client's
    registry, which `bentoml serve` exports at /metrics (tests/test_monitoring_http.py reads it over HTTP)."""
    text = generate_latest(REGISTRY).decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _total(samples: list, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_drift_refreshes_by_itself_on_the_configured_interval(tiny, sample_dir, tmp_path):
    # An app of this test's own: nothing but this test asks it anything, and it never calls /monitor/drift,
    # so the drift figures can come from the periodic refresh alone.
    with in_process_service(
        tiny.home,
        tmp_path / "data",
        RAKUTEN_DRIFT_INTERVAL_SECONDS=str(DRIFT_INTERVAL_S),
        RAKUTEN_DRIFT_WINDOW="500",
        RAKUTEN_LOG_FLUSH_SECONDS="0.5",
    ) as client:
        # Real titles, enough for a PSI (drift.MIN_OBSERVATIONS = 30 per feature): a non-zero score to find.
        titles = load_training_data(sample_dir).split("test")["designation"].head(MIN_OBSERVATIONS)
        for title in titles:
            reply = _text(client, designation=title)
            assert reply.status_code == 200, reply.text
        answered = len(titles)  # the app's whole prediction log: it fits in the drift window
        # Within a few refresh periods the drift window holds every answered prediction, with nobody
        # calling /monitor/drift; the default period (300 s) would not get there before the deadline.
        deadline = time.monotonic() + 30 * DRIFT_INTERVAL_S
        drift, samples = None, []
        while time.monotonic() < deadline:
            drift = client.get("/health").json()["drift"]
            samples = _metrics()
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


# ---------------------------------------------------------------- a 1 ms budget, and POST /train {"retrain": true}


@pytest.fixture(scope="module")
def out_of_time(tiny, serve, request, tmp_path_factory) -> Server:
    """`bentoml serve` over a copy of the tiny trio and of its database (the rows it was trained from; should
    the retrain check ever train, its promotion stays in the copy), with a 1 ms prediction budget
    (RAKUTEN_REQUEST_TIMEOUT_S): a real server, since the budget bounds the entry's calls to its model
    services, which answer in-process at once."""
    home, data_root = tiny.copy(tmp_path_factory.mktemp("out-of-time"))
    return serve(
        request,
        data_root=data_root,
        home=home,
        RAKUTEN_ADMIN_TOKEN="retrain-token",
        RAKUTEN_REQUEST_TIMEOUT_S="0.001",
        **TINY_SETTINGS,
    )


def _http_text(server: Server) -> httpx.Response:
    return httpx.post(f"{server.url}/predict_text", json={"designation": "piscine hors sol tubulaire"}, timeout=60)


def _http_multimodal(server: Server) -> httpx.Response:
    return httpx.post(f"{server.url}/predict_multimodal", data={"designation": "piscine hors sol"}, timeout=60)


@pytest.mark.parametrize("call", [_http_text, _http_multimodal], ids=["predict_text", "predict_multimodal"])
def test_a_prediction_over_the_time_budget_is_a_504_with_a_message(out_of_time, call):
    message = _error(call(out_of_time), 504)
    assert "longer than 0.001 s" in message
    assert "RAKUTEN_REQUEST_TIMEOUT_S" in message


def test_retrain_request_runs_the_retrain_check_and_records_its_decision(out_of_time, tiny):
    server, token = out_of_time, {"Authorization": "Bearer retrain-token"}
    before = httpx.get(f"{server.url}/health", timeout=30).json()["models"]
    assert before == tiny.production
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
    assert decision["labelled_in_database"] == tiny.loaded["rows"] == len(CATEGORY_CODES) * TINY_ROWS_PER_CATEGORY
    assert decision["new_labelled_rows"] == 0  # the production models were trained on these very rows
    assert decision["triggers"] == []
    assert decision["trained"] is False
    assert "drift" not in decision  # nothing logged: a prediction past the 1 ms budget is never logged
    assert any("retrain skipped: no trigger fired" in line for line in status["log_tail"]), status["log_tail"]
    assert after == before
