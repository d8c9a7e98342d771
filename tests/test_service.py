"""The service over HTTP with `bentoml serve` of the session's trio (the service classes in this process:
tests/test_service_in_process.py)."""

import asyncio
import base64
import io

import httpx
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from rakuten_classifier.pipeline.evaluate import evaluate_production
from rakuten_classifier.pipeline.training_data import load_training_data

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- over HTTP


def _jpeg_bytes(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def test_http_health_and_prediction_shape(served, sample_dir):
    health = httpx.get(f"{served.url}/health").json()
    assert health["status"] == "ok", health["problems"]
    assert health["problems"] == []
    assert health["models"]["text"] in health["model_services"]["text"]["loaded"]
    assert health["models"]["image"] in health["model_services"]["image"]["loaded"]
    # The served image model runs on ONNX Runtime (the default RAKUTEN_IMAGE_RUNTIME; training exported its graph).
    assert health["model_services"]["image"]["runtimes"][health["models"]["image"]] == "OnnxImageClassifier"
    assert health["models"]["fusion"].startswith("rakuten-fusion:")
    assert health["metrics"]["fused"]["weighted_f1"] > 0.5
    row = load_training_data(sample_dir).split("test").dropna(subset=["image_path"]).iloc[0]
    answer = httpx.post(
        f"{served.url}/predict_multimodal",
        data={"designation": row.designation, "description": row.description, "top_k": "3"},
        files={"image": ("p.jpg", _jpeg_bytes(row.image_path), "image/jpeg")},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["top_k"]) == 3
    assert len(body["text"]) == 3
    assert len(body["image"]) == 3
    assert body["models"]["text"].startswith("rakuten-text:")
    assert body["models"]["image"].startswith("rakuten-image:")
    assert 0 <= body["text_weight"] <= 1
    assert httpx.get(f"{served.url}/metrics").status_code == 200


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "files", "status", "message"),
    [
        ({"designation": "x"}, {"image": ("a.jpg", b"not an image at all", "image/jpeg")}, 400, "not a readable"),
        ({"designation": "x"}, {"image": ("a.txt", b"hello", "text/plain")}, 400, "content type"),
        ({"designation": "x"}, {"image": ("big.png", _png(7000, 7000), "image/png")}, 413, "pixels"),
        ({"designation": "  "}, None, 400, "empty product"),
        ({"designation": "x", "text_weight": "1.5"}, None, 400, "text_weight"),
        ({"designation": "x", "top_k": "0"}, None, 400, "top_k"),
        ({"designation": "x", "top_k": "28"}, None, 400, "top_k"),
        ({"designation": "x", "colour": "red"}, None, 400, "colour"),
    ],
)
def test_http_client_mistakes_get_4xx_with_a_message(served, data, files, status, message):
    answer = httpx.post(f"{served.url}/predict_multimodal", data=data, files=files, timeout=60)
    assert answer.status_code == status
    assert message in answer.text


def test_http_batch_and_single_modality_endpoints(served, sample_dir):
    row = load_training_data(sample_dir).split("test").dropna(subset=["image_path"]).iloc[0]
    text = httpx.post(f"{served.url}/predict_text", json={"designation": row.designation, "top_k": 2}, timeout=60)
    assert text.status_code == 200
    assert text.json()["image"] is None
    assert len(text.json()["top_k"]) == 2
    image = httpx.post(
        f"{served.url}/predict_image",
        data={"top_k": "2"},
        files={"image": ("p.jpg", _jpeg_bytes(row.image_path), "image/jpeg")},
        timeout=60,
    )
    assert image.status_code == 200
    assert image.json()["text"] is None
    encoded = base64.b64encode(_jpeg_bytes(row.image_path)).decode()
    batch = httpx.post(
        f"{served.url}/predict_batch",
        timeout=60,
        json={
            "items": [
                {"designation": row.designation},
                {"image_base64": encoded},
                {"designation": row.designation, "image_base64": encoded},
            ],
            "top_k": 1,
        },
    )
    assert batch.status_code == 200
    predictions = batch.json()["predictions"]
    assert len(predictions) == 3
    assert predictions[0]["prdtypecode"] == text.json()["prdtypecode"]
    assert predictions[1]["prdtypecode"] == image.json()["prdtypecode"]
    bad = httpx.post(f"{served.url}/predict_batch", json={"items": [{"image_base64": "!!"}]}, timeout=60)
    assert bad.status_code == 400
    assert "items[0]" in bad.text


