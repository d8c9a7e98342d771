"""ASGI middleware in front of the service: admin and prediction tokens, body size limit, malformed multipart.

BentoML parses a multipart body inside its handler and answers 500 when the body is malformed
(no boundary, broken part headers). This guard buffers the body (bounded), checks that a
multipart body parses, and answers 413/400 with a JSON message itself; valid requests are replayed
unchanged to the service. It is also the one place the bearer tokens are checked, so no
endpoint can forget to.
"""

from __future__ import annotations

import json
import logging

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from .auth import Refusal, check_bearer
from .errors import log_refusal, size_text, sizes_text

log = logging.getLogger(__name__)


async def _send_error(send, scope, status: int, message: str) -> None:
    """Answer a refused request with its JSON message, and log it as one line (serving.errors.log_refusal)."""
    log_refusal(f"{scope['method']} {scope.get('path', '')}", status, message)
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def multipart_problem(content_type: bytes, body: bytes) -> str | None:
    """Why a multipart body cannot be parsed, or None when it parses."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        return "multipart/form-data without a boundary"
    parser = MultipartParser(boundary)
    try:
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        return f"malformed multipart body ({exc})"
    return None


PREDICTION_PATH_PREFIX = "/predict"
# The administrative routes: training, job status, feedback, corrections, monitoring and Alertmanager's webhook
# (RAKUTEN_ADMIN_TOKEN).
ADMIN_PATHS = ("/train", "/corrections", "/alerts")
ADMIN_PATH_PREFIXES = ("/jobs/", "/feedback", "/monitor/")


def is_admin_path(path: str) -> bool:
    """Whether a request path is one of the administrative routes."""
    return path in ADMIN_PATHS or path.startswith(ADMIN_PATH_PREFIXES)


class RequestGuard:
    """Refuses unauthorised requests (admin routes always need RAKUTEN_ADMIN_TOKEN and are disabled
    without it; predictions need RAKUTEN_PREDICT_TOKEN when it is set), bodies over ``max_body_bytes``
    (413) and unparsable multipart bodies (400), before BentoML sees them."""

    def __init__(self, app, max_body_bytes: int, admin_token: str | None = None, predict_token: str | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.admin_token = admin_token
        self.predict_token = predict_token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        refusal = None
        path = scope.get("path", "")
        if is_admin_path(path):
            refusal = (
                check_bearer(authorization, self.admin_token, "administrative endpoint")
                if self.admin_token
                else Refusal(
                    403,
                    "administrative endpoint disabled: the server runs without RAKUTEN_ADMIN_TOKEN"
                    " (`make demo` sets one and prints it)",
                )
            )
        elif self.predict_token and path.startswith(PREDICTION_PATH_PREFIX):
            refusal = check_bearer(authorization, self.predict_token, "prediction")
        if refusal is not None:
            return await _send_error(send, scope, refusal.status, refusal.message)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            shown, limit = sizes_text(int(declared), self.max_body_bytes)
            return await _send_error(send, scope, 413, f"the request body is {shown}; the limit is {limit}")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                over = f"the request body is over the limit of {size_text(self.max_body_bytes)}"
                return await _send_error(send, scope, 413, over)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"")
        if content_type.lower().startswith(b"multipart/form-data"):
            problem = multipart_problem(content_type, body)
            if problem:
                return await _send_error(send, scope, 400, problem)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
