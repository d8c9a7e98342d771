"""POST /train runs the pipeline in a separate process; promoted models replace the served ones
without a restart, and no request fails during the swap."""

import shutil
import threading
import time

import httpx
import pytest
from conftest import REPO_ROOT, Server, server_env

from rakuten_classifier.data.synthetic import write_synthetic_catalogue

pytestmark = pytest.mark.slow
TOKEN = {"Authorization": "Bearer swap-token"}


def test_training_job_promotes_and_service_swaps_without_failures(trained, tmp_path):
    from bentoml._internal.configuration.containers import BentoMLContainer

    # A copy of the session's store: this test's promotion must not change what other tests serve.
    home = tmp_path / "bentoml"
    shutil.copytree(BentoMLContainer.bentoml_home.get() + "/models", home / "models")
    data_root = tmp_path / "data"
    # New labelled data under the data root: small synthetic catalogue the old models know nothing of.
    write_synthetic_catalogue(data_root / "incoming", rows=500, seed=5, image_size=96)
    env = server_env(data_root, BENTOML_HOME=str(home), RAKUTEN_TRAIN_TOKEN="swap-token", RAKUTEN_RELOAD_SECONDS="1")
    server = Server("service:RakutenClassifier", env, REPO_ROOT, tmp_path / "serve.log")
    try:
        server.wait_ready()
        before = httpx.get(f"{server.url}/health").json()["models"]
        started = httpx.post(f"{server.url}/train", json={"data_dir": "incoming"}, headers=TOKEN, timeout=30)
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
        second = httpx.post(f"{server.url}/train", json={}, headers=TOKEN, timeout=30)
        assert second.status_code == 409
        assert "still running" in second.text

        outcomes: list[tuple[int, str]] = []
        stop = threading.Event()

        def keep_asking() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                while not stop.is_set():
                    answer = client.post("/predict_text", json={"designation": "piscine hors sol tubulaire"})
                    outcomes.append((answer.status_code, answer.json().get("models", {}).get("text", "")))
                    time.sleep(0.2)

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
        assert {code for code, _ in outcomes} == {200}, "a request failed during the swap"
        served_tags = [tag for _, tag in outcomes]
        assert served_tags[0] == before["text"]
        assert served_tags[-1] == status["models"]["text"]
        assert server.process.poll() is None  # no restart
    finally:
        server.stop()
