"""Data drift: a reference profile stored with each fusion model, compared with the prediction log.

Features (the same names as the prediction-log columns, so one function reads both):
  numeric      text_length, image_width, image_height, image_brightness, confidence
               -> two-sample Kolmogorov-Smirnov test + PSI on the reference's deciles
  categorical  language, modality, prdtypecode (the predicted category)
               -> chi-square test of homogeneity + PSI

A feature drifts when its shift is both significant (p < drift_p_value) and large
(PSI >= drift_psi_threshold): significance alone flags trivial shifts on big windows, PSI alone
flags noise on small ones. The drift score is the largest PSI over the features that could be
measured; the window drifts when any feature does.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..categories import CATEGORY_CODES
from ..data.preprocessing import load_image
from ..registry import model_path
from .prediction_log import recent_predictions
from .signals import detect_language, image_brightness

log = logging.getLogger(__name__)

PROFILE_FILE = "drift_profile.json"
NUMERIC_FEATURES = ("text_length", "image_width", "image_height", "image_brightness", "confidence")
CATEGORICAL_FEATURES = ("language", "modality", "prdtypecode")
# Values kept per numeric feature in the profile: enough for KS and deciles, small enough for JSON.
MAX_REFERENCE_VALUES = 5000
# Fewer observations than this on either side: the feature is reported, not tested.
MIN_OBSERVATIONS = 30


def reference_features(
    texts: list[str],
    image_paths: list[str | None],
    fused_proba: np.ndarray,
    max_images: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Prediction-log features of held-out rows, computed as the service computes them when serving."""
    rng = np.random.default_rng(seed)
    with_image = [i for i, path in enumerate(image_paths) if isinstance(path, str)]
    measured = (
        set(rng.choice(with_image, min(max_images, len(with_image)), replace=False).tolist()) if with_image else set()
    )
    rows = []
    for i, (text, path) in enumerate(zip(texts, image_paths, strict=True)):
        row = {
            "text_length": len(text),
            "language": detect_language(text),
            "modality": "both" if isinstance(path, str) and text else ("image" if isinstance(path, str) else "text"),
            "image_width": None,
            "image_height": None,
            "image_brightness": None,
            "prdtypecode": int(CATEGORY_CODES[int(np.argmax(fused_proba[i]))]),
            "confidence": float(np.max(fused_proba[i])),
        }
        if i in measured and isinstance(path, str):
            try:
                with Image.open(path) as header:
                    row["image_width"], row["image_height"] = header.size
                row["image_brightness"] = image_brightness(load_image(path))
            except Exception as exc:  # an unreadable file is a missing image here too
                log.warning("%s: unreadable image left out of the drift profile (%s)", path, exc)
        rows.append(row)
    return pd.DataFrame(rows)


def build_profile(features: pd.DataFrame, label_codes: pd.Series | None = None, seed: int = 0) -> dict:
    """Reference profile of a frame with the prediction-log feature columns."""
    rng = np.random.default_rng(seed)
    numeric = {}
    for name in NUMERIC_FEATURES:
        values = features[name].dropna().astype(float).to_numpy()
        if len(values) > MAX_REFERENCE_VALUES:
            values = rng.choice(values, MAX_REFERENCE_VALUES, replace=False)
        numeric[name] = [round(float(v), 4) for v in values]
    categorical = {
        name: {str(k): int(v) for k, v in features[name].dropna().astype(str).value_counts().items()}
        for name in CATEGORICAL_FEATURES
    }
    profile = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": len(features),
        "numeric": numeric,
        "categorical": categorical,
    }
    if label_codes is not None:
        profile["label_prior"] = {str(k): int(v) for k, v in label_codes.astype(int).astype(str).value_counts().items()}
    return profile


def save_profile(profile: dict, directory: Path) -> None:
    """Write the profile beside a model's files."""
    (Path(directory) / PROFILE_FILE).write_text(json.dumps(profile))


def load_profile(directory: Path) -> dict:
    """The profile stored in a model folder (FileNotFoundError names the folder)."""
    path = Path(directory) / PROFILE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {PROFILE_FILE}; this model was trained before drift profiles existed")
    return json.loads(path.read_text())


def _smoothed(counts: np.ndarray) -> np.ndarray:
    """Proportions with half a count added per bin, so empty bins do not make PSI infinite."""
    counts = counts.astype(float) + 0.5
    return counts / counts.sum()


