"""Monitoring units: language detection, the buffered prediction log, feedback, drift statistics, report."""

import json
import time

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from rakuten_classifier.data.schema import get_engine, predictions
from rakuten_classifier.monitoring.drift import NUMERIC_FEATURES, build_profile, compare, psi
from rakuten_classifier.monitoring.drift_report import write_report
from rakuten_classifier.monitoring.prediction_log import (
    PredictionLog,
    UnknownPrediction,
    live_accuracy,
    prediction_record,
    recent_predictions,
    record_feedback,
)
from rakuten_classifier.monitoring.signals import detect_language, text_fingerprint


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Lot de 3 livres pour enfants avec des images", "fr"),
        ("Set of two cushions for the sofa, with a zip", "en"),
        ("Spielzeug für Kinder mit der Fernbedienung und Akku", "de"),
        ("", "none"),
        ("XR-200 3000mAh", "other"),
    ],
)
def test_detect_language(text, language):
    assert detect_language(text) == language


def _answer(code=10, probability=0.9, models=None):
    return {
        "prdtypecode": code,
        "probability": probability,
        "text_weight": 0.55,
        "top_k": [{"prdtypecode": code, "probability": probability}, {"prdtypecode": 40, "probability": 0.05}],
        "models": models or {"fusion": "rakuten-fusion:a", "text": "rakuten-text:b"},
    }


def _record(i: int, text="Livre de poche", image=None, code=10, probability=0.9):
    return prediction_record(
        prediction_id=f"id{i:05d}",
        endpoint="multimodal",
        text=text,
        image=image,
        answer=_answer(code, probability),
        latency_ms=12.5,
    )


def test_prediction_record_holds_a_fingerprint_not_the_text():
    record = _record(1, text="Roman policier", image={"width": 500, "height": 500, "brightness": 120.0})
    assert record["text_sha256"] == text_fingerprint("Roman policier")
    assert "Roman" not in json.dumps(record, default=str)
    assert record["modality"] == "both"
    assert record["text_length"] == len("Roman policier")
    assert json.loads(record["top_probabilities"]) == [[10, 0.9], [40, 0.05]]
    assert _record(2, text="", image={"width": 1, "height": 1, "brightness": 0.0})["modality"] == "image"


def test_log_writes_in_batches_off_the_caller_and_close_flushes_everything(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, flush_seconds=3600)  # the periodic writer never fires in this test
    started = time.perf_counter()
    for i in range(2000):
        log.record(_record(i))
    per_record_ms = (time.perf_counter() - started) / 2000 * 1000
    assert per_record_ms < 1, "record() must not do I/O"
    assert log.backlog == 2000
    assert recent_predictions(url).empty
    log.close()
    stored = recent_predictions(url)
    assert len(stored) == 2000
    assert set(stored["id"]) == {f"id{i:05d}" for i in range(2000)}


def test_log_writer_thread_flushes_periodically(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, flush_seconds=0.1)
    log.record(_record(1))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and log.written == 0:
        time.sleep(0.05)
    assert log.written == 1
    assert len(recent_predictions(url)) == 1
    log.close()


def test_log_keeps_rows_while_the_database_fails_and_writes_them_later(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, flush_seconds=3600)
    with log.engine.begin() as conn:  # the table disappears: every insert fails
        conn.execute(sa.text("ALTER TABLE predictions RENAME TO predictions_away"))
    log.record(_record(1))
    with pytest.raises(sa.exc.OperationalError):
        log.flush()
    assert log.backlog == 1  # kept for the retry, not lost
    with log.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE predictions_away RENAME TO predictions"))
    log.close()
    assert recent_predictions(url)["id"].tolist() == ["id00001"]


def test_log_counts_what_it_drops_when_the_buffer_is_full(tmp_path):
    dropped: list[int] = []
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}", flush_seconds=3600, buffer_max=5, on_dropped=dropped.append)
    for i in range(8):
        log.record(_record(i))
    assert log.dropped == 3
    assert sum(dropped) == 3
    assert log.backlog == 5
    log.close()


