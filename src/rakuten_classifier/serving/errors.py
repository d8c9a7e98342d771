"""The one error type of the serving layer, a request that cannot be answered with its HTTP status, and how
every endpoint answers it: `answers_client_errors` on the BentoML API methods, `client_error_answer` as the
FastAPI app's handler (the /ui page, /corrections, /feedback).

A refusal is said in the words of the person who sent the request (characters, MB, the field's name:
`plain_words` for pydantic's validation errors, `size_text` for sizes) and logged as one WARNING line,
never with a traceback: it is the client's mistake, not the server's. A server fault (any other
exception) keeps BentoML's ERROR line and traceback.
"""

from __future__ import annotations

import functools
import logging
import typing as t

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

Method = t.TypeVar("Method", bound=t.Callable[..., t.Awaitable[t.Any]])
log = logging.getLogger("rakuten.refused")
MEGABYTE = 1024 * 1024
KILOBYTE = 1024


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


def log_refusal(where: str, status: int, message: str) -> None:
    """The one log line of a refused request (WARNING, no traceback)."""
    log.warning("refused %s (HTTP %d): %s", where, status, message)


async def client_error_answer(request: Request, exc: Exception) -> JSONResponse:
    """The FastAPI app's handler of a ClientError raised by one of its routes (``add_exception_handler``)."""
    error = t.cast(ClientError, exc)
    log_refusal(f"{request.method} {request.url.path}", error.status, str(error))
    return error_response(error)


def answers_client_errors(method: Method) -> Method:
    """An async BentoML API method whose ClientError becomes its JSON answer (BentoML sends a Response as it is).

    `functools.wraps` keeps the method's name, docstring and signature (``__wrapped__``), which BentoML
    reads for the API's route, context parameter and schema. A method with BentoML's ``ctx`` parameter
    gets the status set on the context instead: BentoML answers with the context's status, not a Response's.
    A request its input model refused reaches the method as that refusal in place of every argument
    (serving.schemas.CheckedInput): it is answered so, and the method is never called.
    """

    @functools.wraps(method)
    async def answer(*args: t.Any, **kwargs: t.Any) -> t.Any:
        refused = next((value for value in (*args, *kwargs.values()) if isinstance(value, ClientError)), None)
        try:
            if refused is not None:
                raise refused
            return await method(*args, **kwargs)
        except ClientError as exc:
            log_refusal(method.__name__, exc.status, str(exc))
            context = kwargs.get("ctx")
            if context is None:
                return error_response(exc)
            context.response.status_code = exc.status
            return error_body(exc)

    return t.cast(Method, answer)


# ---------------------------------------------------------------- the words of a refusal


def size_text(size: int) -> str:
    """A size as a person reads it: '20 MB', '10.5 MB', '97.7 KB', '512 bytes' (1 MB = 1024 x 1024 bytes)."""
    for unit, name in ((MEGABYTE, "MB"), (KILOBYTE, "KB")):
        if size >= unit:
            return f"{size / unit:.1f}".removesuffix(".0") + f" {name}"
    return f"{size} bytes"


def sizes_text(size: int, limit: int) -> tuple[str, str]:
    """A size over a limit and the limit, in words; exact bytes where the rounded figures would look equal."""
    shown, allowed = size_text(size), size_text(limit)
    if shown == allowed:
        return f"{shown} ({size:,} bytes)", f"{allowed} ({limit:,} bytes)"
    return shown, allowed


def _where(loc: tuple) -> str:
    """A field's place in the request: 'designation', 'items[0].designation', 'the body' (empty location)."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the body"


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the model that holds a location's last part (nested models, lists of models)."""
    current: type[BaseModel] = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        found = [a for a in (annotation, *t.get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not found:
            return []
        current = found[0]
    return list(current.model_fields)


def _shown(value: t.Any) -> str:
    """A value a client sent, short enough for a message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _problem(error: t.Any, model: type[BaseModel]) -> str:
    """One pydantic error (``ValidationError.errors()``) in plain words."""
    loc, kind, context, value = tuple(error["loc"]), error["type"], error.get("ctx") or {}, error.get("input")
    where = _where(loc)
    if kind == "extra_forbidden":
        fields = _fields_at(model, loc)
        known = f"; the fields are {', '.join(fields)}" if fields else ""
        inside = f" in {_where(loc[:-1])}" if len(loc) > 1 else ""
        return f"unknown field {loc[-1]!r}{inside}{known}"
    if kind in ("too_long", "string_too_long") and "max_length" in context:
        if isinstance(value, str):
            return f"{where} is {len(value):,} characters long; the limit is {context['max_length']:,}"
        count = context.get("actual_length", len(value) if isinstance(value, list | tuple | dict) else None)
        given = f" has {count:,} items" if count is not None else " has too many items"
        return f"{where}{given}; the limit is {context['max_length']:,}"
    if kind in ("too_short", "string_too_short") and "min_length" in context:
        return f"{where} is empty: give at least {context['min_length']}"
    if kind == "missing":
        return f"{where} is missing"
    bounds = {"less_than_equal": "at most", "less_than": "less than", "greater_than_equal": "at least"}
    bounds["greater_than"] = "more than"
    if kind in bounds:
        limit = next(iter(context.values()), None)
        return f"{where} must be {bounds[kind]} {limit} (it is {_shown(value)})"
    parsing = {"int_parsing": "a whole number", "float_parsing": "a number", "bool_parsing": "true or false"}
    if kind in parsing:
        return f"{where} must be {parsing[kind]} (it is {_shown(value)})"
    if kind == "json_invalid":
        return f"the body is not valid JSON ({context.get('error', 'unreadable')})"
    message = str(error["msg"]).removeprefix("Value error, ")
    if message.startswith("Invalid content type"):  # bentoml.validators.ContentType: "... X, expected Y"
        given, _, expected = message.removeprefix("Invalid content type ").partition(", expected ")
        return f"{where} must be a file of content type {expected} (a JPEG, PNG or WebP photo); it is {given}"
    return f"{where}: {message[:1].lower()}{message[1:]}"


def plain_words(exc: ValidationError, model: type[BaseModel]) -> str:
    """Why pydantic refused a request to ``model``, in a person's words: each problem with its field's name."""
    return "; ".join(_problem(error, model) for error in exc.errors(include_url=False))
