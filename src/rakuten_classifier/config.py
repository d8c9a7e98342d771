"""Typed settings, read once from the environment (prefix ``RAKUTEN_``) and the CLI.

Every path the project uses is derived here from ``data_root``; nothing else hard-codes a path.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Project configuration; override any field with ``RAKUTEN_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RAKUTEN_", env_file=".env", extra="ignore")

    data_root: Path = Field(Path("data"), description="Folder holding raw/, synthetic/, the SQLite db")
    db_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_root>/rakuten.db")
    seed: int = 42
    # Fractions of each category sent to validation (fusion weight, calibration) and test (scores).
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.20, gt=0, lt=0.5)
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow store; default the MLFLOW_TRACKING_URI env var, else sqlite under data_root"
    )
    train_token: SecretStr | None = Field(None, description="Bearer token enabling POST /train")

    @property
    def raw_dir(self) -> Path:
        """Where the untouched challenge files live if the user has them."""
        return self.data_root / "raw"

    @property
    def synthetic_dir(self) -> Path:
        """Where `make demo` writes a synthetic catalogue when raw/ is empty."""
        return self.data_root / "synthetic"

    @property
    def features_dir(self) -> Path:
        """Cache of image-backbone features (one file per backbone and image set)."""
        return self.data_root / "features"

    @property
    def jobs_dir(self) -> Path:
        """Logs and status files of training jobs started by POST /train."""
        return self.data_root / "jobs"

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL actually used."""
        return self.db_url or f"sqlite:///{(self.data_root / 'rakuten.db').as_posix()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()
