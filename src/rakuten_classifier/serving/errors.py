"""The one error type of the serving layer, a request that cannot be answered with its HTTP status, and how
every endpoint answers it: `answers_client_errors` on the BentoML API methods, `client_error_answer` as the
FastAPI app's handler (the /ui page, /corrections, /feedback)."""

from __future__ import annotations

import functools
import typing as t

from starlette.requests import Request
from starlette.responses import JSONResponse

Method = t.TypeVar("Method", bound=t.Callable[..., t.Awaitable[t.Any]])


class ClientError(Exception):
    """A request that cannot be answered; becomes a JSON answer {"error": ...} with its status (4xx, 503 or 504)."""

    def __init__(self, message: str, status: int = 400, detail: object = None):
        super().__init__(message)
        self.status = status
        self.detail = detail  # e.g. pydantic's list of validation errors


def error_body(exc: ClientError) -> dict:
    """The JSON body of a refused request: {"error": message} and, where there is one, its ``detail``."""
    body: dict = {"error": str(exc)}
    if exc.detail is not None:
        body["detail"] = exc.detail
    return body


def error_response(exc: ClientError) -> JSONResponse:
    """The JSON answer of a refused request."""
    return JSONResponse(error_body(exc), status_code=exc.status)


async def client_error_answer(request: Request, exc: Exception) -> JSONResponse:
    """The FastAPI app's handler of a ClientError raised by one of its routes (``add_exception_handler``)."""
    return error_response(t.cast(ClientError, exc))


def answers_client_errors(method: Method) -> Method:
    """An async BentoML API method whose ClientError becomes its JSON answer (BentoML sends a Response as it is).

    `functools.wraps` keeps the method's name, docstring and signature (``__wrapped__``), which BentoML
    reads for the API's route, context parameter and schema. A method with BentoML's ``ctx`` parameter
    gets the status set on the context instead: BentoML answers with the context's status, not a Response's.
    """

    @functools.wraps(method)
    async def answer(*args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return await method(*args, **kwargs)
        except ClientError as exc:
            context = kwargs.get("ctx")
            if context is None:
                return error_response(exc)
            context.response.status_code = exc.status
            return error_body(exc)

    return t.cast(Method, answer)
