"""Settings: the admin token's deprecated name is still read, with one warning."""

from __future__ import annotations

import logging

from rakuten_classifier import config
from rakuten_classifier.config import Settings


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
