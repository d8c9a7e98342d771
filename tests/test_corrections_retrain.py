"""End to end: operators correct 50 products the models never saw; `rakuten retrain --dry-run` counts them,
and the retraining learns from them (the held-out split rule holding some out, as for any loaded row).

The production models are a copy of the session's tiny trio (conftest.py's `tiny`), trained from the rows
of its database (copied too): what is checked is which rows count and are learned from, not the scores.
"""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import TINY_SETTINGS, rakuten_here

from rakuten_classifier.config import get_settings
from rakuten_classifier.data.corrections import Correction, record_correction

pytestmark = [pytest.mark.slow, pytest.mark.training]
CORRECTED = 50


def test_fifty_corrections_are_counted_by_retrain_and_learned_from(tiny, sample_dir, tmp_path, monkeypatch):
    home, data_root = tiny.copy(tmp_path)
    monkeypatch.setenv("RAKUTEN_DATA_ROOT", str(data_root))  # the corrections go to the copied database
    get_settings.cache_clear()

    def rakuten(*args):
        """`rakuten ARGS --json` in this process (the retraining too), against the copied store."""
        return rakuten_here(home, *args, **TINY_SETTINGS)

    def dry_run(*args):
        return rakuten("retrain", "--dry-run", *args)

    before = tiny.result["production"]["metadata"]["learned_from"]  # what the production models learned from
    assert dry_run("--min-new-rows", "1")["new_labelled_rows"] == 0

    # Products the models never saw, corrected to their true category (as the page sends them: raw text, photo).
    features = pd.read_csv(sample_dir / "X_train_update.csv", index_col=0, dtype=str, keep_default_na=False)
    features.index = features.index.astype(int)  # the row numbers, as in the labels file
    labels = pd.read_csv(sample_dir / "Y_train_CVw08PX.csv", index_col=0)
    seen = set(pd.read_csv(tiny.rows / "X_train_update.csv", index_col=0).index)
    unseen = [index for index in features.index if index not in seen][:CORRECTED]
    stored = []
    for index in unseen:
        product = features.loc[index]
        photo = sample_dir / "images" / "image_train" / f"image_{product.imageid}_product_{product.productid}.jpg"
        correction = Correction(
            designation=product.designation,
            description=product.description,
            prdtypecode=int(labels.loc[index, "prdtypecode"]),
            corrected_by="test",
            image=photo.read_bytes() if photo.is_file() else None,
            prediction_id=f"e2e{index}",
        )
        stored.append(record_correction(correction))
    held_out = sum(s["split"] == "test" for s in stored)
    assert 0 < held_out < CORRECTED  # the split rule holds some out, as it would any loaded row

    check = dry_run("--min-new-rows", str(CORRECTED))
    assert (check["new_labelled_rows"], check["new_corrected_rows"]) == (CORRECTED, CORRECTED)
    assert check["triggers"] == [f"{CORRECTED} new labelled rows >= {CORRECTED}"]
    assert check["trained"] is False

    learned = rakuten("retrain", "--min-new-rows", str(CORRECTED))
    assert learned["trained"] is True
    after = learned["learned_from"]
    # Every correction is a row of the new training data: learned from, or held out to measure it.
    assert (after["rows"] + after["held_out_rows"]) - (before["rows"] + before["held_out_rows"]) == CORRECTED
    assert after["rows"] - before["rows"] == CORRECTED - held_out
    assert after["held_out_rows"] - before["held_out_rows"] == held_out
    # Promoted, the corrections are no longer new; kept out by the gate, they still count.
    still_new = dry_run("--min-new-rows", "1")["new_labelled_rows"]
    assert still_new == (0 if learned["promoted"] else CORRECTED)
