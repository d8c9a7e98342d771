"""Scaling apart: the image model service runs as its own `bentoml serve`, and the entry reaches it
through `RAKUTEN_IMAGE_SERVICE_URL` (BentoML's dependency URL) instead of starting one itself."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from rakuten_classifier.pipeline.training_data import load_training_data

pytestmark = pytest.mark.slow


def test_entry_uses_an_image_service_run_on_its_own_and_answers_as_the_usual_layout(
    trained, served, sample_dir, session_data_root, serve, request
):
    image = serve(request, "service:ImageModelService", data_root=session_data_root, name="image")
    entry = serve(request, data_root=session_data_root, name="entry", RAKUTEN_IMAGE_SERVICE_URL=image.url)
    assert set(image.workers()) == {"ImageModelService"}
    assert set(entry.workers()) == {"RakutenClassifier", "TextModelService"}  # no image worker of its own
    health = httpx.get(f"{entry.url}/health", timeout=30).json()
    assert health["status"] == "ok", health["problems"]
    assert health["model_services"]["image"]["loaded"] == [trained["image"]["tag"]]

    rows = load_training_data(sample_dir).split("test").dropna(subset=["image_path"]).head(3)
    for row in rows.itertuples():
        form = {"designation": row.designation, "description": row.description}
        photo = {"image": ("p.jpg", Path(row.image_path).read_bytes(), "image/jpeg")}
        apart = httpx.post(f"{entry.url}/predict_multimodal", data=form, files=photo, timeout=60)
        usual = httpx.post(f"{served.url}/predict_multimodal", data=form, files=photo, timeout=60)
        assert apart.status_code == usual.status_code == 200, (apart.text, usual.text)
        assert apart.json()["models"] == usual.json()["models"]
        for key in ("top_k", "text", "image"):
            assert [c["prdtypecode"] for c in apart.json()[key]] == [c["prdtypecode"] for c in usual.json()[key]]
            assert [c["probability"] for c in apart.json()[key]] == pytest.approx(
                [c["probability"] for c in usual.json()[key]], abs=1e-6
            )

    # The image service gone: /health says so, and a photo gets a 503 with a message, not a hang.
    image.stop()
    health = httpx.get(f"{entry.url}/health", timeout=30).json()
    assert health["status"] == "degraded"
    assert any("image model service" in problem for problem in health["problems"]), health["problems"]
    row = rows.iloc[0]
    gone = httpx.post(
        f"{entry.url}/predict_multimodal",
        data={"designation": row.designation},
        files={"image": ("p.jpg", Path(row.image_path).read_bytes(), "image/jpeg")},
        timeout=60,
    )
    assert gone.status_code == 503, gone.text
    assert gone.json()["error"]
    text_only = httpx.post(f"{entry.url}/predict_text", json={"designation": row.designation}, timeout=60)
    assert text_only.status_code == 200, text_only.text
