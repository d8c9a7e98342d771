"""Tokens, limits and the request timeout over HTTP, on one server with small limits.

RAKUTEN_REQUEST_TIMEOUT_S is 1 ms here, so an authorised prediction that reaches the models
answers 504: it proves the token let it through and that the timeout answers JSON, not a hang.
Every check asserts the status and the JSON message.
"""

from __future__ import annotations

import httpx
import pytest
from conftest import REPO_ROOT, Server, json_error, server_env

pytestmark = pytest.mark.slow

PREDICT = {"Authorization": "Bearer predict-token"}
ADMIN = {"Authorization": "Bearer admin-token"}
WRONG = {"Authorization": "Bearer not-the-token"}
MAX_TEXT_CHARS = 100
MAX_BODY_BYTES = 200_000


@pytest.fixture(scope="module")
def guarded(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("guarded")
    env = server_env(
        folder / "data",
        RAKUTEN_PREDICT_TOKEN="predict-token",
        RAKUTEN_ADMIN_TOKEN="admin-token",
        RAKUTEN_REQUEST_TIMEOUT_S="0.001",
        RAKUTEN_MAX_TEXT_CHARS=str(MAX_TEXT_CHARS),
        RAKUTEN_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
    )
    server = Server("service:RakutenClassifier", env, REPO_ROOT, folder / "serve.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _error(answer: httpx.Response, status: int) -> str:
    """The JSON error message of an answer that must have ``status``."""
    return json_error(answer, status)["error"]


def _text(server, headers=None, **fields):
    return httpx.post(
        f"{server.url}/predict_text",
        json={"designation": "piscine hors sol tubulaire", **fields},
        headers=headers,
        timeout=60,
    )


def _multimodal(server, headers=None, image: bytes | None = None, **fields):
    files = {"image": ("p.jpg", image, "image/jpeg")} if image is not None else None
    return httpx.post(
        f"{server.url}/predict_multimodal",
        data={"designation": "piscine hors sol", **fields},
        files=files,
        headers=headers,
        timeout=60,
    )


@pytest.mark.parametrize("call", [_text, _multimodal], ids=["predict_text", "predict_multimodal"])
def test_predictions_need_the_prediction_token(guarded, call):
    assert "needs a bearer token" in _error(call(guarded), 401)
    assert "needs a bearer token" in _error(call(guarded, {"Authorization": "Basic cHJlZGljdA=="}), 401)
    assert _error(call(guarded, WRONG), 403) == "invalid token"
    assert _error(call(guarded, ADMIN), 403) == "invalid token"  # the admin token is not a prediction token
    # Authorised: reaches the models, and the 1 ms budget answers 504 with a message.
    message = _error(call(guarded, PREDICT), 504)
    assert "longer than 0.001 s" in message
    assert "RAKUTEN_REQUEST_TIMEOUT_S" in message


def test_other_prediction_routes_are_guarded_too(guarded):
    batch = httpx.post(f"{guarded.url}/predict_batch", json={"items": [{"designation": "livre"}]}, timeout=60)
    assert "needs a bearer token" in _error(batch, 401)
    image = httpx.post(f"{guarded.url}/predict_image", files={"image": ("p.jpg", b"x", "image/jpeg")}, timeout=60)
    assert "needs a bearer token" in _error(image, 401)


def test_health_and_readiness_stay_open(guarded):
    health = httpx.get(f"{guarded.url}/health", timeout=30)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["models"]["fusion"].startswith("rakuten-fusion:")
    assert httpx.get(f"{guarded.url}/readyz", timeout=30).status_code == 200
    assert httpx.get(f"{guarded.url}/livez", timeout=30).status_code == 200


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
def test_admin_endpoints_refuse_the_prediction_token(guarded, method, path, body):
    url = f"{guarded.url}{path}"
    assert _error(httpx.request(method, url, json=body, headers=PREDICT, timeout=60), 403) == "invalid token"
    assert "needs a bearer token" in _error(httpx.request(method, url, json=body, timeout=60), 401)


def test_admin_token_opens_the_admin_endpoints(guarded):
    accuracy = httpx.get(f"{guarded.url}/monitor/accuracy", headers=ADMIN, timeout=60)
    assert accuracy.status_code == 200
    assert "accuracy" in accuracy.json()
    unknown = httpx.get(f"{guarded.url}/jobs/20260101T000000-abcdef", headers=ADMIN, timeout=60)
    assert "unknown job" in _error(unknown, 404)


def test_text_over_the_limit_is_a_400(guarded):
    long = "x" * (MAX_TEXT_CHARS + 1)
    for field, answer, form in (
        ("designation", _text(guarded, PREDICT, designation=long), "TextInput"),
        ("description", _text(guarded, PREDICT, description=long), "TextInput"),
        ("designation", _multimodal(guarded, PREDICT, designation=long), "MultimodalInput"),
    ):
        assert _error(answer, 400) == f"1 validation error for {form}"
        [detail] = answer.json()["detail"]  # BentoML's validation answer: which field, and why
        assert detail["loc"] == [field]
        assert detail["type"] == "too_long"
        assert f"at most {MAX_TEXT_CHARS} " in detail["msg"]
        assert f"not {MAX_TEXT_CHARS + 1}" in detail["msg"]
    # At the limit it is accepted (and then times out on the 1 ms budget).
    assert "RAKUTEN_REQUEST_TIMEOUT_S" in _error(_text(guarded, PREDICT, designation="x" * MAX_TEXT_CHARS), 504)


def test_body_over_the_limit_is_a_413(guarded):
    big = b"\xff\xd8" + b"\0" * MAX_BODY_BYTES
    message = _error(_multimodal(guarded, PREDICT, image=big), 413)
    assert f"the limit is {MAX_BODY_BYTES}" in message
    # Without a token the token is checked first: a stranger learns nothing about the limits.
    assert "needs a bearer token" in _error(_multimodal(guarded, image=big), 401)
    # Streamed without Content-Length: counted while reading.
    streamed = httpx.post(
        f"{guarded.url}/predict_text",
        headers={**PREDICT, "content-type": "application/json"},
        content=iter([b'{"designation": "', b"x" * MAX_BODY_BYTES, b'"}']),
        timeout=60,
    )
    assert f"over the limit of {MAX_BODY_BYTES} bytes" in _error(streamed, 413)
    # Admin routes have the same body limit.
    train = httpx.post(
        f"{guarded.url}/feedback", headers=ADMIN, content=b"{" + b" " * MAX_BODY_BYTES + b"}", timeout=60
    )
    assert f"the limit is {MAX_BODY_BYTES}" in _error(train, 413)
