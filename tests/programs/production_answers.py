"""Trains a text model, then an image model, with the CLI in this process, and prints (JSON) what the
production trio answers for 24 held-out sample rows before and after each, with each new version's
labels. Runs in its own process against the store at BENTOML_HOME (tests/test_pipeline_claims.py).

Usage: production_answers.py SAMPLE_DIR
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

from rakuten_classifier.cli import main
from rakuten_classifier.modeling import loading
from rakuten_classifier.modeling.fusion import fuse
from rakuten_classifier.pipeline import scoring
from rakuten_classifier.pipeline.training_data import load_training_data
from rakuten_classifier.registry import model_info, production_trio, read_fusion_config, verify_production


def state(rows) -> dict:
    """The production trio and its fused answers for ``rows``."""
    # Fresh loads: nothing cached from an earlier call can hide a changed model file.
    loading.text_model_for.cache_clear()
    loading.image_model_for.cache_clear()
    scoring._PROBA_CACHE.clear()
    production = production_trio()
    assert production is not None, "no production trio in this store"
    verify_production(production)
    fused = fuse(
        scoring.text_proba(production.text, rows),
        scoring.image_proba(production.image, rows),
        read_fusion_config(production.fusion),
    )
    return {"production": vars(production), "answers": fused.round(6).tolist()}


def train(sample: str, *args: str) -> dict:
    """`rakuten train ...` on the sample: the new version's tag and labels."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", *args, "--data-dir", sample, "--json"]) == 0
    tag = json.loads(out.getvalue())["tag"]
    return {"tag": tag, "labels": model_info(tag)["labels"]}


def report(sample: str) -> dict:
    rows = load_training_data(sample).split("test").head(24)  # with and without images
    result = {"before": state(rows)}
    result["text"] = train(sample, "text", "--text-max-features", "20000")
    result["after_text"] = state(rows)
    result["image"] = train(sample, "image")
    result["after_image"] = state(rows)
    return result


if __name__ == "__main__":
    print(json.dumps(report(sys.argv[1])))