def test_feedback_and_live_accuracy(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, flush_seconds=3600)
    for i, code in enumerate([10, 10, 40, 2583]):
        log.record(_record(i, code=code))
    log.flush()
    engine = get_engine(url)
    assert record_feedback(engine, "id00000", 10)["correct"] is True
    assert record_feedback(engine, "id00001", 2705)["correct"] is False
    assert record_feedback(engine, "id00002", 40)["correct"] is True
    assert live_accuracy(engine, window=10) == {"window": 10, "labelled": 3, "accuracy": pytest.approx(2 / 3, abs=1e-6)}
    record_feedback(engine, "id00001", 10)  # a correction replaces the first label
    assert live_accuracy(engine, window=10)["accuracy"] == 1.0
    with pytest.raises(UnknownPrediction):
        record_feedback(engine, "missing", 10)
    with pytest.raises(ValueError, match="unknown prdtypecode"):
        record_feedback(engine, "id00003", 12345)
    log.close()


def _features(rng, n, length_mean=80, codes=(10, 40, 60, 1140, 2583), brightness=150.0, text=True):
    return pd.DataFrame(
        {
            "text_length": rng.normal(length_mean, 20, n).clip(1) if text else np.zeros(n),
            "image_width": np.full(n, 500.0),
            "image_height": np.full(n, 500.0),
            "image_brightness": rng.normal(brightness, 25, n),
            "confidence": rng.beta(5, 2, n),
            "language": rng.choice(["fr", "fr", "fr", "en", "de"], n) if text else np.full(n, "none"),
            "modality": np.full(n, "both" if text else "image"),
            "prdtypecode": rng.choice([str(c) for c in codes], n),
        }
    )


def test_psi_is_zero_for_equal_distributions_and_grows_with_shift():
    assert psi(np.array([50, 50]), np.array([50, 50])) == pytest.approx(0)
    assert psi(np.array([50, 50]), np.array([10, 90])) > psi(np.array([50, 50]), np.array([40, 60])) > 0


def test_drift_flags_shifted_windows_and_not_samples_of_the_reference():
    rng = np.random.default_rng(0)
    profile = build_profile(_features(rng, 1500))
    same = compare(profile, _features(rng, 300))
    assert same["drifted"] is False
    assert same["drifted_features"] == []
    books = compare(profile, _features(rng, 300, length_mean=300, codes=(10,)))
    assert books["drifted"]
    assert {"text_length", "prdtypecode"} <= set(books["drifted_features"])
    assert books["drift_score"] > same["drift_score"]
    images_only = compare(profile, _features(rng, 300, text=False))
    assert {"text_length", "language", "modality"} <= set(images_only["drifted_features"])
    darker = compare(profile, _features(rng, 300, brightness=60.0))
    assert darker["drifted_features"] == ["image_brightness"]


def test_drift_reports_features_without_enough_data_as_not_measured():
    rng = np.random.default_rng(1)
    profile = build_profile(_features(rng, 500))
    result = compare(profile, _features(rng, 10))
    assert result["drifted"] is False
    assert all(entry["drifted"] is None for entry in result["features"])
    assert {entry["feature"] for entry in result["features"]} >= set(NUMERIC_FEATURES)


def test_drift_report_is_a_self_contained_html_page(tmp_path):
    rng = np.random.default_rng(2)
    profile = build_profile(_features(rng, 800))
    recent = _features(rng, 300, codes=(10,))
    recent["created_at"] = pd.Timestamp("2026-11-26T12:00:00")
    result = compare(profile, recent)
    path = write_report(result, profile, recent, tmp_path / "r" / "drift.html", "rakuten-fusion:x")
    page = path.read_text()
    assert "DRIFT DETECTED" in page
    assert page.count("data:image/png;base64,") == len(result["features"])
    assert "http://" not in page
    assert "https://" not in page
    embedded = page.split('id="result">')[1].split("</script>")[0]
    import html

    assert json.loads(html.unescape(embedded))["drifted_features"] == result["drifted_features"]


def test_monitor_drift_cli_says_clearly_when_there_is_nothing_to_compare(capsys):
    from rakuten_classifier.cli import main

    assert main(["monitor", "accuracy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["labelled"] == 0
    code = main(["monitor", "drift"])
    assert code == 2
    assert "error" in capsys.readouterr().err


def test_predictions_table_is_created_with_the_rest_of_the_schema(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert {"predictions", "feedback", "products", "loads"} <= set(sa.inspect(engine).get_table_names())
    assert "top_probabilities" in predictions.c
