"""POST /train runs the pipeline in a separate process; promoted models replace the served ones
without a restart, and no request fails during the swap.

Each server serves a copy of the session's tiny trio (conftest.py's `tiny`), so its promotion changes
nothing another test serves; the training job trains with the tiny trio's settings (3 folds)."""

import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import TINY_SETTINGS, Server
from store_tools import store_tool

from rakuten_classifier.data.synthetic import write_synthetic_catalogue

pytestmark = [pytest.mark.slow, pytest.mark.training]
TOKEN = {"Authorization": "Bearer swap-token"}


def test_training_job_promotes_and_service_swaps_without_failures(tiny, serve, request, tmp_path):
    home, data_root = tiny.copy(tmp_path)
    # New labelled data under the data root: small synthetic catalogue the old models know nothing of.
    write_synthetic_catalogue(data_root / "incoming", rows=300, seed=5, image_size=64)
    server = serve(
        request,
        data_root=data_root,
        home=home,
        RAKUTEN_ADMIN_TOKEN="swap-token",
        RAKUTEN_RELOAD_SECONDS="1",
        **TINY_SETTINGS,
    )
    before = httpx.get(f"{server.url}/health").json()["models"]
    started = httpx.post(f"{server.url}/train", json={"data_dir": "incoming"}, headers=TOKEN, timeout=30)
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    second = httpx.post(f"{server.url}/train", json={}, headers=TOKEN, timeout=30)
    assert second.status_code == 409
    assert "still running" in second.text

    outcomes: list[tuple[int, str]] = []
    stop = threading.Event()

    crashed: list[str] = []

    def keep_asking() -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                while not stop.is_set():
                    answer = client.post("/predict_text", json={"designation": "piscine hors sol tubulaire"})
                    outcomes.append((answer.status_code, answer.json().get("models", {}).get("text", "")))
                    time.sleep(0.2)
        except Exception as exc:  # reported below, never a silently dead thread
            crashed.append(f"{type(exc).__name__}: {exc}")

    asker = threading.Thread(target=keep_asking)
    asker.start()
    status = {}
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.url}/jobs/{job_id}", headers=TOKEN, timeout=30).json()
        assert "log_tail" in status
        assert 0.0 <= status["progress"] <= 1.0
        if status["state"] != "running":
            break
        time.sleep(3)
    assert status["state"] == "succeeded", status
    assert status["promoted"] is True
    assert status["metrics"]["fused_test"]["weighted_f1"] > 0.5
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and outcomes[-1][1] != status["models"]["text"]:
        time.sleep(1)
    time.sleep(2)
    stop.set()
    asker.join()
    after = httpx.get(f"{server.url}/health").json()["models"]
    assert after["fusion"] == status["models"]["fusion"] != before["fusion"]
    assert crashed == [], crashed
    assert {code for code, _ in outcomes} == {200}, "a request failed during the swap"
    served_tags = [tag for _, tag in outcomes]
    assert served_tags[0] == before["text"]
    assert served_tags[-1] == status["models"]["text"]
    assert server.process.poll() is None  # no restart


def health_of(server: Server) -> dict:
    return httpx.get(f"{server.url}/health", timeout=30).json()


def test_answers_across_a_promotion_each_come_from_one_trio(tiny, sample_dir, serve, request, tmp_path):
    """8 clients send photos while a new trio is promoted: every answer succeeds and its text and
    image versions are the ones its fusion version names, before, during and after the swap."""
    from rakuten_classifier.pipeline.training_data import load_training_data

    home, data_root = tiny.copy(tmp_path)
    rows = load_training_data(sample_dir).split("test").dropna(subset=["image_path"]).head(16)
    products = [
        ({"designation": row.designation, "description": row.description}, Path(row.image_path).read_bytes())
        for row in rows.itertuples()
    ]
    server = serve(request, data_root=data_root, home=home, RAKUTEN_RELOAD_SECONDS="1")
    answers: list[dict] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=120) as http:
                i = n
                while not stop.is_set():
                    form, image = products[i % len(products)]
                    reply = http.post("/predict_multimodal", data=form, files={"image": ("p.jpg", image, "image/jpeg")})
                    if reply.status_code != 200:
                        failures.append(f"{reply.status_code}: {reply.text[:300]}")
                    else:
                        answers.append(reply.json()["models"])
                    i += 8
        except Exception as exc:  # reported by the assertions below, never a silently dead thread
            failures.append(f"client {n}: {type(exc).__name__}: {exc}")

    try:
        old = health_of(server)["models"]
        clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 60
        while len(answers) < 16 and not failures and time.monotonic() < deadline:
            time.sleep(0.5)
        new = store_tool(home, "new-trio")
        assert new["previous"] == old
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and health_of(server)["models"]["fusion"] != new["fusion"]:
            time.sleep(0.5)
        seen_new = len(answers)
        deadline = time.monotonic() + 60
        while len(answers) < seen_new + 16 and not failures and time.monotonic() < deadline:
            time.sleep(0.5)
        stop.set()
        for thread in clients:
            thread.join(180)
        health = health_of(server)
        # A model service that stops answering: /health says so within about its 1 s timeout.
        stopped = server.workers().get("ImageModelService", [])
        assert stopped
        for worker in stopped:
            worker.suspend()
        try:
            started = time.monotonic()
            hung = health_of(server)
            hung_seconds = time.monotonic() - started
        finally:
            for worker in stopped:
                worker.resume()
        recovered = health_of(server)
    finally:
        stop.set()
    assert hung["status"] == "degraded"
    assert hung["problems"] == ["image model service: no answer within 1 s (RAKUTEN_HEALTH_TIMEOUT_S)"]
    assert hung_seconds < 3
    assert recovered["status"] == "ok", recovered["problems"]
    assert failures == [], failures[:5]
    trios = {old["fusion"]: old, new["fusion"]: {k: new[k] for k in ("fusion", "text", "image")}}
    assert health["models"] == trios[new["fusion"]]
    assert health["status"] == "ok", health["problems"]
    assert {answer["fusion"] for answer in answers} == set(trios), "both trios must have answered"
    mixed = [answer for answer in answers if answer != trios[answer["fusion"]]]
    assert mixed == [], f"{len(mixed)} of {len(answers)} answers mixed two trios: {mixed[:3]}"
