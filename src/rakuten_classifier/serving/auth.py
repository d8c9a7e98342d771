"""Bearer-token check of the service's ASGI guard (serving/http_guard.py)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    """Why a request is not authorised: HTTP status and a message for the client."""

    status: int
    message: str


def check_bearer(authorization: str | None, expected: str, what: str) -> Refusal | None:
    """None when the Authorization header carries ``expected``; compared in constant time."""
    header = authorization or ""
    if not header.lower().startswith("bearer "):
        return Refusal(401, f"{what} needs a bearer token (Authorization: Bearer <token>)")
    if not hmac.compare_digest(header[7:].strip().encode(), expected.encode()):
        return Refusal(403, "invalid token")
    return None
