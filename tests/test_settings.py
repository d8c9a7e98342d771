"""Settings: one name for the admin token; the MLflow store and the retrain threshold are settings like the
others."""

from __future__ import annotations

import pytest

from rakuten_classifier.cli import main
from rakuten_classifier.config import Settings, get_settings
from rakuten_classifier.pipeline import retrain


def test_only_rakuten_admin_token_opens_the_admin_routes(monkeypatch):
    """RAKUTEN_TRAIN_TOKEN, the admin token's name in versions never shipped, is not read: the routes stay closed."""
    monkeypatch.setenv("RAKUTEN_TRAIN_TOKEN", "old-name")
    assert Settings().admin_token is None
    monkeypatch.setenv("RAKUTEN_ADMIN_TOKEN", "new-name")
    token = Settings().admin_token
    assert token is not None
    assert token.get_secret_value() == "new-name"


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
