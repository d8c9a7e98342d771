"""Settings: the admin token's deprecated name is still read, with one warning; the MLflow store, the retrain
threshold and the /ui examples are settings like the others."""

from __future__ import annotations

import logging

import pytest

from rakuten_classifier import config
from rakuten_classifier.cli import main
from rakuten_classifier.config import Settings, get_settings
from rakuten_classifier.pipeline import retrain


def test_the_old_train_token_name_still_sets_the_admin_token_with_one_warning(monkeypatch, caplog):
    config._warn_deprecated_train_token.cache_clear()
    monkeypatch.setenv("RAKUTEN_TRAIN_TOKEN", "old-name")
    with caplog.at_level(logging.WARNING, logger="rakuten_classifier.config"):
        first, second = Settings(), Settings()
    assert first.admin_token is not None
    assert first.admin_token.get_secret_value() == "old-name"
    assert second.admin_token == first.admin_token
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "RAKUTEN_ADMIN_TOKEN" in caplog.records[0].message
    assert "train_token" not in first.model_dump()  # one admin token, one name, in what the settings report


def test_the_admin_token_name_wins_over_the_old_one(monkeypatch):
    monkeypatch.setenv("RAKUTEN_TRAIN_TOKEN", "old-name")
    monkeypatch.setenv("RAKUTEN_ADMIN_TOKEN", "new-name")
    token = Settings().admin_token
    assert token is not None
    assert token.get_secret_value() == "new-name"


def test_without_either_name_the_admin_routes_stay_disabled():
    assert Settings().admin_token is None


def test_the_mlflow_store_and_artifacts_lie_under_the_data_root_unless_set(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local = Settings(data_root=tmp_path)
    assert local.mlflow_uri == f"sqlite:///{tmp_path.resolve().as_posix()}/mlflow.db"
    assert local.mlflow_artifacts == (tmp_path / "mlartifacts").resolve().as_uri()
    # MLflow's own variable is read; the server then keeps the artifacts unless a location is set.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert (Settings().mlflow_uri, Settings().mlflow_artifacts) == ("http://mlflow:5000", None)
    monkeypatch.setenv("RAKUTEN_MLFLOW_TRACKING_URI", "http://ours:5000")
    monkeypatch.setenv("RAKUTEN_MLFLOW_ARTIFACT_LOCATION", "s3://bucket/rakuten")
    assert (Settings().mlflow_uri, Settings().mlflow_artifacts) == ("http://ours:5000", "s3://bucket/rakuten")
    assert Settings(mlflow_tracking_uri="http://given:5000").mlflow_uri == "http://given:5000"


@pytest.mark.parametrize(("argv", "expected"), [([], 5), (["--min-new-rows", "9"], 9)])
def test_retrains_threshold_is_the_setting_unless_given(argv, expected, monkeypatch):
    monkeypatch.setenv("RAKUTEN_RETRAIN_MIN_NEW_ROWS", "5")
    get_settings.cache_clear()
    checked = []

    class Checked(Exception):
        """Raised once the check has its threshold (training is not what this test is about)."""

    def check(settings, min_new_rows, use_drift=True):
        checked.append(min_new_rows)
        raise Checked

    monkeypatch.setattr(retrain, "retrain_check", check)
    with pytest.raises(Checked):
        main(["retrain", "--dry-run", *argv])
    assert checked == [expected]
