"""The promotion gate, in this process, on a copy of the session's tiny trio (conftest.py's `tiny`): a fusion
is promoted when nothing is in production or when it is not worse, and a worse one is refused."""

import uuid

from conftest import TINY_SETTINGS, model_store

from rakuten_classifier.config import Settings
from rakuten_classifier.modeling.text import TfidfParams
from rakuten_classifier.modeling.text_encoder import NO_ENCODER, EncoderParams
from rakuten_classifier.pipeline.steps import train_fusion, train_text
from rakuten_classifier.pipeline.training_data import load_training_data
from rakuten_classifier.registry import model_info, production_trio


def test_promotion_gate_refuses_worse_and_accepts_not_worse(tiny, tmp_path, monkeypatch):
    # Under model names of their own, in a copy of the tiny trio's store: nothing in production under them yet.
    from rakuten_classifier import registry
    from rakuten_classifier.pipeline import fusion_step, steps

    suffix = uuid.uuid4().hex[:8]
    monkeypatch.setattr(registry, "FUSION_MODEL", f"gate-fusion-{suffix}")
    monkeypatch.setattr(fusion_step, "FUSION_MODEL", f"gate-fusion-{suffix}")
    monkeypatch.setattr(steps, "TEXT_MODEL", f"gate-text-{suffix}")
    home, data_root = tiny.copy(tmp_path)
    settings = Settings(data_root=data_root, cv_folds=int(TINY_SETTINGS["RAKUTEN_CV_FOLDS"]))  # the tiny trio's
    data = load_training_data(tiny.rows, settings=settings)
    text, image = tiny.production["text"], tiny.production["image"]
    with model_store(home):
        first = train_fusion(data, text_tag=text, image_tag=image, settings=settings)
        assert first["promoted"] is True  # nothing in production under these names yet
        before = production_trio()
        assert before is not None
        assert before.fusion == first["tag"]
        weak_tfidf = TfidfParams(C=1e-4, char_ngram_max=1, word_ngram_max=1)
        weak = train_text(data, tfidf=weak_tfidf, encoder=EncoderParams(NO_ENCODER), settings=settings)
        refused = train_fusion(data, text_tag=weak["tag"], image_tag=image, settings=settings)
        assert refused["promoted"] is False
        assert model_info(refused["tag"])["labels"]["stage"] == "candidate"
        assert production_trio() == before  # nothing served changed
        again = train_fusion(data, text_tag=text, image_tag=image, settings=settings)
        assert again["promoted"] is True  # equal score: not worse, promoted
        production = production_trio()
        assert production is not None
        assert production.fusion == again["tag"]
