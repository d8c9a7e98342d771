"""`bentoml build` packs the service with its models; the built Bento answers the same API."""

import json
import subprocess

import httpx
import pytest
from conftest import VENV_BIN, sample_requests, server_env

from rakuten_classifier.registry import production_trio

pytestmark = pytest.mark.slow


def test_bento_packs_the_service_and_the_production_models(bento):
    tag, folder = bento
    assert tag.startswith("rakuten-classifier:")
    manifest = (folder / "bento.yaml").read_text()
    assert "service: service:RakutenClassifier" in manifest or "service:RakutenClassifier" in manifest
    production = production_trio()
    assert production is not None
    for model_tag in (production.text, production.image, production.fusion):
        assert model_tag in manifest
    assert (folder / "src" / "src" / "rakuten_classifier" / "modeling" / "fusion.py").is_file()


def test_generated_dockerfile_names_the_service_and_lints_clean_of_errors(bento):
    _, folder = bento
    dockerfile = folder / "env" / "docker" / "Dockerfile"
    text = dockerfile.read_text()
    assert "RAKUTEN_SERVICE" in text
    assert "service:RakutenClassifier" in text
    assert "ENTRYPOINT" in text
    lint = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", "--failure-threshold", "error", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert " error:" not in lint.stdout


def test_exported_bento_serves_from_an_empty_home_with_only_its_models(
    bento, served, sample_dir, session_data_root, serve, request, tmp_path
):
    """The built Bento, exported, imported into an empty BENTOML_HOME and served from there, answers as the
    repository's server does: the archive alone carries the production models (and the service)."""
    tag, _ = bento
    archive = tmp_path / "x.bento"
    bentoml = str(VENV_BIN / "bentoml")
    subprocess.run([bentoml, "export", tag, str(archive)], env=server_env(session_data_root), check=True, timeout=300)
    home = tmp_path / "empty-home"
    home.mkdir()
    env = server_env(tmp_path / "data", BENTOML_HOME=str(home))
    subprocess.run([bentoml, "import", str(archive)], env=env, check=True, timeout=300, capture_output=True)
    production = production_trio()
    assert production is not None
    listing = subprocess.run(
        [bentoml, "models", "list", "-o", "json"], env=env, check=True, capture_output=True, text=True
    ).stdout
    # `bentoml import` moves the archive's models into the home's store: the three production versions, nothing else.
    assert {m["tag"] for m in json.loads(listing)} == {production.text, production.image, production.fusion}
    server = serve(request, tag, data_root=tmp_path / "data", home=home, cwd=tmp_path, name="imported")
    assert httpx.get(f"{server.url}/health", timeout=30).json()["models"] == vars(production)
    for form, image in sample_requests(sample_dir, 3):
        imported, repository = (
            httpx.post(f"{url}/predict_multimodal", data=form, files=image, timeout=120).json()
            for url in (server.url, served.url)
        )
        assert imported["models"] == repository["models"] == vars(production)
        assert imported["top_k"] == repository["top_k"]
