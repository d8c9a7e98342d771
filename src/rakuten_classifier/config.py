"""Typed settings, read once from the environment (prefix ``RAKUTEN_``) and the CLI.

Every path the project uses is derived here from ``data_root``; nothing else hard-codes a path.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Project configuration; override any field with ``RAKUTEN_<FIELD>`` in the environment."""

    # populate_by_name: a field read under another environment name (mlflow_tracking_uri) is still set by its name.
    model_config = SettingsConfigDict(env_prefix="RAKUTEN_", env_file=".env", extra="ignore", populate_by_name=True)

    data_root: Path = Field(Path("data"), description="Folder holding raw/, synthetic/, the SQLite db")
    db_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_root>/rakuten.db")
    # Shared between data roots, the cache saves re-running the backbone over the same image files
    # (a full-sample image training spends ~33 s of its ~45 s there on 2 cores), and the sentence
    # encoder over the same texts.
    feature_cache_dir: Path | None = Field(
        None, description="cache of image-backbone features and text embeddings; default <data_root>/features"
    )
    seed: int = Field(42, description="seed of the split, the folds and every model fit")
    # The stored split: 'test' is held out (scores, promotion gate); 'train' and 'val' are both
    # learning rows, cross-fitted over cv_folds (val_fraction only keeps old stores' splits stable).
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="share of each category stored as 'val'")
    test_fraction: float = Field(0.20, gt=0, lt=0.5, description="share of each category held out as 'test'")
    cv_folds: int = Field(5, ge=2, le=20, description="K of the K-fold cross-fitting on the learning rows")
    # EfficientNet-Lite1: the best out-of-fold image and fused figures on the sample, at 45 ms a view
    # against Lite2's 70 (docs/accuracy.md); mobilenet_v2, efficientnet_lite0/2 and others selectable.
    image_backbone: str = Field("efficientnet_lite1", description="image backbone trained by default")
    # USE multilingual v3 beside TF-IDF by default: the best encoder out-of-fold (text 0.669 -> 0.716, fused
    # 0.768 -> 0.782 on the sample), over the whole text with the arithmetic mean; on ONNX Runtime with the
    # compiled tokenizer its serving and training cost is within issue 36's bounds (docs/accuracy.md).
    text_encoder: str = Field(
        "use-m3", description="sentence encoder beside the TF-IDF text model (use-m3, e5-small); 'none': TF-IDF alone"
    )
    # The fusion's combiners have at most 1,485 parameters; fitted on every out-of-fold row, its selection
    # took 4 s at 10,000 products and 35 s at 40,000 (faster than the rows grow), 74 s at 84,916 against
    # 33 s with this limit (2026-12-06, docs/benchmarks.md).
    fusion_fit_rows: int = Field(
        20_000, ge=1_000, description="most out-of-fold rows a fusion combiner is fitted on (a seeded sample above it)"
    )
    # Off by default: a refit has no held-out figure of its own, and it doubles the training's fits. The learning
    # curve still rises at 100 % of the rows (about +0.07 fused weighted F1 per doubling, docs/accuracy.md).
    refit_all_rows: bool = Field(
        False,
        description="after the gate promotes a trio, train it again on every labelled row (held-out rows "
        "included) and promote that; it reports the gated fit's held-out scores",
    )
    # MLflow's own variable MLFLOW_TRACKING_URI is read too (RAKUTEN_MLFLOW_TRACKING_URI wins).
    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("RAKUTEN_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking store; default SQLite at <data_root>/mlflow.db",
    )
    mlflow_artifact_location: str | None = Field(
        None,
        description="where a new MLflow experiment keeps its artifacts; default <data_root>/mlartifacts with a "
        "SQLite store, else the tracking server's",
    )
    # Secrets have no default anywhere: an unset admin token disables the administrative endpoints.
    admin_token: SecretStr | None = Field(
        None,
        description="Admin bearer token: /train, /corrections, /jobs, /feedback, /monitor/*, /alerts; unset = disabled",
    )
    predict_token: SecretStr | None = Field(
        None, description="Optional bearer token required by the prediction endpoints; unset = open"
    )

    # Serving limits (service.py); each answers a 4xx with a message when exceeded.
    max_text_chars: int = Field(20_000, gt=0, description="designation/description length (400)")
    max_image_bytes: int = Field(10 * 1024 * 1024, gt=0, description="encoded image size (413)")
    max_image_pixels: int = Field(40_000_000, gt=0, description="width x height, decompression bombs (413)")
    max_batch_items: int = Field(256, gt=0, description="items of one /predict_batch call (400)")
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0, description="whole request body (413)")
    request_timeout_s: float = Field(60.0, gt=0, description="model work of one request before a 504")
    # Adaptive batching answers 503 when a request would wait longer than this; on 2 busy cores a
    # batch of images takes seconds, so the bound is generous and only sheds a real overload.
    max_latency_ms: int = Field(
        30_000, ge=1000, description="adaptive batching answers 503 when a request would wait longer than this"
    )
    # Largest batches the adaptive batcher may form. Measured on 2 cores with the torch-free image
    # worker (EfficientNet-Lite1 on ONNX Runtime, one view; docs/benchmarks.md, "Lean serving"): 32
    # clients got the same products/s with image batches of 2, 4 or 8 (17.0, 17.2, 16.7: within the
    # box's noise), and ONNX Runtime holds about 12 MiB more per image of a batch: 2 keeps the image
    # workers smallest. TF-IDF is cheap at any size.
    text_max_batch: int = Field(64, ge=2, description="largest batch of texts one text-model call takes")
    # Serving the encoder (docs/benchmarks.md, issue 36): its embedding runs on a thread of its own beside
    # the TF-IDF scores of the same texts, and the embeddings of the latest texts are kept in memory.
    text_encoder_beside: bool = Field(
        True, description="serving: embed a batch's texts on a second thread while the first computes TF-IDF"
    )
    text_token_memory: int = Field(
        8192,
        ge=1024,
        description="the USE encoder's per-piece rows kept (13 KB each; 8,192: 109 MB, 95 % of the sample's tokens)",
    )
    text_embedding_memory: int = Field(
        0, ge=0, description="serving: embeddings of this many recent texts kept in memory (0: none)"
    )
    image_max_batch: int = Field(2, ge=2, description="largest batch of images one image-model call takes")
    adaptive_batching: bool = Field(True, description="false: each request is its own model call (for comparison)")
    # Image worker layout for 2 cores (docs/benchmarks.md, "Lean serving"): two worker processes, each
    # running its model on one runtime thread. One worker served 32 clients 27 % slower (12.6 against
    # 17.2 products/s); a third gained 17 % only on a busy box, where more processes get more of the
    # shared cores, for ~340 MiB more; views in turn on a 2-thread session (below, false) 38 % slower.
    image_workers: int = Field(2, ge=1, description="image model worker processes")
    image_parallel_views: bool = Field(
        True, description="test-time views on parallel threads, one runtime thread each (false: in turn, torch_threads)"
    )
    # ONNX Runtime ran EfficientNet-Lite1 (both views) 2.7x faster than torch eager on 2 cores with
    # probabilities within 1e-6 of torch's (docs/benchmarks.md, "Image runtime").
    image_runtime: Literal["onnxruntime", "torch"] = Field(
        "onnxruntime", description="runtime of the served image model (training and evaluation use torch)"
    )
    torch_threads: int = Field(
        2, ge=1, description="threads of an image worker's model (ONNX Runtime or torch) without parallel views"
    )
    # Scaling apart: run a model service on its own (`bentoml serve service:ImageModelService`), as
    # many replicas as needed behind one address, and point the entry at it (BentoML's dependency URL).
    text_service_url: str | None = Field(
        None, description="URL of a separately run TextModelService; unset: `bentoml serve` starts one"
    )
    image_service_url: str | None = Field(
        None, description="URL of a separately run ImageModelService (or its load balancer); unset: started locally"
    )
    ui_examples_dir: Path | None = Field(
        None, description="folder in the challenge layout whose held-out products are /ui's examples; unset: none"
    )
    reload_seconds: float = Field(5.0, gt=0, description="poll period for newly promoted models")
    health_timeout_s: float = Field(
        1.0, gt=0, le=10, description="how long /health waits for each model service before saying degraded"
    )
    log_backlog_alert: int = Field(
        10_000, gt=0, description="queued prediction-log rows beyond which /health says degraded (rows pile up)"
    )

    # Monitoring (monitoring/prediction_log.py, monitoring/drift.py; serving/observer.py runs both in the service).
    log_flush_seconds: float = Field(1.0, gt=0, description="prediction-log write period (off the request path)")
    log_buffer_max: int = Field(100_000, gt=0, description="records held in memory while the database is down")
    drift_window: int = Field(500, ge=30, description="recent predictions compared with the reference profile")
    drift_interval_seconds: float = Field(300.0, gt=0, description="how often the service refreshes the drift gauge")
    drift_psi_threshold: float = Field(0.25, gt=0, description="PSI above which a feature counts as drifted")
    drift_p_value: float = Field(0.01, gt=0, lt=1, description="test p-value below which a shift is significant")
    accuracy_window: int = Field(500, ge=1, description="latest feedback rows behind the live-accuracy figure")
    # Retraining (pipeline/retrain.py, `rakuten retrain --min-new-rows`, POST /train {"retrain": true}).
    retrain_min_new_rows: int = Field(
        1000, ge=1, description="labelled rows no production model learned from that call a retrain"
    )
    alert_label_count: int = Field(
        100,
        ge=1,
        description="predictions listed to label (least confident first) when a drift alert finds no new labelled rows",
    )

    # Spark (the spark extra: `rakuten predict --engine spark`, `rakuten train image --engine spark`; docs/scale.md).
    spark_master: str = Field(
        "local[*]", description="Spark master: local[N] (one machine), spark://HOST:7077 (standalone), k8s://..."
    )
    spark_app_name: str = Field("rakuten-classifier", description="name of the Spark application (master's UI, logs)")
    # Without it the standalone workers registered on the machine's other interface (issue 35); a cluster
    # spread over several hosts sets it empty and lets each host bind its own address.
    spark_local_ip: str = Field(
        "127.0.0.1", description="address every Spark process binds to (SPARK_LOCAL_IP); empty: Spark chooses"
    )
    spark_python: str | None = Field(
        None, description="Python the executors run (PYSPARK_PYTHON); default this interpreter (one machine)"
    )
    spark_executor_cores: int = Field(1, ge=1, description="cores (concurrent tasks) of one executor on a cluster")
    spark_executor_memory: str = Field(
        "1g", description="JVM heap of one executor; its Python workers (models) live outside it (docs/scale.md)"
    )
    # A task is the unit Spark retries after a lost executor: 500 products are ~10 s of one core's work.
    spark_partition_rows: int = Field(500, ge=1, description="products per Spark task of batch scoring")

    @field_validator("ui_examples_dir", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty RAKUTEN_UI_EXAMPLES_DIR means no examples, not the current folder."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def raw_dir(self) -> Path:
        """Where the untouched challenge files go (`make demo` trains on them when present, as the
        synthetic catalogue's warning says: data/origin.py)."""
        return self.data_root / "raw"

    @property
    def features_dir(self) -> Path:
        """Cache of image-backbone features (one file per backbone, view and image set) and text embeddings."""
        return self.feature_cache_dir or self.data_root / "features"

    @property
    def jobs_dir(self) -> Path:
        """Logs and status files of training jobs started by POST /train."""
        return self.data_root / "jobs"

    @property
    def corrections_dir(self) -> Path:
        """Photos of the products operators corrected (POST /corrections), named by the product's id."""
        return self.data_root / "corrections"

    @property
    def reports_dir(self) -> Path:
        """Drift and evaluation reports."""
        return self.data_root / "reports"

    @property
    def sqlite_file(self) -> Path:
        """The SQLite database used when no ``db_url`` is set."""
        return self.data_root / "rakuten.db"

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL actually used."""
        return self.db_url or f"sqlite:///{self.sqlite_file.as_posix()}"

    @property
    def mlflow_uri(self) -> str:
        """The MLflow tracking store actually used."""
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_root / 'mlflow.db').resolve().as_posix()}"

    @property
    def mlflow_artifacts(self) -> str | None:
        """Where a new experiment keeps its artifacts (None: the tracking server decides)."""
        if self.mlflow_artifact_location:
            return self.mlflow_artifact_location
        if self.mlflow_uri.startswith("sqlite:"):
            return (self.data_root / "mlartifacts").resolve().as_uri()
        return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()
