"""The whole PostgreSQL path: load, train from the database, serve, log predictions, feedback, drift, retrain check.

Everything runs with RAKUTEN_DB_URL set to a fresh PostgreSQL schema and never touches SQLite. The rows
are those of the session's tiny trio (conftest.py's `tiny`), whose image model this test keeps (its
out-of-fold file covers the same learning rows, since the database split is computed as the folder's):
the text model and the fusion are trained from PostgreSQL here, with the tiny trio's settings, and score
on the held-out rows exactly what the same training from SQLite scored.
"""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from conftest import TINY_SETTINGS, model_store, rakuten_here

from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.registry import model_info

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.training]
ADMIN = {"Authorization": "Bearer pg-token"}


def _count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


def test_load_train_serve_log_feedback_and_drift_all_on_postgres(tiny, pg_url, serve, request, tmp_path, monkeypatch):
    home, _ = tiny.copy(tmp_path / "tiny")  # a copy: the fusion trained here may be promoted
    data_root = tmp_path / "data"
    settings = {"RAKUTEN_DB_URL": pg_url, "RAKUTEN_ADMIN_TOKEN": "pg-token", "RAKUTEN_RELOAD_SECONDS": "1"}
    for name, value in {"RAKUTEN_DATA_ROOT": str(data_root), **settings}.items():
        monkeypatch.setenv(name, value)  # the commands, run in this process, read the server's settings

    def rakuten(*args: str) -> dict:
        """`rakuten ARGS --json` in this process (the trainings too), against the copied store."""
        return rakuten_here(home, *args, **TINY_SETTINGS)

    loaded = rakuten("data", "load", "--data-dir", str(tiny.rows))
    assert loaded["inserted"] == tiny.loaded["rows"]
    assert loaded["splits"] == tiny.loaded["splits"]  # the folder's split, as in SQLite
    assert _count(pg_url, "products") == tiny.loaded["rows"]
    assert _count(pg_url, "loads") == 1

    # Training with no --data-dir / --db reads the configured database: PostgreSQL.
    text = rakuten("train", "text")
    fusion = rakuten("train", "fusion")
    assert fusion["text_model"] == text["tag"]
    assert fusion["image_model"] == tiny.production["image"]
    with model_store(home):
        provenance = model_info(fusion["tag"])["metadata"]
    assert provenance["learned_from"]["rows"] == tiny.loaded["rows"] - fusion["metrics"]["fused"]["n"]
    # The same rows, split and settings as the tiny trio's training from SQLite: the same held-out scores.
    assert text["metrics"]["test"] == tiny.result["text"]["metrics"]["test"]
    assert fusion["metrics"]["fused"] == tiny.result["fusion"]["metrics"]["fused"]
    assert not (data_root / "rakuten.db").exists()  # no SQLite fallback anywhere

    server = serve(request, data_root=data_root, home=home, **settings)
    served = httpx.get(f"{server.url}/health").json()["models"]
    titles = [
        "Piscine tubulaire hors sol 3m avec pompe",
        "Lot de 5 romans policiers en poche",
        "Coussin déhoussable pour canapé",
        "Manette sans fil pour console",
    ]
    ids: list[str] = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(40):
            answer = client.post("/predict_text", json={"designation": f"{titles[i % 4]} n°{i}"})
            assert answer.status_code == 200, answer.text
            # A text-only answer names the fusion and text versions that made it (no image model).
            assert answer.json()["models"]["fusion"] == served["fusion"]
            assert answer.json()["models"]["text"] == served["text"]
            ids.append(answer.json()["prediction_id"])
        for i, prediction_id in enumerate(ids[:10]):
            truth = CATEGORY_CODES[i % len(CATEGORY_CODES)]
            given = client.post("/feedback", json={"prediction_id": prediction_id, "prdtypecode": truth}, headers=ADMIN)
            assert given.status_code == 200, given.text
        accuracy = client.get("/monitor/accuracy", headers=ADMIN)
        assert accuracy.status_code == 200, accuracy.text
        assert accuracy.json()["labelled"] == 10
    server.stop()

    # The rows are in PostgreSQL tables (the graceful stop wrote whatever was still queued).
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        logged = conn.execute(sa.text("SELECT id, fusion_model FROM predictions")).all()
        feedback = conn.execute(sa.text("SELECT prediction_id FROM feedback")).scalars().all()
    engine.dispose()
    assert set(ids) <= {row.id for row in logged}
    assert {row.fusion_model for row in logged} == {served["fusion"]}
    assert set(feedback) == set(ids[:10])

    # Monitoring and the retrain check read the same PostgreSQL tables.
    assert rakuten("monitor", "accuracy")["labelled"] == 10
    drift = rakuten("monitor", "drift", "--last", "40", "--out", str(tmp_path / "drift.html"))
    assert drift["window"] == 40
    assert drift["model"] == served["fusion"]
    assert (tmp_path / "drift.html").is_file()
    check = rakuten("retrain", "--dry-run", "--min-new-rows", "1")
    assert check["labelled_in_database"] == tiny.loaded["rows"]
    assert check["new_labelled_rows"] == 0  # all of them were the fusion version's data
    assert check["drift"]["window"] == 40
