"""`make container`'s script builds the OCI image with podman; the container answers as `bentoml serve` does."""

import json
import subprocess
import time
import uuid

import httpx
import pytest
from conftest import REPO_ROOT, VENV_BIN, free_port, sample_requests, server_env

from rakuten_classifier.registry import production_trio

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.system]

IMAGE = "localhost/rakuten-classifier:test"
# The image installs requirements-serving.lock only (issue 25: at most 1.5 GB; 7.06 GB with torch and CUDA).
MAX_IMAGE_BYTES = 1.5e9
TRAINING_ONLY = ("torch", "torchvision", "triton", "nvidia", "mlflow", "transformers", "onnx", "matplotlib")


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built_image(trained, session_data_root):
    """deploy/container/build.sh against the session's store: its JSON summary."""
    done = subprocess.run(
        ["deploy/container/build.sh", IMAGE, str(VENV_BIN)],
        cwd=REPO_ROOT,
        env=server_env(session_data_root),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def container(built_image):
    """`podman run -p PORT:3000 IMAGE`, ready; the URL and the seconds from run to ready."""
    name, port = f"rakuten-test-{uuid.uuid4().hex[:8]}", free_port()
    started = time.monotonic()
    run = podman("run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:3000", IMAGE)
    assert run.returncode == 0, run.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = started + 300
        while time.monotonic() < deadline:
            try:  # short timeouts: BentoML holds readiness probes sent during start-up
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"container not ready in 300 s:\n{podman('logs', name).stdout[-3000:]}")
        yield url, time.monotonic() - started
    finally:
        podman("rm", "-f", name)


def test_container_answers_predict_multimodal_as_bentoml_serve_does(container, served, sample_dir):
    url, _ = container
    production = production_trio()
    assert production is not None
    health = httpx.get(f"{url}/health", timeout=30).json()
    assert health["status"] == "ok", health
    assert health["models"] == vars(production)  # the models it was built with
    for form, image in sample_requests(sample_dir, 4):
        contained, repository = (
            httpx.post(f"{base}/predict_multimodal", data=form, files=image, timeout=120).json()
            for base in (url, served.url)
        )
        assert contained["models"] == repository["models"]
        assert [c["prdtypecode"] for c in contained["top_k"]] == [c["prdtypecode"] for c in repository["top_k"]]
        for ours, theirs in zip(contained["top_k"], repository["top_k"], strict=True):
            assert ours["probability"] == pytest.approx(theirs["probability"], abs=1e-6)


def test_image_holds_no_build_tools_caches_or_tests(built_image):
    probe = podman(
        "run",
        "--rm",
        "--user",
        "root",
        "--entrypoint",
        "/bin/sh",
        IMAGE,
        "-c",
        "for t in gcc cc make git pip; do command -v $t && exit 1; done;"
        " ls -d /root/.cache/uv/archive-v0 /root/.cache/uv/wheels-v* /root/.cache/pip"
        " /home/bentoml/bento/src/tests /home/bentoml/bento/src/benchmarks 2>/dev/null"
        " && exit 2; exit 0",
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    # The project's version tag, which the Kubernetes manifests name, is the same image.
    ids = {podman("image", "inspect", tag, "--format", "{{.Id}}").stdout for tag in (IMAGE, built_image["also_tagged"])}
    assert len(ids) == 1


def test_image_holds_the_serving_set_only(built_image):
    probe = podman(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        IMAGE,
        "-c",
        "import importlib.util, json;"
        f" print(json.dumps([m for m in {TRAINING_ONLY!r} if importlib.util.find_spec(m)]))",
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == []  # the serving set is enough: test_container_answers_... shows it
    assert built_image["image_bytes"] <= MAX_IMAGE_BYTES, built_image