def psi(expected_counts: np.ndarray, actual_counts: np.ndarray) -> float:
    """Population stability index between two binned distributions."""
    expected, actual = _smoothed(np.asarray(expected_counts)), _smoothed(np.asarray(actual_counts))
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _numeric_drift(reference: np.ndarray, recent: np.ndarray) -> dict:
    from scipy.stats import ks_2samp

    edges = np.unique(np.quantile(reference, np.linspace(0, 1, 11))[1:-1])
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    new_counts = np.bincount(np.searchsorted(edges, recent, side="right"), minlength=len(edges) + 1)
    result = ks_2samp(reference, recent)
    return {
        "test": "kolmogorov-smirnov",
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue),
        "psi": psi(ref_counts, new_counts),
        "reference_mean": float(np.mean(reference)),
        "recent_mean": float(np.mean(recent)),
    }


def _categorical_drift(reference: dict[str, int], recent: pd.Series) -> dict:
    from scipy.stats import chi2_contingency

    recent_counts = recent.astype(str).value_counts().to_dict()
    categories = sorted(set(reference) | set(recent_counts))
    table = np.array([[reference.get(c, 0) for c in categories], [recent_counts.get(c, 0) for c in categories]])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        statistic, p_value = 0.0, 1.0
    else:
        statistic, p_value, _, _ = chi2_contingency(table)
    return {
        "test": "chi-square",
        "statistic": float(statistic),
        "p_value": float(p_value),
        "psi": psi(table[0], table[1]),
        "reference_top": max(reference, key=lambda value: reference[value]) if reference else None,
        "recent_top": max(recent_counts, key=lambda value: recent_counts[value]) if recent_counts else None,
    }


def compare(profile: dict, recent: pd.DataFrame, psi_threshold: float = 0.25, p_value: float = 0.01) -> dict:
    """Drift of the recent prediction-log rows against the reference profile, feature by feature."""
    features: list[dict[str, Any]] = []
    for name in NUMERIC_FEATURES:
        reference = np.asarray(profile["numeric"].get(name, []), dtype=float)
        values = recent[name].dropna().astype(float).to_numpy() if name in recent else np.array([])
        entry: dict[str, Any] = {
            "feature": name,
            "kind": "numeric",
            "n_reference": len(reference),
            "n_recent": len(values),
        }
        if len(reference) >= MIN_OBSERVATIONS and len(values) >= MIN_OBSERVATIONS:
            entry.update(_numeric_drift(reference, values))
        features.append(entry)
    for name in CATEGORICAL_FEATURES:
        reference = profile["categorical"].get(name, {})
        values = recent[name].dropna() if name in recent else pd.Series([], dtype=str)
        entry = {
            "feature": name,
            "kind": "categorical",
            "n_reference": sum(reference.values()),
            "n_recent": len(values),
        }
        if entry["n_reference"] >= MIN_OBSERVATIONS and len(values) >= MIN_OBSERVATIONS:
            entry.update(_categorical_drift(reference, values))
        features.append(entry)
    for entry in features:
        if "psi" not in entry:
            entry.update(drifted=None, note=f"fewer than {MIN_OBSERVATIONS} observations on one side")
        else:
            entry["drifted"] = bool(entry["p_value"] < p_value and entry["psi"] >= psi_threshold)
    measured = [e for e in features if e["drifted"] is not None]
    times = pd.to_datetime(recent["created_at"]) if "created_at" in recent and len(recent) else None
    return {
        "window": len(recent),
        "from": times.min().isoformat() if times is not None else None,
        "to": times.max().isoformat() if times is not None else None,
        "drift_score": round(max((e["psi"] for e in measured), default=0.0), 6),
        "drifted": any(e["drifted"] for e in measured),
        "drifted_features": [e["feature"] for e in measured if e["drifted"]],
        "psi_threshold": psi_threshold,
        "p_value_threshold": p_value,
        "features": features,
    }


def drift_of_recent(settings, fusion_tag: str, last: int | None = None, since: datetime | None = None):
    """(result, profile, recent rows) for the logged window against a fusion version's profile; None if no rows.

    The one place the service's gauge, `rakuten monitor drift` and `rakuten retrain` compute drift.
    """
    recent = recent_predictions(settings.database_url, last=last, since=since)
    if recent.empty:
        return None
    profile = load_profile(model_path(fusion_tag))
    result = compare(profile, recent, settings.drift_psi_threshold, settings.drift_p_value)
    result["model"] = fusion_tag
    return result, profile, recent
