"""The service classes in this process (dependencies become local objects), over the session's tiny trio.

The same service over HTTP with `bentoml serve`: tests/test_service.py.
"""

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, model_store

from rakuten_classifier.pipeline.training_data import load_training_data
from rakuten_classifier.registry import production_trio


@pytest.fixture(scope="module")
def service_module(tiny) -> Iterator:
    """service.py imported over the tiny trio's store (it resolves the production models at import), which
    stands in for the session's while this module's tests run."""
    with model_store(tiny.home):
        spec = importlib.util.spec_from_file_location("rakuten_service", REPO_ROOT / "service.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module


@pytest.fixture(scope="module")
def in_process(service_module):
    """The entry service instantiated in this process (dependencies become local objects)."""
    return service_module.RakutenClassifier()


class RecordingModel:
    """Wraps a text model and records exactly what text reaches it."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def predict_proba(self, texts):
        self.seen.extend(texts)
        return self.model.predict_proba(texts)


def _entry_text_worker(service):
    return service.text_service  # in-process: the TextModelService instance itself


def test_serving_text_is_byte_identical_to_training_text(in_process, sample_dir):
    data = load_training_data(sample_dir)
    rows = data.split("test")
    rows = rows[rows["description"].str.contains("<|&", regex=True)].head(25)  # HTML-laden rows
    assert len(rows) >= 10
    versions = _entry_text_worker(in_process).models
    recorder = RecordingModel(versions.get(in_process.fusion.current[1]["text_model"]))
    versions.get = lambda tag: recorder  # every version the entry names answers through the recorder
    try:
        for row in rows.itertuples():
            asyncio.run(in_process.predict_multimodal(designation=row.designation, description=row.description))
    finally:
        del versions.get
    assert [t.encode("utf-8") for t in recorder.seen] == [t.encode("utf-8") for t in rows["text"]]


def test_in_process_prediction_and_weight_override(in_process, sample_dir, tmp_path):
    data = load_training_data(sample_dir)
    row = data.split("test").dropna(subset=["image_path"]).iloc[0]
    image = tmp_path / "p.jpg"
    image.write_bytes(Path(row.image_path).read_bytes())
    answer = asyncio.run(in_process.predict_multimodal(designation=row.designation, image=image, top_k=3))
    assert set(answer) >= {"prdtypecode", "category", "probability", "top_k", "text", "image", "text_weight", "models"}
    assert len(answer["top_k"]) == 3
    production = production_trio()
    assert production is not None
    assert answer["models"]["fusion"] == production.fusion
    text_only = asyncio.run(in_process.predict_multimodal(designation=row.designation, image=image, text_weight=1.0))
    assert text_only["top_k"][0]["prdtypecode"] == text_only["text"][0]["prdtypecode"]
    image_only = asyncio.run(in_process.predict_multimodal(designation=row.designation, image=image, text_weight=0.0))
    assert image_only["top_k"][0]["prdtypecode"] == image_only["image"][0]["prdtypecode"]
    empty = asyncio.run(in_process.predict_multimodal(designation="  "))
    assert empty.status_code == 400
