"""The SQL schema (SQLite by default, PostgreSQL by URL): products and loads, corrections, the prediction log
and feedback, and the alerts Alertmanager sent."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

metadata = sa.MetaData()

loads = sa.Table(
    "loads",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("source_dir", sa.Text, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("inserted", sa.Integer, nullable=False),
    sa.Column("images_found", sa.Integer, nullable=False),
    sa.Column("images_missing", sa.Integer, nullable=False),
    # 'synthetic' or 'real' (data/origin.py); NULL for loads recorded before origins were.
    sa.Column("origin", sa.String(16)),
)

products = sa.Table(
    "products",
    metadata,
    sa.Column("productid", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("row_index", sa.BigInteger, nullable=False),
    sa.Column("designation", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("imageid", sa.BigInteger, nullable=False),
    sa.Column("prdtypecode", sa.Integer, index=True),
    sa.Column("split", sa.String(16), nullable=False, index=True),
    sa.Column("image_path", sa.Text),
    sa.Column("image_bytes", sa.Integer),
    sa.Column("image_width", sa.Integer),
    sa.Column("image_height", sa.Integer),
    sa.Column("load_id", sa.Integer, sa.ForeignKey("loads.id"), nullable=False),
)

# Monitoring (monitoring/prediction_log.py): one row per served prediction, written in batches off the request path.
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("text_sha256", sa.String(64), nullable=False),  # fingerprint, not the text itself
    sa.Column("text_length", sa.Integer, nullable=False),
    sa.Column("language", sa.String(8), nullable=False),
    sa.Column("image_present", sa.Boolean, nullable=False),
    sa.Column("image_width", sa.Integer),
    sa.Column("image_height", sa.Integer),
    sa.Column("image_brightness", sa.Float),
    sa.Column("modality", sa.String(8), nullable=False),  # both | text | image
    sa.Column("prdtypecode", sa.Integer, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("top_probabilities", sa.Text, nullable=False),  # JSON [[code, probability], ...]
    sa.Column("text_weight", sa.Float, nullable=False),
    sa.Column("fusion_model", sa.String(128), nullable=False),
    sa.Column("text_model", sa.String(128)),
    sa.Column("image_model", sa.String(128)),
    sa.Column("latency_ms", sa.Float, nullable=False),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("prediction_id", sa.String(32), sa.ForeignKey("predictions.id"), primary_key=True),
    sa.Column("prdtypecode", sa.Integer, nullable=False),
    sa.Column("correct", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

# An operator's correction (data/corrections.py): the product itself is a labelled row of `products`
# (its own load, origin 'correction'); this row says who made it, when, and for which prediction.
corrections = sa.Table(
    "corrections",
    metadata,
    sa.Column("productid", sa.BigInteger, sa.ForeignKey("products.productid"), primary_key=True, autoincrement=False),
    # Unique: correcting the same prediction again changes nothing (not a foreign key: the prediction
    # log is written in batches off the request path, so the prediction may not be stored yet).
    sa.Column("prediction_id", sa.String(32), unique=True),
    sa.Column("corrected_by", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

# Every alert Alertmanager posted to the service's webhook (monitoring/alert_log.py, serving/alerts.py), once per
# firing: Alertmanager re-sends an alert (same fingerprint, same start) until it resolves, and a re-send is
# recognised by this key and starts nothing. `action` says what its arrival did; `job_id` the job it started.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("alertname", sa.String(128), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),  # firing | resolved: the latest received
    sa.Column("labels", sa.Text, nullable=False),  # JSON object
    sa.Column("annotations", sa.Text, nullable=False),  # JSON object
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("job_id", sa.String(64)),
    sa.UniqueConstraint("fingerprint", "starts_at", name="uq_alerts_fingerprint_starts_at"),
)

# Columns added after a table's first release: a store created before them gets them on first use.
ADDED_COLUMNS = ((loads, "origin"),)


def _add_missing_columns(engine: sa.Engine) -> None:
    inspector = sa.inspect(engine)
    for table, name in ADDED_COLUMNS:
        if name not in {column["name"] for column in inspector.get_columns(table.name)}:
            column_type = table.c[name].type.compile(engine.dialect)
            with engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {column_type}"))


def get_engine(url: str) -> sa.Engine:
    """An engine for the URL; SQLite's parent folder is created if needed, missing tables and columns added."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, future=True)
    metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine
