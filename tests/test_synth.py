"""Synthetic catalogue: challenge layout, deterministic, category-dependent content."""

import numpy as np
import pandas as pd

from rakuten_classifier.cli import main
from rakuten_classifier.data.preprocessing import load_image
from rakuten_classifier.data.reader import read_challenge_dir


def test_synth_writes_readable_challenge_layout(tmp_path):
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(tmp_path / "s"),
                "--rows",
                "120",
                "--test-rows",
                "10",
                "--seed",
                "3",
                "--image-size",
                "96",
            ]
        )
        == 0
    )
    data = read_challenge_dir(tmp_path / "s")
    assert len(data.labelled) == 120
    assert len(data.products) == 130
    assert data.images_found == 130
    assert data.images_missing == 0
    assert data.labelled["prdtypecode"].nunique() == 27
    descriptions = data.products["description"]
    assert (descriptions == "").mean() > 0.15  # empty descriptions, as in the real data
    assert descriptions.str.contains("<p>").any()  # and HTML
    first = pd.read_csv(tmp_path / "s" / "X_train_update.csv")
    main(
        [
            "data",
            "synth",
            "--out",
            str(tmp_path / "t"),
            "--rows",
            "120",
            "--test-rows",
            "10",
            "--seed",
            "3",
            "--image-size",
            "96",
        ]
    )
    assert first.equals(pd.read_csv(tmp_path / "t" / "X_train_update.csv"))


def test_synthetic_images_depend_on_category(tmp_path):
    main(["data", "synth", "--out", str(tmp_path), "--rows", "300", "--seed", "1", "--image-size", "64"])
    labelled = read_challenge_dir(tmp_path).labelled
    means = {
        code: np.mean([np.asarray(load_image(p), dtype=float).mean(axis=(0, 1)) for p in group["image_path"]], axis=0)
        for code, group in labelled.groupby("prdtypecode")
    }
    distinct = {tuple(np.round(m / 20)) for m in means.values()}
    assert len(distinct) > 15  # mean colours differ across categories