def test_http_training_trigger_requires_the_token(served):
    assert httpx.post(f"{served.url}/train", json={}).status_code == 401
    wrong = httpx.post(f"{served.url}/train", json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert "invalid token" in wrong.text
    escape = httpx.post(
        f"{served.url}/train", json={"data_dir": "../../etc"}, headers={"Authorization": "Bearer test-token"}
    )
    assert escape.status_code == 400
    assert "under the data root" in escape.text
    for control in ("raw\x00", "\x1b[31mraw", "r\naw"):  # a NUL byte was a 500 once (fuzzing with the token)
        refused = httpx.post(
            f"{served.url}/train", json={"data_dir": control}, headers={"Authorization": "Bearer test-token"}
        )
        assert refused.status_code == 400, refused.text
        assert "without control characters" in refused.json()["error"]
    assert httpx.get(f"{served.url}/jobs/nope", headers={"Authorization": "Bearer test-token"}).status_code == 404
    assert httpx.get(f"{served.url}/jobs/nope").status_code == 401


async def _score_over_http(url: str, rows, mode: str) -> list[int]:
    limits = asyncio.Semaphore(8)

    async def one(client, row):
        async with limits:
            if mode == "text":
                answer = await client.post(
                    "/predict_text", json={"designation": row.designation, "description": row.description}
                )
            else:
                files = None
                if isinstance(row.image_path, str):
                    files = {"image": ("p.jpg", _jpeg_bytes(row.image_path), "image/jpeg")}
                if mode == "image":
                    answer = await client.post("/predict_image", files=files)
                else:
                    answer = await client.post(
                        "/predict_multimodal",
                        files=files,
                        data={"designation": row.designation, "description": row.description},
                    )
            answer.raise_for_status()
            return answer.json()["prdtypecode"]

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return await asyncio.gather(*(one(client, row) for row in rows.itertuples()))


@pytest.fixture(scope="module")
def held_out(served, sample_dir, session_data_root):
    """The held-out rows, `rakuten evaluate`'s scores of them, and the served /predict_multimodal codes (once)."""
    from rakuten_classifier.config import Settings

    test = load_training_data(sample_dir).split("test")
    expected = evaluate_production(sample_dir, split="test", settings=Settings(data_root=session_data_root))
    return test, expected, asyncio.run(_score_over_http(served.url, test, "multimodal"))


def test_http_scores_equal_rakuten_evaluate(served, held_out):
    # The service's image model runs on ONNX Runtime, `rakuten evaluate` on torch: equal scores.
    test, expected, multimodal = held_out
    with_image = test.dropna(subset=["image_path"])
    for mode, rows in (("multimodal", test), ("text", test), ("image", with_image)):
        predicted = multimodal if mode == "multimodal" else asyncio.run(_score_over_http(served.url, rows, mode))
        weighted = round(
            float(f1_score(rows["prdtypecode"].astype(int), predicted, average="weighted", zero_division=0)), 4
        )
        key = {"multimodal": "fused", "text": "text", "image": "image"}[mode]
        assert weighted == expected[key]["weighted_f1"], mode


def test_rakuten_predict_file_equals_served_answers_and_evaluate(
    held_out, sample_dir, session_data_root, tmp_path, monkeypatch, capsys
):
    """`rakuten predict` writes the challenge's submission format, answers what /predict_multimodal answers,
    and scores what `rakuten evaluate` reports for the same rows (the held-out rows, as a folder of their own)."""
    from rakuten_classifier.cli import main
    from rakuten_classifier.config import get_settings

    test, expected, served_codes = held_out
    folder = tmp_path / "held-out"
    folder.mkdir()
    (folder / "images").symlink_to(sample_dir / "images", target_is_directory=True)
    x_file = pd.read_csv(sample_dir / "X_train_update.csv", index_col=0).loc[test["row_index"]]
    x_file.to_csv(folder / "X_train_update.csv")
    labels = pd.read_csv(sample_dir / "Y_train_CVw08PX.csv", index_col=0)["prdtypecode"].loc[x_file.index]
    labels.to_frame().to_csv(folder / "Y_train_CVw08PX.csv")
    monkeypatch.setenv("RAKUTEN_DATA_ROOT", str(session_data_root))
    get_settings.cache_clear()
    out = tmp_path / "submission.csv"
    assert main(["predict", "--data-dir", str(folder), "--source", "train", "--out", str(out), "--json"]) == 0
    assert f'"rows": {len(test)}' in capsys.readouterr().out
    assert out.read_text().splitlines()[0] == ",prdtypecode"  # the X file's index as first, unnamed column
    submission = pd.read_csv(out, index_col=0)
    assert submission.index.tolist() == x_file.index.tolist()  # one row per product, in the X file's order
    assert submission.loc[test["row_index"], "prdtypecode"].tolist() == served_codes
    weighted = round(float(f1_score(labels, submission.loc[labels.index, "prdtypecode"], average="weighted")), 4)
    assert weighted == expected["fused"]["weighted_f1"]  # `rakuten evaluate` on the same (held-out) rows


@pytest.mark.parametrize(
    ("content_type", "body", "status", "message"),
    [
        ("multipart/form-data", b'{"designation": "x"}', 400, "without a boundary"),
        ("multipart/form-data; boundary=ace3", b"--ace3\r\n-16409--ace3--\r\n", 400, "malformed multipart"),
    ],
)
def test_http_malformed_multipart_is_a_400_not_a_500(served, content_type, body, status, message):
    # With the admin token: /train checks it before reading the body (a 401 without it).
    headers = {"content-type": content_type, "Authorization": "Bearer test-token"}
    for route in ("/predict_multimodal", "/predict_image", "/predict_text", "/train"):
        answer = httpx.post(f"{served.url}{route}", content=body, headers=headers)
        assert answer.status_code == status, route
        assert message in answer.json()["error"], route
