"""Shared fixtures: the real sample, isolated settings, PostgreSQL schemas."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = (REPO_ROOT / ".." / "shared" / "rakuten-sample").resolve()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real challenge sample beside the repository (read-only)."""
    if not (SAMPLE_DIR / "X_train_update.csv").is_file():
        pytest.skip(f"real sample absent at {SAMPLE_DIR} (it is present in CI)")
    return SAMPLE_DIR


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """Every test gets its own data root, so nothing touches the developer's data/."""
    from rakuten_classifier.config import get_settings

    monkeypatch.setenv("RAKUTEN_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("RAKUTEN_DB_URL", raising=False)
    monkeypatch.delenv("RAKUTEN_TRAIN_TOKEN", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def pg_url() -> str:
    """A PostgreSQL URL bound to a fresh schema; fails in CI when the server is unreachable."""
    base = os.environ.get("RAKUTEN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError as exc:
        if os.environ.get("RAKUTEN_REQUIRE_PG") or os.environ.get("CI"):
            pytest.fail(f"PostgreSQL required but unreachable at {base}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {base}")
    yield f"{base}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()
