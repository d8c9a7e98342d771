"""In-process prediction with the production models: the Python API and `rakuten predict` (a submission file).

Both build their answers with the service's own `build_answer`, so they compute what the service answers.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from ..data.preprocessing import load_image, product_text
from ..data.reader import X_TEST_FILE, X_TRAIN_FILE, DataError, read_challenge_dir
from ..modeling.explain import text_explanation
from ..modeling.image.class_maps import image_maps
from ..modeling.loading import served_image_model_for, text_model_for
from ..registry import Trio, read_fusion_config, require_production_trio
from .answers import build_answer, explained_class, image_part


def predict_multimodal(
    designation: str | None = None,
    description: str | None = "",
    image: Image.Image | str | Path | bytes | None = None,
    text_weight: float | None = None,
    top_k: int = 5,
    trio: Trio | None = None,
    explain: bool = False,
) -> dict:
    """Classify one product from its text and/or image with the production models; with ``explain``, say why
    (the answer's ``explanation``, as the service's: serving/answers.py)."""
    trio = trio or require_production_trio()
    config = read_fusion_config(trio.fusion)
    text = product_text(designation, description)
    picture = None if image is None else load_image(str(image) if isinstance(image, Path) else image)
    if not text and picture is None:
        raise ValueError("give a designation, an image, or both")
    if not 1 <= top_k <= len(config["classes"]):
        raise ValueError(f"top_k must lie in 1..{len(config['classes'])}")
    text_model, image_model = text_model_for(trio.text), served_image_model_for(trio.image)
    text_proba = text_model.predict_proba([text])[0] if text else None
    maps = image_maps(image_model, [picture])[0] if picture is not None and explain else None
    if picture is None:
        image_proba = None
    else:
        image_proba = maps.pop("proba") if maps is not None else image_model.predict_proba([picture])[0]
    tags = {"text": trio.text, "image": trio.image, "fusion": trio.fusion}
    answer = build_answer(text_proba, image_proba, config, text_weight, top_k, tags, explain)
    if explain:
        chosen = explained_class(answer)
        answer["explanation"]["text"] = text_explanation(text_model, text, chosen) if text else None
        answer["explanation"]["image"] = None if maps is None else image_part(maps, chosen)
    return answer


SOURCES = {"test": X_TEST_FILE, "train": X_TRAIN_FILE}


def products_to_score(data_dir: str | Path, source: str = "test") -> pd.DataFrame:
    """The products of the challenge folder's X file named by ``source`` (``test`` or ``train``), as
    `rakuten predict` scores them; DataError when that file is absent or empty."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {sorted(SOURCES)}, not {source!r}")
    products = read_challenge_dir(data_dir).products
    products = products[products["source"] == source]
    if products.empty:
        other = "train" if source == "test" else "test"
        raise DataError(
            f"{data_dir}: no products in {SOURCES[source]} (absent or empty); --source {other} reads {SOURCES[other]}"
        )
    return products


def predict_file(data_dir: str | Path, out: str | Path, source: str = "test", batch_size: int = 64) -> dict:
    """Score every product of the challenge X file with the production models; write the submission CSV.

    The CSV has the X file's index as first, unnamed column and a ``prdtypecode`` column, one row per
    product in the X file's order. Products without an image file are decided by the text. Every
    answer is built by the service's own `build_answer` (the same fusion as /predict_multimodal).
    """
    products = products_to_score(data_dir, source)
    started = time.perf_counter()
    trio = require_production_trio()
    config = read_fusion_config(trio.fusion)
    text_model, image_model = text_model_for(trio.text), served_image_model_for(trio.image)
    tags = {"text": trio.text, "image": trio.image, "fusion": trio.fusion}

    def score(batch: pd.DataFrame) -> list[int]:
        texts = [product_text(d, s) for d, s in zip(batch["designation"], batch["description"], strict=True)]
        text_proba = text_model.predict_proba(texts)
        with_image = [i for i, path in enumerate(batch["image_path"]) if isinstance(path, str)]
        image_proba: dict[int, np.ndarray] = {}
        if with_image:
            images = [load_image(Path(batch["image_path"].iloc[i]).read_bytes()) for i in with_image]
            image_proba = dict(zip(with_image, image_model.predict_proba(images), strict=True))
        return [
            build_answer(text_proba[i], image_proba.get(i), config, None, 1, tags)["prdtypecode"]
            for i in range(len(batch))
        ]

    # Batches are scored on one thread per core, each running its batch's models single-threaded: the image
    # model is loaded with one runtime thread (the service's layout), so one thread of batches kept one
    # core busy (10,000-product stand-in, 2026-12-04: 37 products/s; docs/benchmarks.md).
    codes: list[int] = []
    batches = [products.iloc[start : start + batch_size] for start in range(0, len(products), batch_size)]
    progress = tqdm(total=len(products), desc=f"predicting {SOURCES[source]}", unit="product", disable=None)
    with ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="predict") as pool, progress:
        for batch, batch_codes in zip(batches, pool.map(score, batches), strict=True):
            codes.extend(batch_codes)
            progress.update(len(batch))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    submission = pd.DataFrame({"prdtypecode": codes}, index=products["row_index"].to_numpy())
    submission.to_csv(out)
    return {
        "out": str(out),
        "rows": len(submission),
        "with_image": int(products["image_path"].notna().sum()),
        "source": SOURCES[source],
        "models": tags,
        "seconds": round(time.perf_counter() - started, 1),
    }
