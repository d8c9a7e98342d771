"""Pure units of the hot swap (the entry names versions, workers hold them) and of /health's verdict."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import numpy as np
import pytest

from rakuten_classifier.registry import CorruptModel, Trio
from rakuten_classifier.serving import hot_swap
from rakuten_classifier.serving.clients import probe_services
from rakuten_classifier.serving.hot_swap import ModelVersions, PrepareFailed, ProductionFollower, prepare_trio
from rakuten_classifier.serving.model_workers import text_answers
from rakuten_classifier.serving.observer import Observer


class ConstantModel:
    def __init__(self, value: float):
        self.value = value

    def predict_proba(self, texts):
        return np.full((len(texts), 2), self.value)


@pytest.fixture
def no_manifests(monkeypatch):
    checked: list[str] = []
    monkeypatch.setattr(hot_swap, "verify_model", checked.append)
    return checked


def test_model_versions_load_on_first_use_verified_and_keep_the_two_latest(no_manifests):
    loads: list[str] = []

    def loader(tag: str) -> ConstantModel:
        loads.append(tag)
        return ConstantModel(float(tag[-1]))

    versions = ModelVersions("m:1", ConstantModel(1.0), loader)
    assert versions.get("m:1").value == 1.0
    assert loads == []
    assert versions.get("m:2").value == 2.0
    assert versions.get("m:2").value == 2.0
    assert loads == ["m:2"]
    assert no_manifests == ["m:2"]  # verified against its manifest before loading
    assert versions.loaded == ["m:1", "m:2"]  # the outgoing version stays beside the incoming one
    versions.get("m:3")
    assert versions.loaded == ["m:2", "m:3"]


def test_model_versions_refuse_a_version_whose_manifest_fails(monkeypatch):
    def corrupt(tag: str) -> None:
        raise CorruptModel(f"{tag}: content changed: pipeline.joblib")

    monkeypatch.setattr(hot_swap, "verify_model", corrupt)
    versions = ModelVersions("m:1", ConstantModel(1.0), lambda tag: pytest.fail("must not load"))
    with pytest.raises(CorruptModel):
        versions.get("m:2")
    assert versions.loaded == ["m:1"]


def test_a_batch_naming_two_versions_is_computed_by_each(no_manifests):
    versions = ModelVersions("m:1", ConstantModel(1.0), lambda tag: ConstantModel(2.0))
    items = [{"model": "m:1", "text": "a"}, {"model": "m:2", "text": "b"}, {"model": "m:1", "text": "c"}]
    answers = text_answers(versions, items)
    assert [a["model"] for a in answers] == ["m:1", "m:2", "m:1"]
    assert [float(a["proba"][0]) for a in answers] == [1.0, 2.0, 1.0]


def test_a_version_that_cannot_load_answers_unavailable_for_its_items_only(monkeypatch):
    def corrupt(tag: str) -> None:
        raise CorruptModel(f"{tag}: missing pipeline.joblib")

    monkeypatch.setattr(hot_swap, "verify_model", corrupt)
    versions = ModelVersions("m:1", ConstantModel(1.0), lambda tag: ConstantModel(2.0))
    answers = text_answers(versions, [{"model": "m:1", "text": "a"}, {"model": "m:9", "text": "b"}])
    assert "proba" in answers[0]
    assert "missing pipeline.joblib" in answers[1]["unavailable"]


OLD = Trio(fusion="f:1", text="t:1", image="i:1")
NEW = Trio(fusion="f:2", text="t:2", image="i:2")


@pytest.fixture
def store(monkeypatch):
    """The production pointer and the checks the follower makes, as plain values."""
    state = SimpleNamespace(pointer=NEW, corrupt=set())

    def verify(trio):
        if trio.fusion in state.corrupt:
            raise CorruptModel(f"{trio.text}: content changed: pipeline.joblib")

    monkeypatch.setattr(hot_swap, "production_trio", lambda: state.pointer)
    monkeypatch.setattr(hot_swap, "verify_production", verify)
    monkeypatch.setattr(hot_swap, "read_fusion_config", lambda tag: {"text_model": "t:2", "image_model": "i:2"})
    return state


def _follower(**kwargs) -> ProductionFollower:
    return ProductionFollower(OLD, {"text_model": "t:1", "image_model": "i:1"}, {}, 1.0, **kwargs)


def test_the_entry_adopts_a_trio_only_after_both_services_loaded_it(store):
    prepared: list[Trio] = []
    swaps: list[tuple[str, str]] = []
    follower = _follower(on_swap=lambda old, new: swaps.append((old, new)))

    async def prepare(trio):
        assert follower.current[0] == "f:1"  # still the old trio while the services load
        prepared.append(trio)

    asyncio.run(follower.check(prepare))
    assert prepared == [NEW]
    assert follower.current == ("f:2", {"text_model": "t:2", "image_model": "i:2"})
    assert swaps == [("f:1", "f:2")]
    assert follower.problems() == []


def test_a_trio_a_service_cannot_load_is_refused_and_reported(store):
    follower = _follower()

    async def prepare(trio):
        raise PrepareFailed("i:2: ModelLoadError: bad weights")

    asyncio.run(follower.check(prepare))
    assert follower.current[0] == "f:1"
    assert "bad weights" in follower.refused["f:2"]
    assert follower.problems() == ["production f:2 refused: i:2: ModelLoadError: bad weights"]
    asyncio.run(follower.check(lambda trio: pytest.fail("a refused trio is not retried")))


def test_a_corrupt_trio_is_refused_before_any_service_loads_it(store):
    store.corrupt.add("f:2")
    follower = _follower()
    asyncio.run(follower.check(lambda trio: pytest.fail("a corrupt trio must not be prepared")))
    assert follower.refused["f:2"].startswith("CorruptModel")
    assert follower.current[0] == "f:1"


def test_an_unreachable_service_delays_the_swap_and_it_is_retried(store):
    follower = _follower()

    async def down(trio):
        raise ConnectionError("model service unreachable")

    asyncio.run(follower.check(down))
    assert follower.current[0] == "f:1"
    assert follower.refused == {}
    assert follower.problems() == ["production f:2 not adopted yet: ConnectionError: model service unreachable"]

    async def up(trio):
        return None

    asyncio.run(follower.check(up))
    assert follower.current[0] == "f:2"
    assert follower.problems() == []


def test_a_newest_trio_refused_at_start_makes_health_degraded_until_a_good_one_serves(store):
    follower = ProductionFollower(OLD, {}, {"f:2": "CorruptModel: t:2"}, 1.0)
    assert follower.problems() == ["production f:2 refused: CorruptModel: t:2"]


def _client(prepare) -> SimpleNamespace:
    return SimpleNamespace(to_async=SimpleNamespace(prepare=prepare))


def test_prepare_trio_turns_a_service_error_into_a_refusal_and_transport_errors_into_retries():
    async def loads(tag):
        return {"loaded": [tag]}

    async def cannot(tag):
        return {"error": f"{tag}: ModelLoadError: truncated"}

    async def unreachable(tag):
        raise RuntimeError("Cannot connect to host")

    asyncio.run(prepare_trio(NEW, _client(loads), _client(loads), 5))
    with pytest.raises(PrepareFailed, match="truncated"):
        asyncio.run(prepare_trio(NEW, _client(loads), _client(cannot), 5))
    with pytest.raises(ConnectionError, match="Cannot connect"):
        asyncio.run(prepare_trio(NEW, _client(unreachable), _client(loads), 5))
    not_started = SimpleNamespace(to_async=SimpleNamespace())  # a client whose endpoints do not exist yet
    with pytest.raises(ConnectionError, match="AttributeError"):
        asyncio.run(prepare_trio(NEW, not_started, _client(loads), 5))


def test_health_probe_answers_within_its_timeout_when_a_service_hangs():
    async def fine():
        return {"loaded": ["t:1"]}

    async def hangs():
        await asyncio.sleep(60)
        return {}

    async def broken():
        raise RuntimeError("connection refused")

    started = time.perf_counter()
    states = asyncio.run(probe_services({"text": fine, "image": hangs, "other": broken}, 0.3))
    assert time.perf_counter() - started < 2
    assert states["text"] == {"loaded": ["t:1"]}
    assert str(states["image"]).startswith("no answer within 0.3 s")
    assert "connection refused" in states["other"]


def _observer(dropped: int = 0, backlog: int = 0, refused: dict | None = None) -> Observer:
    observer = Observer.__new__(Observer)  # no log thread nor database: only the verdict is under test
    observer.settings = SimpleNamespace(log_backlog_alert=100)  # type: ignore[assignment]
    observer.prediction_log = SimpleNamespace(dropped=dropped, backlog=backlog, written=0)  # type: ignore[assignment]
    observer.fusion = ProductionFollower(OLD, {}, refused or {}, 1.0)
    return observer


def test_health_is_ok_only_when_nothing_is_wrong():
    assert _observer().problems({"text": {"loaded": ["t:1"]}, "image": {"loaded": ["i:1"]}}) == []


@pytest.mark.parametrize(
    ("observer", "services", "expected"),
    [
        (_observer(), {"text": "no answer within 1 s (RAKUTEN_HEALTH_TIMEOUT_S)"}, "text model service: no answer"),
        (_observer(refused={"f:2": "CorruptModel: t:2"}), {}, "production f:2 refused"),
        (_observer(dropped=3), {}, "prediction log dropped 3 rows"),
        (_observer(backlog=101), {}, "prediction log backlog 101 rows > 100"),
    ],
)
def test_health_says_degraded_with_the_reason(observer, services, expected):
    problems = observer.problems(services)
    assert len(problems) == 1
    assert problems[0].startswith(expected)


@pytest.mark.parametrize(
    ("trained_on", "warned"), [("synthetic", True), ("mixed", True), ("real", False), (None, False)]
)
def test_health_warns_when_the_served_models_learned_from_the_synthetic_catalogue(trained_on, warned):
    config = {"text_model": "t:1", "image_model": "i:1", "text_weight": 0.5, "method": "geometric"}
    if trained_on is not None:  # None: a version trained before the origin was recorded
        config["trained_on"] = trained_on
    observer = _observer()
    observer.fusion = ProductionFollower(OLD, config, {}, 1.0)
    observer.last_drift = None
    health = observer.health(None, {"text": {"loaded": ["t:1"]}, "image": {"loaded": ["i:1"]}})
    assert health["status"] == "ok"  # what the answers are worth, not a fault
    assert health["trained_on"] == (trained_on or "unknown")
    if warned:
        assert "synthetic" in health["warning"]
        assert "data/raw/" in health["warning"]
    else:
        assert health["warning"] is None


def test_a_dropped_model_service_connection_is_retried_and_a_persistent_one_is_a_503():
    import aiohttp

    from rakuten_classifier.serving.clients import with_retry
    from rakuten_classifier.serving.errors import ClientError

    calls: list[str] = []

    async def drops_once(payload):
        calls.append(payload)
        if len(calls) == 1:
            raise aiohttp.ServerDisconnectedError()
        return ["answer"]

    assert asyncio.run(with_retry(drops_once, "x")) == ["answer"]
    assert calls == ["x", "x"]

    async def always_down(payload):
        raise aiohttp.ServerDisconnectedError()

    with pytest.raises(ClientError, match="a model service is unreachable") as raised:
        asyncio.run(with_retry(always_down, "x", attempts=3))
    assert raised.value.status == 503
