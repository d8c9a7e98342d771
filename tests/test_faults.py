"""Faults the service must survive: a training job killed midway, and corrupt models in the store.

The killed job and the servers work on copies of the session's tiny trio (conftest.py's `tiny`; the job
subprocess follows BENTOML_HOME from the environment), which this process reads and edits with
tests/store_tools.py (the copy's store stood in for the session's while it does).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import uuid
from pathlib import Path

import bentoml
import httpx
import pytest
import sqlalchemy as sa
from conftest import TINY_SETTINGS, Server
from store_tools import store_tool

from rakuten_classifier import registry
from rakuten_classifier.registry import CorruptModel, save_to_store, verify_model

# ------------------------------------------------------------------ helpers


def _sample_product(sample_dir: Path) -> tuple[dict, bytes]:
    from rakuten_classifier.pipeline.training_data import load_training_data

    row = load_training_data(sample_dir).split("test").dropna(subset=["image_path"]).iloc[0]
    return {"designation": row.designation, "description": row.description}, Path(row.image_path).read_bytes()


# ------------------------------------------------------------------ corrupt model (unit, session store)


def _probe_model(name: str, files: dict[str, bytes], labels: dict | None = None) -> str:
    def write(directory: Path) -> None:
        for relative, content in files.items():
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_bytes(content)

    return save_to_store(name, write, labels or {}, {})


@pytest.fixture
def probes():
    """Throwaway versions under names nothing else reads; deleted afterwards."""
    created: list[str] = []
    yield created
    for tag in created:
        with contextlib.suppress(bentoml.exceptions.NotFound):
            bentoml.models.delete(tag)


def test_verify_model_refuses_truncated_deleted_and_unmanifested_files(probes):
    files = {"weights.bin": os.urandom(4096), "nested/config.json": b'{"a": 1}'}
    good = _probe_model("faults-probe", files)
    probes.append(good)
    verify_model(good)  # as saved: verifies

    truncated = _probe_model("faults-probe", files)
    probes.append(truncated)
    with open(registry.model_path(truncated) / "weights.bin", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(CorruptModel, match=re.escape("content changed: weights.bin")):
        verify_model(truncated)

    deleted = _probe_model("faults-probe", files)
    probes.append(deleted)
    (registry.model_path(deleted) / "nested" / "config.json").unlink()
    with pytest.raises(CorruptModel, match=re.escape("missing nested/config.json")):
        verify_model(deleted)

    unmanifested = _probe_model("faults-probe", files)
    probes.append(unmanifested)
    (registry.model_path(unmanifested) / registry.MANIFEST_FILE).unlink()
    with pytest.raises(CorruptModel, match=re.escape("no manifest.json")):
        verify_model(unmanifested)

    with pytest.raises(CorruptModel, match="not in the model store"):
        verify_model("faults-probe:doesnotexist")


def test_verify_model_refuses_an_image_version_without_its_onnx_graph(probes, monkeypatch):
    # Under an image name of its own, so the session's image versions are untouched.
    monkeypatch.setattr(registry, "IMAGE_MODEL", f"faults-image-{uuid.uuid4().hex[:8]}")
    weights = {"image_model.pt": os.urandom(2048), "image_config.json": b"{}"}
    with_graph = _probe_model(registry.IMAGE_MODEL, {**weights, registry.ONNX_FILE: os.urandom(1024)})
    without_graph = _probe_model(registry.IMAGE_MODEL, weights)
    probes.extend([with_graph, without_graph])
    verify_model(with_graph)
    with pytest.raises(CorruptModel, match=re.escape("no image_model.onnx, the graph serving runs")) as refused:
        verify_model(without_graph)
    assert str(refused.value).endswith("retrain it")
    # Refused the same way as a damaged version: the newest trio that verifies is served instead.
    monkeypatch.setattr(registry, "FUSION_MODEL", f"faults-fusion-{uuid.uuid4().hex[:8]}")
    text = _probe_model("faults-text", {"pipeline.joblib": os.urandom(512)})
    probes.append(text)
    for image in (with_graph, without_graph):
        config = json.dumps({"text_model": text, "image_model": image, "text_weight": 0.5}).encode()
        labels = {"stage": registry.STAGE_PRODUCTION}
        probes.append(_probe_model(registry.FUSION_MODEL, {registry.FUSION_FILE: config}, labels))
        time.sleep(0.01)  # creation times order the production versions
    served, refused_trios = registry.last_good_production()
    assert served is not None
    assert served.image == with_graph
    assert list(refused_trios) == [probes[-1]]
    assert "no image_model.onnx" in refused_trios[probes[-1]]


def test_last_good_production_skips_a_corrupt_newest_trio(probes, monkeypatch):
    # Under a fusion name of its own, so the session's production pointer is untouched.
    monkeypatch.setattr(registry, "FUSION_MODEL", "faults-fusion")

    def trio(text_bytes: bytes) -> tuple[str, str, str]:
        text = _probe_model("faults-text", {"pipeline.joblib": text_bytes})
        image = _probe_model("faults-image", {"image_model.pt": os.urandom(2048)})
        config = json.dumps({"text_model": text, "image_model": image, "text_weight": 0.5}).encode()
        fusion = _probe_model("faults-fusion", {registry.FUSION_FILE: config}, {"stage": registry.STAGE_PRODUCTION})
        probes.extend([fusion, text, image])
        return fusion, text, image

    old = trio(os.urandom(4096))
    time.sleep(0.01)  # creation times order the production versions
    new = trio(os.urandom(4096))
    assert registry.last_good_production() == (registry.Trio(*new), {})

    with open(registry.model_path(new[1]) / "pipeline.joblib", "r+b") as handle:
        handle.truncate(10)
    models, refused = registry.last_good_production()
    assert models == registry.Trio(*old)
    assert list(refused) == [new[0]]
    assert "content changed: pipeline.joblib" in refused[new[0]]

    (registry.model_path(old[2]) / "image_model.pt").unlink()  # both bad: nothing to serve
    models, refused = registry.last_good_production()
    assert models is None
    assert set(refused) == {old[0], new[0]}
    assert "missing image_model.pt" in refused[old[0]]


# ------------------------------------------------------------------ killed training job


def _count_products(url: str) -> int:
    from rakuten_classifier.data.schema import products

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(products)).scalar()
        assert count is not None
        return count
    finally:
        engine.dispose()


def _job_status(manager, job_id: str) -> dict:
    """`JobManager.status`, which must know the job."""
    status = manager.status(job_id)
    assert status is not None, f"unknown job {job_id}"
    return status


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.training
def test_killed_training_job_leaves_store_and_database_unchanged(tiny, tmp_path, monkeypatch):
    from rakuten_classifier.config import get_settings
    from rakuten_classifier.data.store import load_into_db
    from rakuten_classifier.data.synthetic import write_synthetic_catalogue
    from rakuten_classifier.serving.jobs import JobManager

    # The job subprocess inherits this environment: a copied store, this test's data root, the tiny settings.
    home, _ = tiny.copy(tmp_path / "tiny")
    monkeypatch.setenv("BENTOML_HOME", str(home))
    for name, value in TINY_SETTINGS.items():
        monkeypatch.setenv(name, value)
    settings = get_settings()
    assert settings.data_root == tmp_path / "data"
    write_synthetic_catalogue(tmp_path / "synth", rows=300, seed=11, image_size=64)
    load_into_db(
        tmp_path / "synth", settings.database_url, settings.seed, settings.val_fraction, settings.test_fraction
    )
    rows_before = _count_products(settings.database_url)
    before = store_tool(home, "state")
    assert before["production"] is not None
    assert rows_before == 300

    manager = JobManager(settings.jobs_dir)
    job_id = manager.start()  # reads the products table of the isolated data root
    child = manager._children[job_id]
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = _job_status(manager, job_id)
            if status["stage"] == "image model" or status["state"] != "running":
                break
            time.sleep(0.2)
        assert status["state"] == "running", status
        assert status["stage"] == "image model", status
        time.sleep(1.0)  # midway through the image model
        _kill_group(child.pid)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        _kill_group(child.pid)

    # The lock still names the dead process until someone asks.
    assert (settings.jobs_dir / "active.lock").read_text().split()[0] == job_id
    assert manager.active_job() is None
    assert not (settings.jobs_dir / "active.lock").exists()
    status = _job_status(manager, job_id)
    assert status["state"] == "failed"
    assert status["error"] == "job process died"
    assert status["finished_at"]
    # A fresh manager (say, a restarted server) agrees.
    assert _job_status(JobManager(settings.jobs_dir), job_id)["state"] == "failed"

    after = store_tool(home, "state")
    assert after["production"] == before["production"]
    assert after["production_fusion"] == before["production_fusion"]
    assert after["fusion"] == before["fusion"]
    assert after["image"] == before["image"]  # killed before the image model was saved
    assert len(after["text"]) == len(before["text"]) + 1  # the text candidate it had finished (never promoted)
    assert _count_products(settings.database_url) == rows_before

    # A new job can start (and is stopped at once: only the start matters here).
    second = manager.start()
    try:
        assert second != job_id
        assert manager.active_job() == second
        assert _job_status(manager, second)["state"] == "running"
    finally:
        _kill_group(manager._children[second].pid)
        manager._children[second].wait(30)
    assert manager.active_job() is None
    assert _job_status(manager, second)["error"] == "job process died"


# ------------------------------------------------------------------ corrupt model over HTTP


def _wait_for(predicate, timeout: float, step: float = 0.5):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return value


@pytest.mark.slow
def test_served_models_survive_a_corrupt_production_version(tiny, sample_dir, serve, request, tmp_path):
    home, data_root = tiny.copy(tmp_path)
    form, image = _sample_product(sample_dir)

    def predict(server: Server) -> httpx.Response:
        return httpx.post(
            f"{server.url}/predict_multimodal", data=form, files={"image": ("p.jpg", image, "image/jpeg")}, timeout=60
        )

    corrupt: dict = {}

    def refused_by(server: Server) -> dict | None:
        health = httpx.get(f"{server.url}/health").json()
        return health if corrupt["fusion"] in health["refused_models"] else None

    server = serve(request, data_root=data_root, home=home, name="serve-1", RAKUTEN_RELOAD_SECONDS="1")
    good = httpx.get(f"{server.url}/health").json()["models"]
    assert good == tiny.production
    corrupt.update(store_tool(home, "corrupt-production"))
    assert corrupt["previous"] == good
    assert corrupt["truncated"]  # the text model's largest file (its pipeline, or the encoder's graph)
    assert store_tool(home, "state")["production"]["fusion"] == corrupt["fusion"]  # the pointer moved

    health = _wait_for(lambda: refused_by(server), 30)
    assert health, "the corrupt production version was not refused"
    reason = health["refused_models"][corrupt["fusion"]]
    assert reason.startswith("CorruptModel")
    assert health["status"] == "degraded"
    assert health["problems"] == [f"production {corrupt['fusion']} refused: {reason}"]
    assert corrupt["text"] in reason
    assert corrupt["truncated"] in reason  # the file that no longer matches its manifest is named
    time.sleep(3)  # a few more reload periods: still the old models, still answering
    health = httpx.get(f"{server.url}/health").json()
    assert health["models"] == good
    answer = predict(server)
    assert answer.status_code == 200, answer.text
    assert answer.json()["models"] == good
    assert server.process.poll() is None
    server.stop()

    # Started while the newest production version is corrupt: serves the last good one.
    server = serve(request, data_root=data_root, home=home, name="serve-2", RAKUTEN_RELOAD_SECONDS="1")
    assert httpx.get(f"{server.url}/health").json()["models"] == good
    health = _wait_for(lambda: refused_by(server), 30)
    assert health
    assert corrupt["truncated"] in health["refused_models"][corrupt["fusion"]]
    assert health["status"] == "degraded"
    assert health["models"] == good
    answer = predict(server)
    assert answer.status_code == 200, answer.text
    assert answer.json()["models"] == good, answer.text
    server.stop()
    assert "refused" in server.log_path.read_text()
