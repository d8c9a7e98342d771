"""Prometheus metrics beyond BentoML's built-ins, exported at /metrics (bentoml.metrics handles multi-process mode).

The dashboards and alerts under deploy/ query these names (tests/test_monitoring_http.py checks it).
"""

from __future__ import annotations

import bentoml

PREDICTIONS = bentoml.metrics.Counter(
    name="rakuten_predictions",
    documentation="Answered predictions by endpoint, predicted category and modality",
    labelnames=["endpoint", "prdtypecode", "modality"],
)
CONFIDENCE = bentoml.metrics.Histogram(
    name="rakuten_prediction_confidence",
    documentation="Probability of the predicted category",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
FALLBACKS = bentoml.metrics.Counter(
    name="rakuten_modality_fallbacks",
    documentation="Multimodal predictions answered from one modality",
    labelnames=["missing"],
)
DRIFT_SCORE = bentoml.metrics.Gauge(
    name="rakuten_drift_score",
    documentation="Largest PSI of the recent window against the reference profile",
    multiprocess_mode="mostrecent",
)
DRIFT_DETECTED = bentoml.metrics.Gauge(
    name="rakuten_drift_detected",
    documentation="1 when a feature drifted in the recent window",
    multiprocess_mode="mostrecent",
)
DRIFT_FEATURE_PSI = bentoml.metrics.Gauge(
    name="rakuten_drift_feature_psi",
    documentation="PSI of one feature in the recent window",
    labelnames=["feature"],
    multiprocess_mode="mostrecent",
)
MODEL_INFO = bentoml.metrics.Gauge(
    name="rakuten_model_info",
    documentation="1 for the model tags now serving (0 for replaced ones)",
    labelnames=["fusion", "text", "image"],
    multiprocess_mode="mostrecent",
)
LIVE_ACCURACY = bentoml.metrics.Gauge(
    name="rakuten_live_accuracy",
    documentation="Accuracy over the latest feedback window",
    multiprocess_mode="mostrecent",
)
FEEDBACK = bentoml.metrics.Counter(
    name="rakuten_feedback",
    documentation="Feedback received, by whether the prediction was right",
    labelnames=["correct"],
)
LOG_BACKLOG = bentoml.metrics.Gauge(
    name="rakuten_prediction_log_backlog",
    documentation="Prediction-log rows not yet written",
    multiprocess_mode="mostrecent",
)
EMBEDDING_MEMORY = bentoml.metrics.Counter(
    name="rakuten_text_embedding_memory",
    documentation="Texts the text worker embedded (miss) or found in its memory of recent embeddings (hit)",
    labelnames=["result"],
)
LOG_DROPPED = bentoml.metrics.Counter(
    name="rakuten_prediction_log_dropped", documentation="Prediction-log rows dropped (buffer full)"
)


def set_model_info(fusion_tag: str, config: dict, value: float) -> None:
    """Mark a fusion version (and the text and image versions it names) as serving (1) or replaced (0)."""
    MODEL_INFO.labels(fusion=fusion_tag, text=config["text_model"], image=config["image_model"]).set(value)


def count_prediction(endpoint: str, answer: dict, modality: str) -> None:
    """Count one answered prediction: by category and modality, its confidence, and a one-modality fallback."""
    PREDICTIONS.labels(endpoint=endpoint, prdtypecode=str(answer["prdtypecode"]), modality=modality).inc()
    CONFIDENCE.observe(answer["probability"])
    if endpoint in ("multimodal", "batch") and modality != "both":
        FALLBACKS.labels(missing="image" if modality == "text" else "text").inc()
