"""`explain` and POST /corrections over HTTP, and the operator's loop in a real browser (headless Chromium).

The session's server with the /ui gallery (conftest's `served_extras`: its own data root, so the
corrections it stores are its own; the session's models; tests/test_ui.py's gallery test reads it too)
answers every claim: an explained answer is the plain answer plus why, its word weights add up to the
text model's score, its class map to the image model's logit, the Python API explains as the service
does; corrections need the admin token, check the photo as /predict* does and land in the store; the
page shows the words, the heat map, and stores a correction.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from conftest import EXTRAS_IMAGE_LIMIT, Server, json_error, sample_requests
from test_ui import ARTIFACTS, open_ui, wait_answer

from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.data.preprocessing import product_text
from rakuten_classifier.data.schema import corrections, get_engine, loads, products

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": "Bearer admin-token"}


@pytest.fixture(scope="module")
def explaining(served_extras) -> tuple[Server, str]:
    """The server, and the URL of its store."""
    return served_extras, f"sqlite:///{served_extras.data_root / 'rakuten.db'}"


def head_bias(tag: str) -> np.ndarray:
    """The linear head's bias of a stored image model (its torch weights, saved beside the graph)."""
    from rakuten_classifier.modeling.image.classifier import ImageClassifier
    from rakuten_classifier.registry import model_path

    return ImageClassifier.load(model_path(tag), device="cpu").head.bias.detach().numpy()


def _post(url: str, path: str, fields: dict, files: dict | None = None, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}{path}", data=fields, files=files, timeout=120, **kwargs)


def test_an_explained_answer_is_the_answer_plus_why_exactly_as_the_models_score_it(explaining, sample_dir, trained):
    from rakuten_classifier.data.preprocessing import load_image
    from rakuten_classifier.modeling.loading import served_image_model_for, text_model_for
    from rakuten_classifier.serving.predict import predict_multimodal

    server, _ = explaining
    for fields, files in sample_requests(sample_dir, 3):
        plain = _post(server.url, "/predict_multimodal", fields, files).json()
        answer = _post(server.url, "/predict_multimodal", {**fields, "explain": "true"}, files).json()
        why = answer.pop("explanation")
        assert "explanation" not in plain
        assert {k: v for k, v in answer.items() if k != "prediction_id"} == {
            k: v for k, v in plain.items() if k != "prediction_id"
        }
        chosen = CATEGORY_CODES.index(answer["prdtypecode"])
        assert (why["prdtypecode"], why["modalities"]["chosen"]["prdtypecode"]) == (answer["prdtypecode"],) * 2

        text = product_text(fields["designation"], fields["description"])
        score = text_model_for(answer["models"]["text"]).scores([text])[0, chosen]
        assert sum(w["weight"] for w in why["text"]["words"]) + why["text"]["intercept"] == pytest.approx(
            score, abs=1e-6
        )

        image = why["image"]
        image_model = served_image_model_for(answer["models"]["image"])
        found = image_model.class_maps([load_image(files["image"][1])])
        assert found is not None
        logits, maps = found
        assert np.asarray(image["grid"]).shape == maps.shape[2:]
        assert image["logit"] == pytest.approx(logits[0, chosen], abs=1e-5)
        assert image["map_mean"] == pytest.approx(maps[0, chosen].mean(), abs=1e-5)
        assert image["map_mean"] + image["bias"] == pytest.approx(image["logit"], abs=1e-9)
        # The map holds every pooled block's evidence: what is left of the logit is the head's bias alone.
        assert image["bias"] == pytest.approx(float(head_bias(answer["models"]["image"])[chosen]), abs=1e-4)

        local = predict_multimodal(
            fields["designation"], fields["description"], files["image"][1], top_k=5, explain=True
        )["explanation"]
        assert [w["word"] for w in local["text"]["words"]] == [w["word"] for w in why["text"]["words"]]
        np.testing.assert_allclose(
            [w["weight"] for w in local["text"]["words"]], [w["weight"] for w in why["text"]["words"]]
        )
        np.testing.assert_allclose(local["image"]["grid"], image["grid"], atol=1e-5)
        for row in ("chosen", "runner_up"):
            assert local["modalities"][row]["prdtypecode"] == why["modalities"][row]["prdtypecode"]
            for part in ("text", "image", "constant"):
                assert local["modalities"][row][part] == pytest.approx(why["modalities"][row][part], abs=1e-5)


def test_the_one_modality_endpoints_and_the_batch_explain_what_they_have(explaining, sample_dir):
    server, _ = explaining
    (fields, files), (other, _) = sample_requests(sample_dir, 2)
    text = httpx.post(
        f"{server.url}/predict_text",
        json={"designation": fields["designation"], "description": fields["description"], "explain": True},
        timeout=60,
    ).json()["explanation"]
    assert text["image"] is None
    assert text["text"]["words"]
    assert text["modalities"]["decided_by"] == "text"
    image = _post(server.url, "/predict_image", {"explain": "true"}, files).json()["explanation"]
    assert image["text"] is None
    assert image["image"]["grid"]
    assert image["modalities"]["decided_by"] == "image"
    batch = httpx.post(
        f"{server.url}/predict_batch",
        json={
            "items": [{"designation": fields["designation"]}, {"designation": other["designation"]}],
            "explain": True,
        },
        timeout=60,
    ).json()["predictions"]
    assert [p["explanation"]["prdtypecode"] for p in batch] == [p["prdtypecode"] for p in batch]
    assert all(p["explanation"]["text"]["words"] for p in batch)


