"""Hot swap: each service follows the production pointer and swaps to a newly promoted trio without a restart."""

from __future__ import annotations

import logging
import threading
import time
import typing as t

from ..registry import ProductionModels, last_good_production, production_models, verify_production

log = logging.getLogger(__name__)


def production_at_start() -> ProductionModels:
    """The models a process starts with: the newest production trio whose files verify."""
    models, refused = last_good_production()
    if models is None:
        why = "; ".join(f"{tag}: {reason}" for tag, reason in refused.items())
        raise RuntimeError(
            "no usable production models in the BentoML store: run `rakuten train all` "
            f"(or `make demo`) first{' (refused: ' + why + ')' if why else ''}"
        )
    return models


class HotSwap:
    """The serving model of one kind, replaced by a background poll when production changes.

    A new production trio is taken only when all three versions verify against their manifests
    and this kind's model loads; otherwise the trio is refused (logged, shown by /health) and the
    last good model keeps serving. The (tag, model) pair is swapped in one assignment: a request
    in flight keeps the pair it read.
    """

    def __init__(
        self,
        kind: str,
        fusion_tag: str,
        tag: str,
        model: t.Any,
        loader: t.Callable[[str], t.Any],
        reload_seconds: float,
        on_swap: t.Callable[[str, str], None] | None = None,
    ):
        self.kind, self.loader, self.on_swap = kind, loader, on_swap
        self.fusion_tag = fusion_tag  # the production trio this model belongs to
        self.current = (tag, model)
        self.rejected: dict[str, str] = {}  # fusion tag -> why its trio was refused (not retried)
        self.reload_seconds = reload_seconds
        threading.Thread(target=self._poll, name=f"reload-{kind}", daemon=True).start()

    def check(self) -> None:
        """Follow the production pointer once (the poll thread calls this every reload period)."""
        try:
            trio = production_models()
        except Exception as exc:  # an unreadable production pointer: keep serving
            log.error("cannot read the production pointer (%s); keeping %s", exc, self.current[0])
            return
        if trio is None or trio.fusion == self.fusion_tag or trio.fusion in self.rejected:
            return
        tag = getattr(trio, self.kind)
        try:
            verify_production(trio)
            model = self.current[1] if tag == self.current[0] else self.loader(tag)
        except Exception as exc:  # a corrupt or incomplete model: refuse it, keep the last good one
            self.rejected[trio.fusion] = f"{type(exc).__name__}: {exc}"
            log.error(
                "refused production %s (%s); still serving %s", trio.fusion, self.rejected[trio.fusion], self.current[0]
            )
            return
        previous = self.current[0]
        self.fusion_tag, self.current = trio.fusion, (tag, model)
        if tag != previous:
            log.info("now serving %s (was %s)", tag, previous)
            if self.on_swap:
                self.on_swap(previous, tag)

    def _poll(self) -> None:
        while True:
            time.sleep(self.reload_seconds)
            self.check()


def hot_swap_on(
    executor: t.Any,
    kind: str,
    fusion_tag: str,
    model_ref: t.Any,
    load_path: t.Callable[[str], t.Any],
    load_tag: t.Callable[[str], t.Any],
    reload_seconds: float,
) -> HotSwap:
    """A model service's HotSwap whose loads (the first and every swap) run on the worker's inference thread."""
    model = executor.submit(load_path, model_ref.path).result()
    return HotSwap(
        kind, fusion_tag, str(model_ref.tag), model, lambda tag: executor.submit(load_tag, tag).result(), reload_seconds
    )
