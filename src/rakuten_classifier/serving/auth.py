"""Bearer-token checks shared by the service's endpoints and its ASGI guard."""

from __future__ import annotations

import hmac
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    """Why a request is not authorised: HTTP status and a message for the client."""

    status: int
    message: str


def check_bearer(authorization: str | None, expected: str | None, what: str, required: bool) -> Refusal | None:
    """None when the Authorization header carries ``expected``; compared in constant time.

    ``required``: whether an unset ``expected`` disables the endpoint (admin) or opens it (predictions).
    """
    if not expected:
        if required:
            return Refusal(403, f"{what} disabled: set RAKUTEN_TRAIN_TOKEN on the server")
        return None
    header = authorization or ""
    if not header.lower().startswith("bearer "):
        return Refusal(401, f"{what} needs a bearer token (Authorization: Bearer <token>)")
    if not hmac.compare_digest(header[7:].strip().encode(), expected.encode()):
        return Refusal(403, "invalid token")
    return None
