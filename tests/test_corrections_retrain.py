"""End to end: operators correct 50 products the models never saw; `rakuten retrain --dry-run` counts them,
and the retraining learns from them (the held-out split rule holding some out, as for any loaded row)."""

from __future__ import annotations

import json
import os
import subprocess

import pandas as pd
import pytest
from conftest import VENV_BIN

from rakuten_classifier.config import get_settings
from rakuten_classifier.data.corrections import Correction, record_correction

pytestmark = pytest.mark.slow
LOADED_ROWS = 1000
CORRECTED = 50


def test_fifty_corrections_are_counted_by_retrain_and_learned_from(sample_dir, tmp_path):
    settings = get_settings()  # the test's own data root (conftest's isolated_settings)
    # Three folds instead of five: what is checked is which rows count and are learned from, not the scores.
    env = dict(
        os.environ,
        BENTOML_HOME=str(tmp_path / "bentoml"),
        RAKUTEN_DATA_ROOT=str(settings.data_root),
        RAKUTEN_CV_FOLDS="3",
    )
    env.pop("MLFLOW_TRACKING_URI", None)  # set in this process by earlier in-process training (mlflow does)

    def rakuten(*args):
        done = subprocess.run([str(VENV_BIN / "rakuten"), *args, "--json"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    features = pd.read_csv(sample_dir / "X_train_update.csv", index_col=0, dtype=str, keep_default_na=False)
    labels = pd.read_csv(sample_dir / "Y_train_CVw08PX.csv", index_col=0)
    folder = tmp_path / "first"
    folder.mkdir()
    features.iloc[:LOADED_ROWS].to_csv(folder / "X_train_update.csv")
    labels.iloc[:LOADED_ROWS].to_csv(folder / "Y_train_CVw08PX.csv")
    (folder / "images").symlink_to(sample_dir / "images", target_is_directory=True)
    assert rakuten("data", "load", "--data-dir", str(folder))["inserted"] == LOADED_ROWS
    first = rakuten("retrain")
    assert first["promoted"] is True

    # Products the models never saw, corrected to their true category (as the page sends them: raw text, photo).
    stored = []
    for index in range(LOADED_ROWS, LOADED_ROWS + CORRECTED):
        product = features.iloc[index]
        photo = sample_dir / "images" / "image_train" / f"image_{product.imageid}_product_{product.productid}.jpg"
        correction = Correction(
            designation=product.designation,
            description=product.description,
            prdtypecode=int(labels.iloc[index]["prdtypecode"]),
            corrected_by="test",
            image=photo.read_bytes() if photo.is_file() else None,
            prediction_id=f"e2e{index}",
        )
        stored.append(record_correction(correction))
    held_out = sum(s["split"] == "test" for s in stored)
    assert 0 < held_out < CORRECTED  # the split rule holds some out, as it would any loaded row

    check = rakuten("retrain", "--min-new-rows", str(CORRECTED), "--dry-run")
    assert (check["new_labelled_rows"], check["new_corrected_rows"]) == (CORRECTED, CORRECTED)
    assert check["triggers"] == [f"{CORRECTED} new labelled rows >= {CORRECTED}"]
    assert check["trained"] is False

    learned = rakuten("retrain", "--min-new-rows", str(CORRECTED))
    assert learned["trained"] is True
    before, after = first["learned_from"], learned["learned_from"]
    # Every correction is a row of the new training data: learned from, or held out to measure it.
    assert (after["rows"] + after["held_out_rows"]) - (before["rows"] + before["held_out_rows"]) == CORRECTED
    assert after["rows"] - before["rows"] == CORRECTED - held_out
    assert after["held_out_rows"] - before["held_out_rows"] == held_out
    # Promoted, the corrections are no longer new; kept out by the gate, they still count.
    still_new = rakuten("retrain", "--min-new-rows", "1", "--dry-run")["new_labelled_rows"]
    assert still_new == (0 if learned["promoted"] else CORRECTED)
