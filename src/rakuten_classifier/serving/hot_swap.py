"""Hot swap without mixed answers: the entry follows the production pointer, the model workers load what it names.

The entry service is the only one that follows the pointer. Every request it sends names the text
or image version its fusion version combines, so an answer is always computed by one trio. Before
the entry adopts a new trio it verifies the three versions and has both model services load the
incoming versions (`prepare`); the model workers keep the outgoing version loaded beside it, so
requests already in flight with the old trio finish with it and no request fails during the swap.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import typing as t
from collections import OrderedDict

from ..registry import (
    Trio,
    last_good_production,
    production_trio,
    read_fusion_config,
    verify_model,
    verify_production,
)

log = logging.getLogger(__name__)


def production_at_start() -> tuple[Trio, dict[str, str]]:
    """The trio a process starts with (the newest whose files verify) and why newer ones were refused."""
    trio, refused = last_good_production()
    if trio is None:
        why = "; ".join(f"{tag}: {reason}" for tag, reason in refused.items())
        raise RuntimeError(
            "no usable production models in the BentoML store: run `rakuten train all` "
            f"(or `make demo`) first{' (refused: ' + why + ')' if why else ''}"
        )
    return trio, refused


class ModelVersions:
    """The versions of one kind a model worker holds: the one it started with and each one the entry asked for.

    A version not loaded yet is verified against its manifest and loaded on first use (normally
    through the entry's `prepare`, before any request names it). The ``keep`` most recently used
    versions stay loaded: after a swap, the outgoing one serves the requests still in flight.
    Loads run on the worker's inference thread (the caller's); the lock only guards the table.
    """

    def __init__(self, tag: str, model: t.Any, loader: t.Callable[[str], t.Any], keep: int = 2):
        self.loader, self.keep = loader, keep
        self._models: OrderedDict[str, t.Any] = OrderedDict({tag: model})
        self._lock = threading.Lock()

    def get(self, tag: str) -> t.Any:
        """The model of version ``tag``, loaded (and verified) if needed; raises when it cannot load."""
        with self._lock:
            if tag in self._models:
                self._models.move_to_end(tag)
                return self._models[tag]
        verify_model(tag)
        model = self.loader(tag)
        with self._lock:
            self._models[tag] = model
            while len(self._models) > self.keep:
                evicted, _ = self._models.popitem(last=False)
                log.info("unloaded %s (now %s)", evicted, tag)
        log.info("loaded %s", tag)
        return model

    @property
    def loaded(self) -> list[str]:
        """Loaded versions, least recently used first."""
        with self._lock:
            return list(self._models)

    @property
    def runtimes(self) -> dict[str, str]:
        """The class computing each loaded version (an image model: OnnxImageClassifier or torch's ImageClassifier)."""
        with self._lock:
            return {tag: type(model).__name__ for tag, model in self._models.items()}


Prepare = t.Callable[[Trio], t.Awaitable[None]]


class PrepareFailed(RuntimeError):
    """A model service answered that it cannot load a version: the trio is refused, not retried."""


class ProductionFollower:
    """The entry's production trio (fusion tag, fusion config), replaced when a newly promoted trio is ready.

    A new trio is adopted only when its three versions verify against their manifests and both
    model services have loaded the incoming text and image versions; a trio that fails either is
    refused (logged, shown by /health) and the last good one keeps serving. A model service that
    cannot be reached is not a refusal: the poll tries again and /health says the swap is pending.
    The (tag, config) pair is replaced in one assignment: a request reads it once.
    """

    def __init__(
        self,
        start: Trio,
        config: dict,
        refused: dict[str, str],
        reload_seconds: float,
        on_swap: t.Callable[[str, str], None] | None = None,
    ):
        # The trio served now, as its fusion tag and config (the config names the text and image tags).
        self.current: tuple[str, dict] = (start.fusion, config)
        self.refused = dict(refused)  # fusion tag -> why its trio was refused (never retried)
        self.pending: dict[str, str] = {}  # fusion tag -> why it is not served yet (retried every period)
        self.latest = next(iter(refused), start.fusion)  # the production pointer as last read (newest first)
        self.reload_seconds, self.on_swap = reload_seconds, on_swap

    async def check(self, prepare: Prepare) -> None:
        """Follow the production pointer once."""
        try:
            trio = await asyncio.to_thread(production_trio)
        except Exception as exc:  # an unreadable production pointer: keep serving
            log.error("cannot read the production pointer (%s); keeping %s", exc, self.current[0])
            return
        if trio is None:
            return
        self.latest = trio.fusion
        if trio.fusion == self.current[0] or trio.fusion in self.refused:
            return
        try:
            await asyncio.to_thread(verify_production, trio)
            config = await asyncio.to_thread(read_fusion_config, trio.fusion)
            await prepare(trio)
        except PrepareFailed as exc:
            self._refuse(trio.fusion, str(exc))
            return
        except (OSError, ConnectionError, TimeoutError) as exc:  # a model service down or slow: retry later
            self.pending = {trio.fusion: f"{type(exc).__name__}: {exc}"}
            log.warning("production %s not adopted yet (%s); retrying", trio.fusion, self.pending[trio.fusion])
            return
        except Exception as exc:  # a corrupt or incomplete trio: refuse it, keep the last good one
            self._refuse(trio.fusion, f"{type(exc).__name__}: {exc}")
            return
        previous = self.current[0]
        self.current, self.pending = (trio.fusion, config), {}
        log.info("now serving %s (was %s)", trio.fusion, previous)
        if self.on_swap:
            self.on_swap(previous, trio.fusion)

    def _refuse(self, fusion_tag: str, reason: str) -> None:
        self.refused[fusion_tag], self.pending = reason, {}
        log.error("refused production %s (%s); still serving %s", fusion_tag, reason, self.current[0])

    async def follow(self, prepare: Prepare) -> None:
        """Check every reload period, for the life of the service."""
        while True:
            await asyncio.sleep(self.reload_seconds)
            try:
                await self.check(prepare)
            except Exception:  # following must never stop: log and go on
                log.exception("production check failed")

    def problems(self) -> list[str]:
        """Why the service does not serve the newest production trio (empty when it does)."""
        if self.latest in self.refused:
            return [f"production {self.latest} refused: {self.refused[self.latest]}"]
        return [f"production {tag} not adopted yet: {why}" for tag, why in self.pending.items()]


async def prepare_trio(trio: Trio, text_service: t.Any, image_service: t.Any, timeout_s: float) -> None:
    """Have both model services (BentoML dependencies) load the trio's versions before the entry names them.

    PrepareFailed when a service answers that it cannot load its version; ConnectionError or
    TimeoutError when a service cannot be asked (the follower retries those). The clients are
    looked up here, at call time: BentoML builds a dependency's endpoints only once the service runs.
    """
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(
                text_service.to_async.prepare(tag=trio.text), image_service.to_async.prepare(tag=trio.image)
            ),
            timeout_s,
        )
    except TimeoutError:
        raise
    except Exception as exc:  # transport errors of BentoML's client: the service is down or restarting
        raise ConnectionError(f"model service unreachable ({type(exc).__name__}: {exc})") from exc
    errors = [answer["error"] for answer in answers if "error" in answer]
    if errors:
        raise PrepareFailed("; ".join(errors))
