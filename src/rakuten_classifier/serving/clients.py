"""How the entry service talks to its model services: one long-lived session each, retried on a dropped connection."""

from __future__ import annotations

import asyncio
import logging
import typing as t

from .errors import ClientError

log = logging.getLogger(__name__)

# BentoML's client to a dependency closes and replaces its HTTP session every 100 requests (and
# every 300 s) while other requests may still be in flight on it: measured under load, those got
# "Server disconnected" and, now and then, a request never completed (a 504 after the timeout).
# One long-lived session per dependency avoids the race; there is one local worker to talk to.
KEEP_CLIENT_SESSION = {"max_requests": 2_000_000_000, "max_age": 10.0**9}


def model_service_timeout(request_timeout_s: float) -> float:
    """The model services' own request timeout: only a backstop behind the entry's RAKUTEN_REQUEST_TIMEOUT_S.

    The entry answers 504 itself; a tiny request timeout must never make a model service shed the
    batches it is computing.
    """
    return max(request_timeout_s, 60) + 30


async def with_retry(call: t.Callable[[t.Any], t.Awaitable[t.Any]], payload: t.Any, attempts: int = 3) -> t.Any:
    """Call a model service, retrying a dropped connection.

    A pooled keep-alive connection that the model worker has just closed (idle timeout, or a
    restarted worker) fails with ServerDisconnectedError; predictions are pure, so retrying is safe.
    """
    import aiohttp

    for attempt in range(1, attempts + 1):
        try:
            return await call(payload)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionError) as exc:
            if attempt == attempts:
                # A model service run apart (RAKUTEN_*_SERVICE_URL) may be down: the client is told, not handed a 500.
                log.error("model service unreachable after %d attempts: %s", attempts, exc)
                raise ClientError(
                    f"a model service is unreachable ({type(exc).__name__}); try again later", 503
                ) from exc
            log.warning("model service connection dropped (%s); retry %d", exc, attempt)
            await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable: the loop returns or raises")  # for type checkers


async def probe_services(
    calls: dict[str, t.Callable[[], t.Awaitable[dict]]], timeout_s: float
) -> dict[str, dict | str]:
    """Each model service's status, or why it gave none within ``timeout_s`` (all asked at once)."""

    async def probe(call: t.Callable[[], t.Awaitable[dict]]) -> dict | str:
        try:
            return await asyncio.wait_for(call(), timeout_s)
        except TimeoutError:
            return f"no answer within {timeout_s:g} s (RAKUTEN_HEALTH_TIMEOUT_S)"
        except Exception as exc:  # unreachable, restarting, or answering an error: degraded, never a 500
            return f"unreachable ({type(exc).__name__}: {exc})"

    states = await asyncio.gather(*(probe(call) for call in calls.values()))
    return dict(zip(calls, states, strict=True))
