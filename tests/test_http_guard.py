"""The ASGI guard: admin token, body limit and multipart validation, on a bare ASGI app."""

import asyncio

from rakuten_classifier.serving.http_guard import RequestGuard, multipart_problem


def test_multipart_problem_detects_missing_boundary_and_broken_parts():
    assert multipart_problem(b"multipart/form-data", b"x") == "multipart/form-data without a boundary"
    problem = multipart_problem(b"multipart/form-data; boundary=b", b"--b\r\n-1--b--\r\n")
    assert problem is not None
    assert "malformed" in problem
    good = b'--b\r\nContent-Disposition: form-data; name="designation"\r\n\r\nlivre\r\n--b--\r\n'
    assert multipart_problem(b"multipart/form-data; boundary=b", good) is None


def _call(guard, headers, chunks, path="/predict_text"):
    sent, seen = [], []
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        message = await receive()
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})

    guard.app = app
    asyncio.run(guard({"type": "http", "method": "POST", "path": path, "headers": headers}, receive, send))
    return sent[0]["status"], seen


def test_guard_refuses_oversized_bodies_and_replays_valid_ones():
    guard = RequestGuard(None, max_body_bytes=10)
    assert _call(guard, [(b"content-length", b"11")], [b"x" * 11])[0] == 413
    assert _call(guard, [], [b"x" * 6, b"y" * 6])[0] == 413  # no content-length: counted while reading
    status, seen = _call(guard, [(b"content-type", b"application/json")], [b'{"a":', b"1}"])
    assert status == 200
    assert seen == [b'{"a":1}']


def test_admin_routes_answer_403_when_no_admin_token_is_configured():
    """Without RAKUTEN_ADMIN_TOKEN the administrative routes are disabled, whatever the request carries."""
    disabled = RequestGuard(None, max_body_bytes=1000, admin_token=None)
    for path in ("/train", "/jobs/abc", "/feedback", "/monitor/drift", "/monitor/accuracy", "/alerts"):
        assert _call(disabled, [(b"authorization", b"Bearer anything")], [b"{}"], path)[0] == 403, path
    assert _call(disabled, [], [b"{}"], "/predict_text")[0] == 200  # predictions stay open


def test_admin_routes_need_the_admin_token_when_one_is_configured():
    guarded = RequestGuard(None, max_body_bytes=1000, admin_token="secret")
    assert _call(guarded, [], [b"{}"], "/train")[0] == 401
    assert _call(guarded, [(b"authorization", b"Bearer nope")], [b"{}"], "/train")[0] == 403
    status, seen = _call(guarded, [(b"authorization", b"Bearer secret")], [b"{}"], "/train")
    assert status == 200
    assert seen == [b"{}"]
    # Alertmanager's webhook likewise (it sends the token from its credentials_file: deploy/alertmanager.yml).
    assert _call(guarded, [], [b"{}"], "/alerts")[0] == 401
    assert _call(guarded, [(b"authorization", b"Bearer nope")], [b"{}"], "/alerts")[0] == 403
    assert _call(guarded, [(b"authorization", b"Bearer secret")], [b"{}"], "/alerts")[0] == 200


def test_the_guards_refusals_are_in_mb_and_logged_as_one_warning(caplog):
    guard = RequestGuard(None, max_body_bytes=64 * 1024 * 1024)
    with caplog.at_level("INFO"):
        assert _call(guard, [(b"content-length", str(70 * 1024 * 1024).encode())], [b""])[0] == 413
    [record] = caplog.records
    assert (record.name, record.levelname, record.exc_info) == ("rakuten.refused", "WARNING", None)
    assert record.getMessage() == "refused POST /predict_text (HTTP 413): the request body is 70 MB; the limit is 64 MB"
