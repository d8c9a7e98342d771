"""Serving without torch: the service graph imports, loads and answers with torch unimportable.

A trio is trained on a few rows of the real sample (TF-IDF text, the image model exported to ONNX,
the fusion) in its own BentoML store; tests/programs/serve_without_torch.py then imports service.py
and answers with it while a finder refuses torch and torchvision, as in the serving install, and
once more with torch installed (it must not be imported either: the served processes never map it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.slow

PROGRAMS = REPO_ROOT / "tests" / "programs"
ROWS_PER_CATEGORY = 6


def few_rows(sample_dir: Path, out: Path) -> Path:
    """The first rows with a photo of every category, in the challenge layout (the photos linked, not copied)."""
    x = pd.read_csv(sample_dir / "X_train_update.csv", index_col=0)
    y = pd.read_csv(sample_dir / "Y_train_CVw08PX.csv", index_col=0)
    photos = sample_dir / "images" / "image_train"
    has_photo = [
        (photos / f"image_{image}_product_{product}.jpg").is_file()
        for image, product in zip(x["imageid"], x["productid"], strict=True)
    ]
    kept = y[has_photo].groupby("prdtypecode", group_keys=False).head(ROWS_PER_CATEGORY).index
    out.mkdir(parents=True)
    x.loc[kept].to_csv(out / "X_train_update.csv")
    y.loc[kept].to_csv(out / "Y_train_CVw08PX.csv")
    (out / "images").symlink_to(sample_dir / "images", target_is_directory=True)
    return out


@pytest.fixture(scope="module")
def lean_run(sample_dir, tmp_path_factory):
    """A trio trained on a few rows (with torch), then answered by the program with torch unimportable and
    with torch installed: both JSON documents, and the requests."""
    from rakuten_classifier.data.preprocessing import product_text

    work = tmp_path_factory.mktemp("lean")
    data = few_rows(sample_dir, work / "sample")
    env = dict(os.environ, BENTOML_HOME=str(work / "bento"), RAKUTEN_DATA_ROOT=str(work / "data"), RAKUTEN_CV_FOLDS="3")
    # MobileNetV2: the served path is the same for every backbone, and it extracts features fastest.
    train = [sys.executable, "-m", "rakuten_classifier.cli", "train", "all", "--data-dir", str(data), "--json"]
    train += ["--image-backbone", "mobilenet_v2"]
    done = subprocess.run(train, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    x = pd.read_csv(data / "X_train_update.csv", index_col=0).head(6)
    requests = [
        {
            "designation": row.designation,
            "description": row.description if isinstance(row.description, str) else "",
            "text": product_text(row.designation, row.description),
            "image": str(data / "images" / "image_train" / f"image_{row.imageid}_product_{row.productid}.jpg"),
        }
        for row in x.itertuples()
    ]
    (work / "requests.json").write_text(json.dumps(requests))
    program = [sys.executable, str(PROGRAMS / "serve_without_torch.py"), str(work / "requests.json")]
    runs = {}
    for name, first in (("without_torch", [str(PROGRAMS / "no_torch")]), ("torch_installed", [])):
        path = os.pathsep.join([*first, str(REPO_ROOT), env.get("PYTHONPATH", "")])
        (work / name).mkdir()
        done = subprocess.run(
            [*program, str(work / name)],
            env=dict(env, PYTHONPATH=path),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return runs, requests


def test_the_service_graph_imports_and_answers_without_torch(lean_run):
    runs, requests = lean_run
    served = runs["without_torch"]
    assert served["torch_modules"] == []
    assert served["image_runtime"] == "OnnxImageClassifier"
    assert served["text_kind"] == "tfidf"
    assert len(served["image_proba"]) == len(served["text_proba"]) == len(served["fused"]) == len(requests)


def test_answers_without_torch_are_those_of_the_torch_models(lean_run):
    """The same probabilities as the stored models give with torch installed (image on torch eager)."""
    from rakuten_classifier.data.preprocessing import load_image
    from rakuten_classifier.modeling.image.classifier import ImageClassifier
    from rakuten_classifier.modeling.text_loading import load_text_model
    from rakuten_classifier.registry import FUSION_FILE
    from rakuten_classifier.serving.answers import build_answer

    runs, requests = lean_run
    served = runs["without_torch"]
    folders = {kind: Path(folder) for kind, folder in served["folders"].items()}
    image = ImageClassifier.load(folders["image"], device="cpu").predict_proba(
        [load_image(r["image"]) for r in requests]
    )
    text = load_text_model(folders["text"]).predict_proba([r["text"] for r in requests])
    np.testing.assert_allclose(served["image_proba"], image, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(served["text_proba"], text, rtol=1e-9, atol=1e-12)
    fusion = json.loads((folders["fusion"] / FUSION_FILE).read_text())
    for answer, text_p, image_p in zip(served["fused"], text, image, strict=True):
        expected = build_answer(text_p, image_p, fusion, None, 5, answer["models"])
        assert [c["prdtypecode"] for c in answer["top_k"]] == [c["prdtypecode"] for c in expected["top_k"]]
        np.testing.assert_allclose(
            [c["probability"] for c in answer["top_k"]], [c["probability"] for c in expected["top_k"]], atol=1e-5
        )


def test_an_image_worker_holds_neither_the_text_models_nor_the_entrys_libraries(lean_run):
    """scikit-learn, scipy, pandas and SQLAlchemy are ~200 MiB per process: an image worker imports the
    graph, loads its model and answers without any of them (the 350 MB limit of issue 25)."""
    runs, _ = lean_run
    assert runs["torch_installed"]["image_worker_imports"] == []
    assert runs["without_torch"]["image_worker_imports"] == []


def test_serving_imports_no_torch_where_torch_is_installed(lean_run):
    """What the served processes' memory maps show: answering never loads torch, installed or not."""
    runs, _ = lean_run
    assert runs["torch_installed"]["torch_modules"] == []
    assert runs["torch_installed"]["image_runtime"] == "OnnxImageClassifier"
    np.testing.assert_array_equal(runs["torch_installed"]["image_proba"], runs["without_torch"]["image_proba"])
    # A version without a graph is refused with torch installed too: torch never stands in for the graph.
    assert (
        "no image_model.onnx (saved before the ONNX export): retrain it"
        in runs["torch_installed"]["legacy_image_refused"]
    )


def test_what_needs_torch_is_refused_with_a_message_that_says_what_to_do(lean_run):
    runs, _ = lean_run
    served = runs["without_torch"]
    assert "no image_model.onnx (saved before the ONNX export): retrain it" in served["legacy_image_refused"]
    assert "transformer text model runs on torch" in served["transformer_text_refused"]
    assert "serve a TF-IDF text model" in served["transformer_text_refused"]
    assert "RAKUTEN_IMAGE_RUNTIME=torch asks for torch" in served["torch_runtime_refused"]
    # POST /train in a serving-only install: a 409 that says what is missing, not a job dying on an import.
    assert served["train_refused"]["status"] == 409
    assert "training needs torch, torchvision" in served["train_refused"]["error"]
    assert runs["torch_installed"]["train_refused"] == {}
