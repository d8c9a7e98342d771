"""Pipeline claims: drift alone triggers `rakuten retrain`; training one model never changes what is served."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_SETTINGS, model_store, rakuten_here

from rakuten_classifier import registry
from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.config import get_settings
from rakuten_classifier.data.store import load_into_db
from rakuten_classifier.data.synthetic import write_synthetic_catalogue
from rakuten_classifier.modeling import loading
from rakuten_classifier.modeling.fusion import fuse
from rakuten_classifier.monitoring.drift import build_profile, save_profile
from rakuten_classifier.monitoring.prediction_log import PredictionLog, prediction_record
from rakuten_classifier.pipeline import scoring
from rakuten_classifier.pipeline import steps as steps_module
from rakuten_classifier.pipeline.training_data import load_training_data

# ------------------------------------------------------------------ drift alone triggers a retrain

ORDINARY_TITLES = [
    "Piscine tubulaire hors sol avec pompe de filtration",
    "Lot de 3 coussins pour canapé avec fermeture éclair",
    "Figurine de collection peinte à la main, édition limitée",
    "Jeu de société pour toute la famille, dès 8 ans",
    "Console de jeux portable avec deux manettes",
    "Parure de lit en coton, housse de couette et taies",
]
ORDINARY_CODES = [2583, 1560, 1140, 1281, 60, 1920]


def _ordinary(rng: np.random.Generator, n: int) -> list[tuple[str, int, float]]:
    """(text, predicted code, confidence) of everyday traffic: mixed French titles and categories."""
    rows = []
    for _ in range(n):
        i = int(rng.integers(len(ORDINARY_TITLES)))
        text = ORDINARY_TITLES[i] + " " + "modèle " * int(rng.integers(0, 12))
        rows.append((text, ORDINARY_CODES[i], float(rng.beta(5, 2))))
    return rows


def _books(rng: np.random.Generator, n: int) -> list[tuple[str, int, float]]:
    """A drifted window: long English book descriptions, all answered 'used books' with high confidence."""
    text = "The complete illustrated history of the English novel, hardcover edition with notes " * 6
    return [(text, 10, float(rng.uniform(0.95, 0.99))) for _ in range(n)]


def _records(rows: list[tuple[str, int, float]], fusion_tag: str) -> list[dict]:
    return [
        prediction_record(
            prediction_id=uuid.uuid4().hex,
            endpoint="text",
            text=text,
            image=None,
            answer={
                "prdtypecode": code,
                "probability": confidence,
                "text_weight": 1.0,
                "top_k": [{"prdtypecode": code, "probability": confidence}],
                "models": {"fusion": fusion_tag, "text": "t", "image": "i"},
            },
            latency_ms=5.0,
        )
        for text, code, confidence in rows
    ]


@pytest.fixture
def production_without_new_rows(tmp_path, monkeypatch):
    """A production fusion version (under a name of its own: the session's pointer is untouched) whose
    drift profile is ordinary traffic and whose training used every labelled row in the database."""
    from rakuten_classifier.data.store import read_products
    from rakuten_classifier.pipeline.protocol import save_trained_rows

    monkeypatch.setattr(registry, "FUSION_MODEL", f"claims-fusion-{uuid.uuid4().hex[:8]}")
    settings = get_settings()
    write_synthetic_catalogue(tmp_path / "synth", rows=120, seed=3, image_size=32)
    loaded = load_into_db(
        tmp_path / "synth", settings.database_url, settings.seed, settings.val_fraction, settings.test_fraction
    )
    assert loaded["inserted"] == 120
    reference = pd.DataFrame(_records(_ordinary(np.random.default_rng(0), 1500), "reference"))
    profile = build_profile(reference)

    def write(directory: Path) -> None:
        config = {"text_model": "rakuten-text:unused", "image_model": "rakuten-image:unused", "classes": CATEGORY_CODES}
        (directory / registry.FUSION_FILE).write_text(json.dumps(config))
        save_profile(profile, directory)
        save_trained_rows(directory, read_products(settings.database_url)["productid"])  # as train_fusion does

    tag = registry.save_to_store(registry.FUSION_MODEL, write, {"stage": registry.STAGE_PRODUCTION}, {})
    yield tag
    bentoml.models.delete(tag)


def _log(rows: list[tuple[str, int, float]], fusion_tag: str) -> None:
    log = PredictionLog(get_settings().database_url, flush_seconds=3600)
    for record in _records(rows, fusion_tag):
        log.record(record)
    log.close()


def _retrain_json(*args: str) -> dict:
    return rakuten_here(None, "retrain", "--min-new-rows", "1", *args)


def test_drift_alone_makes_retrain_train_and_says_why(production_without_new_rows, monkeypatch):
    fusion = production_without_new_rows
    _log(_ordinary(np.random.default_rng(1), 200), fusion)
    _log(_books(np.random.default_rng(2), 300), fusion)  # the newest 300 rows: inside RAKUTEN_DRIFT_WINDOW

    check = _retrain_json("--dry-run")
    assert check["new_labelled_rows"] == 0  # no new labelled data: only drift can fire
    assert check["drift"]["drifted"] is True
    assert {"text_length", "prdtypecode"} <= set(check["drift"]["drifted_features"])
    assert len(check["triggers"]) == 1
    assert check["triggers"][0].startswith("drift in ")
    assert check["trained"] is False

    # Without --dry-run the same decision trains from the database (training itself is stubbed here:
    # tests/test_retrain.py trains for real; this test is about the decision).
    calls: list[dict] = []

    def fake_train_all(**kwargs):
        calls.append(kwargs)
        fused = {"weighted_f1": 0.5}
        return {
            "text": {"tag": "rakuten-text:new"},
            "image": {"tag": "rakuten-image:new"},
            "fusion": {"tag": "f:new", "promoted": False, "promotion": "worse", "metrics": {"fused": fused}},
        }

    monkeypatch.setattr(steps_module, "train_all", fake_train_all)
    result = _retrain_json()
    assert result["trained"] is True
    assert result["triggers"] == check["triggers"]
    assert result["outcome"] == "kept production"
    assert len(calls) == 1
    assert calls[0]["db_url"] == get_settings().database_url  # retrains from the database


def test_retrain_fires_nothing_on_ordinary_traffic_or_with_drift_disabled(production_without_new_rows):
    fusion = production_without_new_rows
    _log(_ordinary(np.random.default_rng(4), 300), fusion)
    ordinary = _retrain_json("--dry-run")
    assert ordinary["new_labelled_rows"] == 0
    assert ordinary["drift"]["drifted"] is False
    assert ordinary["triggers"] == []

    _log(_books(np.random.default_rng(5), 300), fusion)
    assert _retrain_json("--dry-run")["drift"]["drifted"] is True
    ignored = _retrain_json("--no-drift")
    assert "drift" not in ignored
    assert ignored["triggers"] == []
    assert ignored["outcome"] == "skipped: no trigger fired"
    assert ignored["trained"] is False


def test_models_on_a_new_store_lists_no_version_and_no_production(tmp_path):
    (tmp_path / "bentoml" / "models").mkdir(parents=True)
    listing = rakuten_here(tmp_path / "bentoml", "models")  # it said "no Models with name 'rakuten-text'"
    assert listing == {"production": None, registry.TEXT_MODEL: [], registry.IMAGE_MODEL: [], registry.FUSION_MODEL: []}


# ------------------------------------------------------------------ training one model leaves production alone


@pytest.mark.slow
@pytest.mark.training
def test_training_only_text_or_only_image_never_changes_what_is_served(tiny, tmp_path, monkeypatch):
    # Against a copy of the tiny trio, training on its rows with its settings (`rakuten_here`: in this process).
    home, data_root = tiny.copy(tmp_path)
    monkeypatch.setenv("RAKUTEN_DATA_ROOT", str(data_root))
    rows = load_training_data(tiny.rows).split("test").head(24)  # with and without images

    def served() -> dict:
        """The production trio and its fused answers for ``rows``, loaded afresh (no cached model file)."""
        loading.text_model_for.cache_clear()
        loading.image_model_for.cache_clear()
        scoring._PROBA_CACHE.clear()
        with model_store(home):
            production = registry.production_trio()
            assert production is not None
            registry.verify_production(production)
            fused = fuse(
                scoring.text_proba(production.text, rows),
                scoring.image_proba(production.image, rows),
                registry.read_fusion_config(production.fusion),
            )
        return {"production": vars(production), "answers": fused.round(6).tolist()}

    def train(*args: str) -> str:
        """`rakuten train ...` on the tiny rows: the new version's tag, whose labels say candidate."""
        tag = rakuten_here(home, "train", *args, "--data-dir", str(tiny.rows), **TINY_SETTINGS)["tag"]
        with model_store(home):
            assert registry.model_info(tag)["labels"]["stage"] == registry.STAGE_CANDIDATE
        return tag

    before = served()
    assert before["production"] == tiny.production
    new_text = train("text", "--text-max-features", "20000")
    assert new_text.startswith(registry.TEXT_MODEL + ":")
    assert served() == before  # the pointer did not move, and the production trio answers the same
    new_image = train("image")
    assert new_image.startswith(registry.IMAGE_MODEL + ":")
    assert served() == before
    assert not {new_text, new_image} & set(before["production"].values())
