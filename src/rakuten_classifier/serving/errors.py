"""The one error type of the serving layer: a request that cannot be answered, with its HTTP status."""

from __future__ import annotations

from starlette.responses import JSONResponse


class ClientError(Exception):
    """A request that cannot be answered; becomes a JSON answer {"error": ...} with its status (4xx, 503 or 504)."""

    def __init__(self, message: str, status: int = 400, detail: object = None):
        super().__init__(message)
        self.status = status
        self.detail = detail  # e.g. pydantic's list of validation errors


def error_response(exc: ClientError) -> JSONResponse:
    """The JSON answer of a refused request."""
    body: dict = {"error": str(exc)}
    if exc.detail is not None:
        body["detail"] = exc.detail
    return JSONResponse(body, status_code=exc.status)