def _stored(url: str, productid: int) -> dict:
    engine = get_engine(url)
    with engine.connect() as conn:
        query = (
            sa.select(products, loads.c.origin, corrections.c.prediction_id, corrections.c.corrected_by)
            .join(loads, loads.c.id == products.c.load_id)
            .join(corrections, corrections.c.productid == products.c.productid)
            .where(products.c.productid == productid)
        )
        row = conn.execute(query).mappings().one()
    engine.dispose()
    return dict(row)


def test_a_correction_needs_the_admin_token_checks_the_photo_and_becomes_a_row_once(explaining, sample_dir):
    server, store = explaining
    (fields, files), _ = sample_requests(sample_dir, 2)
    form = {"designation": fields["designation"], "description": fields["description"], "prdtypecode": "2583"}
    assert "bearer token" in json_error(_post(server.url, "/corrections", form, files), 401)["error"]
    assert json_error(_post(server.url, "/corrections", form, files, headers={"Authorization": "Bearer no"}), 403)

    first = _post(server.url, "/corrections", {**form, "prediction_id": "x" * 32}, files, headers=ADMIN)
    assert first.status_code == 201, first.text
    again = _post(server.url, "/corrections", {**form, "prediction_id": "x" * 32}, files, headers=ADMIN)
    assert again.status_code == 200
    assert again.json()["productid"] == first.json()["productid"]
    assert again.json()["created"] is False
    row = _stored(store, first.json()["productid"])
    assert (row["designation"], row["prdtypecode"], row["origin"]) == (fields["designation"], 2583, "correction")
    assert row["prediction_id"] == "x" * 32
    assert row["corrected_by"].startswith("admin token from 127.0.0.1")
    with open(row["image_path"], "rb") as photo:
        assert photo.read() == files["image"][1]

    conflict = _post(
        server.url, "/corrections", {**form, "prdtypecode": "10", "prediction_id": "x" * 32}, headers=ADMIN
    )
    assert "already corrected to 2583" in json_error(conflict, 409)["error"]
    big = files["image"][1] + b"\0" * EXTRAS_IMAGE_LIMIT
    assert (
        "limit"
        in json_error(
            _post(server.url, "/corrections", form, {"image": ("p.jpg", big, "image/jpeg")}, headers=ADMIN), 413
        )["error"]
    )
    text_part = {"image": ("notes.txt", b"just notes", "text/plain")}
    assert "image/*" in json_error(_post(server.url, "/corrections", form, text_part, headers=ADMIN), 400)["error"]
    assert json_error(_post(server.url, "/corrections", {**form, "prdtypecode": "7"}, headers=ADMIN), 400)
    stray = json_error(_post(server.url, "/corrections", {**form, "path": "/etc/passwd"}, headers=ADMIN), 400)
    assert stray["error"].startswith("invalid correction form: unknown field 'path'; the fields are designation, ")
    missing = json_error(_post(server.url, "/corrections", {"designation": "x"}, headers=ADMIN), 400)
    assert missing == {"error": "invalid correction form: prdtypecode is missing"}


def test_the_page_explains_a_real_product_and_stores_its_correction(page, explaining):
    server, store = explaining
    url = server.url
    examples = httpx.get(f"{url}/ui/examples", timeout=30).json()
    assert examples
    open_ui(page, url)
    page.click(f"#gallery .example[data-n='{examples[0]['n']}']")
    wait_answer(page)
    assert page.is_checked("#explain")
    assert page.is_visible("#why")
    words = page.eval_on_selector_all("#why-words .w", "els => els.map(e => [e.textContent, e.style.background])")
    assert [word for word, _ in words] == product_text(examples[0]["designation"], examples[0]["description"]).split()
    assert any(shade.startswith("rgba(31, 138, 91") for _, shade in words)  # a word shaded towards the answer
    page.wait_for_selector("#heat[data-rows]", state="attached")
    assert page.is_visible("#heat")
    assert page.locator("#why-modalities tr[data-part]").count() == 3
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-explain.png"), full_page=True)

    shown = int(page.get_attribute("#fused-result", "data-prdtypecode"))
    right = next(code for code in CATEGORY_CODES if code != shown)
    page.click("#correction summary")
    page.select_option("#correct-code", str(right))
    page.fill("#admin-token", "admin-token")
    page.click("#correct-submit")
    page.wait_for_selector("#correction[data-state=saved]", state="attached")
    productid = int(page.get_attribute("#correction", "data-productid"))
    row = _stored(store, productid)
    assert (row["designation"], row["prdtypecode"]) == (examples[0]["designation"], right)
    assert row["image_path"] is not None
    page.screenshot(path=str(ARTIFACTS / "ui-correction.png"), full_page=True)
