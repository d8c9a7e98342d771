"""Serving without torch: the service graph imports, loads and answers with torch unimportable.

The session's tiny trio (conftest.py's `tiny`: trained on a few rows of the real sample; TF-IDF text,
the image model exported to ONNX, the fusion, in a BentoML store of its own): tests/programs/
serve_without_torch.py imports service.py and answers with it while a finder refuses torch and
torchvision, as in the serving install, and once more with torch installed (it must not be imported
either: the served processes never map it).
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


@pytest.fixture(scope="module")
def lean_run(tiny, tmp_path_factory):
    """The session's tiny trio (trained with torch) answered by the program with torch unimportable and
    with torch installed: both JSON documents, and the requests."""
    from rakuten_classifier.data.preprocessing import product_text

    work = tmp_path_factory.mktemp("lean")
    # The program only reads the store (it copies a version before changing it): the tiny trio's own.
    env = dict(os.environ, BENTOML_HOME=str(tiny.home), RAKUTEN_DATA_ROOT=str(work / "data"))
    x = pd.read_csv(tiny.rows / "X_train_update.csv", index_col=0).head(6)
    requests = [
        {
            "designation": row.designation,
            "description": row.description if isinstance(row.description, str) else "",
            "text": product_text(row.designation, row.description),
            "image": str(tiny.rows / "images" / "image_train" / f"image_{row.imageid}_product_{row.productid}.jpg"),
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
    assert runs["without_torch"]["folders"]["fusion"].startswith(str(tiny.home))  # the trio it was given
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
