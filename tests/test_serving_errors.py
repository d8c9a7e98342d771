"""How every endpoint answers a ClientError: the API methods' decorator (BentoML still reads their signature);
refusals in plain words (characters, MB, the field's name), logged as one WARNING line without a traceback,
in this process and against `bentoml serve` (conftest's `served`)."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
import typing as t
from pathlib import Path
from types import SimpleNamespace

import bentoml
import pytest

from rakuten_classifier.serving.errors import ClientError, answers_client_errors


async def _classify(self, designation: str, top_k: int = 5, explain: bool = False) -> dict:
    """Classify a title."""
    if not designation.strip():
        raise ClientError("empty product", detail=[{"loc": ["designation"]}])
    if top_k > 27:
        raise ClientError("too slow", 504)
    return {"prdtypecode": 10}


async def _train(self, data_dir: str | None = None, ctx: bentoml.Context = None) -> dict:  # type: ignore[assignment]
    """Start a job."""
    if data_dir == "busy":
        raise ClientError("a job is running", 409)
    ctx.response.status_code = 202
    return {"job_id": "j"}


def test_an_api_methods_client_error_becomes_its_json_answer_with_its_status():
    classify: t.Any = answers_client_errors(_classify)  # typed as the method: BentoML sends a Response as is
    assert asyncio.run(classify(None, "piscine")) == {"prdtypecode": 10}
    refused = asyncio.run(classify(None, " "))
    assert refused.status_code == 400
    assert json.loads(refused.body) == {"error": "empty product", "detail": [{"loc": ["designation"]}]}
    late = asyncio.run(classify(None, "piscine", top_k=30))
    assert (late.status_code, json.loads(late.body)) == (504, {"error": "too slow"})


def test_a_method_with_bentomls_context_gets_the_status_on_the_context():
    # BentoML answers such a method with the context's status, whatever Response it returns.
    train: t.Any = answers_client_errors(_train)
    ctx = SimpleNamespace(response=SimpleNamespace(status_code=200))
    assert asyncio.run(train(None, "busy", ctx=ctx)) == {"error": "a job is running"}
    assert ctx.response.status_code == 409
    assert asyncio.run(train(None, None, ctx=ctx)) == {"job_id": "j"}
    assert ctx.response.status_code == 202


@pytest.mark.parametrize("method", [_classify, _train])
def test_bentoml_reads_a_wrapped_method_as_the_method_itself(method):
    wrapped = answers_client_errors(method)
    assert inspect.signature(wrapped) == inspect.signature(method)
    assert inspect.iscoroutinefunction(wrapped)
    plain, decorated = bentoml.api(method), bentoml.api(wrapped)
    assert decorated.schema() == plain.schema()  # name, route, input and output schemas
    assert (decorated.name, decorated.route, decorated.ctx_param) == (plain.name, plain.route, plain.ctx_param)


# ---------------------------------------------------------------- refusals in plain words, logged as one line


def _form_request(cls, data: dict | None = None, files: dict | None = None, json_body: bytes | None = None):
    """What BentoML's HTTP app does with a request body first: parse it into the API's input model."""
    import httpx
    from _bentoml_impl.serde import ALL_SERDE
    from starlette.requests import Request

    if json_body is None:
        built = httpx.Request("POST", "http://test/", data=data, files=files)
        body, content_type = built.read(), built.headers["content-type"]
    else:
        body, content_type = json_body, "application/json"
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    request = Request(
        {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-type", content_type.encode())]},
        receive,
    )
    serde = ALL_SERDE[content_type.split(";")[0]]()
    parsed = asyncio.run(cls.from_http_request(request, serde))
    return {name: getattr(parsed, name) for name in cls.model_fields}


def _refusal(arguments: dict) -> str:
    """The refusal every argument of a refused request is (serving.schemas.CheckedInput)."""
    values = list(arguments.values())
    assert all(isinstance(value, ClientError) and value is values[0] for value in values), values
    assert values[0].status == 400
    assert values[0].detail is None  # the message says it all: no pydantic detail for the page to print
    return str(values[0])


def test_input_models_refuse_in_plain_words_naming_the_field():
    from rakuten_classifier.serving.schemas import BatchInput, ImageInput, MultimodalInput, TextInput

    long = "x" * 100_000
    assert _refusal(_form_request(MultimodalInput, {"designation": long})) == (
        "designation is 100,000 characters long; the limit is 20,000"
    )
    assert _refusal(
        _form_request(TextInput, json_body=json.dumps({"designation": "a", "description": long}).encode())
    ) == ("description is 100,000 characters long; the limit is 20,000")
    assert _refusal(_form_request(MultimodalInput, {"designation": "piscine", "foo": "1"})) == (
        "unknown field 'foo'; the fields are designation, description, image, text_weight, top_k, explain"
    )
    batch = json.dumps({"items": [{"designation": "livre", "colour": "red"}]}).encode()
    assert _refusal(_form_request(BatchInput, json_body=batch)) == (
        "unknown field 'colour' in items[0]; the fields are designation, description, image_base64"
    )
    assert _refusal(_form_request(TextInput, json_body=b"{}")) == "designation is missing"
    assert _refusal(_form_request(ImageInput, {"top_k": "3"})) == "image is missing"
    both = _refusal(_form_request(MultimodalInput, {"designation": "x", "text_weight": "1.5", "top_k": "many"}))
    assert both == "text_weight must be at most 1.0 (it is 1.5); top_k must be a whole number (it is 'many')"
    notes = _refusal(_form_request(MultimodalInput, {"designation": "x"}, {"image": ("n.txt", b"hi", "text/plain")}))
    assert notes == "image must be a file of content type image/* (a JPEG, PNG or WebP photo); it is text/plain"
    assert _refusal(_form_request(TextInput, json_body=b"{not json")).startswith("the body is not valid JSON")
    # A file field sent as text: BentoML would fetch it as a URL (a 500 when it is not one); refused instead.
    for text in ("hello", "http://127.0.0.1:9/p.jpg"):
        as_text = _form_request(MultimodalInput, {"designation": "x", "image": text})
        assert _refusal(as_text) == "image must be a file (a photo sent as a file part), not text"
    # A valid request is the model itself, as BentoML parses it.
    assert _form_request(MultimodalInput, {"designation": "piscine", "top_k": "3"})["top_k"] == 3


def test_a_refused_request_is_answered_without_calling_the_method_and_logged_as_one_warning(caplog):
    called = []

    async def classify(self, designation: str = "") -> dict:
        called.append(designation)
        return {}

    answer: t.Any = answers_client_errors(classify)
    refusal = ClientError("designation is 100,000 characters long; the limit is 20,000")
    with caplog.at_level("INFO"):
        refused = asyncio.run(answer(None, designation=refusal))
    assert called == []
    assert (refused.status_code, json.loads(refused.body)) == (400, {"error": str(refusal)})
    [record] = caplog.records
    assert (record.name, record.levelname, record.exc_info) == ("rakuten.refused", "WARNING", None)
    assert record.getMessage() == f"refused classify (HTTP 400): {refusal}"


def test_sizes_are_said_in_mb_and_exact_bytes_only_where_the_rounded_figures_would_look_equal():
    from rakuten_classifier.serving.errors import size_text, sizes_text
    from rakuten_classifier.serving.schemas import image_too_large

    mb = 1024 * 1024
    assert str(image_too_large(20 * mb)) == "the image is 20 MB; the limit is 10 MB"
    assert image_too_large(20 * mb).status == 413
    assert str(image_too_large(int(10.5 * mb))) == "the image is 10.5 MB; the limit is 10 MB"
    assert sizes_text(10 * mb + 1, 10 * mb) == ("10 MB (10,485,761 bytes)", "10 MB (10,485,760 bytes)")
    assert (size_text(100_000), size_text(512)) == ("97.7 KB", "512 bytes")


# ---------------------------------------------------------------- the four bad inputs against `bentoml serve`

MEGABYTE = 1024 * 1024
FIELDS = "designation, description, image, text_weight, top_k, explain"
# name: (the request's httpx arguments, made when sent; status; message). The limits: the defaults (10 MB, 20,000).
BAD_INPUTS: dict[str, tuple[t.Callable[[], dict], int, str]] = {
    "empty form": (
        lambda: {"files": {"designation": (None, ""), "description": (None, "")}},
        400,
        "empty product: nothing to classify; give a designation (title), a description, an image, or several",
    ),
    "20 MB of random bytes": (
        lambda: {"files": {"image": ("random.jpg", os.urandom(20 * MEGABYTE), "image/jpeg")}},
        413,
        "the image is 20 MB; the limit is 10 MB",
    ),
    "100,000 characters": (
        lambda: {"data": {"designation": "x" * 100_000}},
        400,
        "designation is 100,000 characters long; the limit is 20,000",
    ),
    "a stray field": (
        lambda: {"data": {"designation": "piscine hors sol", "foo": "bar"}},
        400,
        f"unknown field 'foo'; the fields are {FIELDS}",
    ),
}


def logged_since(log_path: Path, offset: int, message: str, timeout: float = 10) -> str:
    """The server's log written after ``offset``, once it holds ``message`` (the server writes it asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        with log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        if message in text or time.monotonic() > deadline:
            return text


def refuse_and_log(server, name: str) -> tuple[int, str, str]:
    """Send one of BAD_INPUTS to /predict_multimodal: its status, its message and the server's log line of it."""
    import httpx

    arguments, _, message = BAD_INPUTS[name]
    offset = server.log_path.stat().st_size
    answer = httpx.post(f"{server.url}/predict_multimodal", timeout=120, **arguments())
    written = logged_since(server.log_path, offset, message)
    lines = [line for line in written.splitlines() if message in line]
    assert len(lines) == 1, written[-3000:]  # one line, not the access log's nor a traceback's
    assert "Traceback" not in written, written[-3000:]
    assert "[ERROR]" not in written, written[-3000:]
    return answer.status_code, answer.json().get("error", answer.text), lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_over_http_are_refused_in_plain_words_and_logged_as_one_warning_line(served, name):
    status, message, line = refuse_and_log(served, name)
    assert (status, message) == BAD_INPUTS[name][1:]
    assert "[WARNING]" in line
    assert f"refused predict_multimodal (HTTP {status}): {message}" in line
