"""Benchmark: the text model's encoder channel (issue 26), every variant under the project's own protocol.

    PYTHONPATH=$PWD/src .venv/bin/python benchmarks/text_encoder_variants.py \\
        [--data-dir ../shared/rakuten-sample] [--image-oof data/image_oof.npz] [--variants ...] \\
        [--cost] [--held-out] [--full-size] [--json]

Accuracy (default): for each variant (one encoder or two side by side, over the whole product text, a
cut of it or the title alone, and the arithmetic or geometric mean with TF-IDF), the out-of-fold
weighted F1 on the learning rows of the encoder head alone, of the text channel (the combination
fitted on the other folds: nested) and of the fusion with the current image model (the candidate
`select_fusion` would pick, scored by nested cross-validation), with the fit time of the text model
(TF-IDF and the head, embeddings cached). The image model is trained once (the project's default
options) and its out-of-fold and held-out probabilities are kept in ``--image-oof``. With
``--held-out`` (only once the choice is made on the figures above) the held-out split is scored too.

Cost (``--cost``): each encoder's speed over uncached texts on 2 threads (the challenge's 84,916 texts
must embed within 15 minutes: 95 texts/s) and its CPU time per text, and the serving cost per product
of each variant (TF-IDF, embedding, head and combination; 1 thread, batch 1, median over held-out texts).
Full size (``--full-size``): each encoder of the variants over the 84,916 texts of a challenge-size
catalogue built from the sample (benchmarks/bench_full_scale.py), uncached, on 2 threads, with the load
average before and after. Embeddings are cached under the feature cache (RAKUTEN_FEATURE_CACHE_DIR).
``--runtime package`` times the package's own numpy forward pass and tokenizer instead of ONNX Runtime
and the compiled tokenizer (what training and serving run, issue 36); ``--runtime onnx package`` both,
one after the other; ``--texts N`` embeds the catalogue's first N texts only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from rakuten_classifier.config import Settings
from rakuten_classifier.data.preprocessing import product_text
from rakuten_classifier.data.reader import X_TRAIN_FILE
from rakuten_classifier.modeling.calibration import fit_temperature, softmax
from rakuten_classifier.modeling.fusion import fuse, has_both
from rakuten_classifier.modeling.fusion_selection import candidates, nested_scores
from rakuten_classifier.modeling.scores import weighted_f1
from rakuten_classifier.modeling.text import TfidfParams, TfidfTextModel, text_pipeline
from rakuten_classifier.modeling.text_encoder import (
    COMBINATION_METHODS,
    Combination,
    EncoderHead,
    SentenceEncoder,
    encoder_spec,
)
from rakuten_classifier.modeling.text_encoder_fitting import (
    CachedSentenceEncoder,
    cross_fit_head,
    fit_combination,
    nested_combination,
)
from rakuten_classifier.modeling.text_encoder_onnx import encoder_graph
from rakuten_classifier.modeling.tfidf_cross_fit import cross_fit_tfidf
from rakuten_classifier.pipeline.protocol import learning_folds
from rakuten_classifier.pipeline.training_data import TrainingData, load_training_data

# label -> [(encoder, characters kept (0: all), input: "text" the product text or "title" its title)];
# two encoders side by side feed one head with both embeddings.
Part = tuple[str, int, str]
VARIANTS: dict[str, list[Part]] = {
    "USE, whole text": [("use-m3", 0, "text")],
    "USE, 300 chars": [("use-m3", 300, "text")],
    "USE, 600 chars": [("use-m3", 600, "text")],
    "USE, 1000 chars": [("use-m3", 1000, "text")],
    "USE, title alone": [("use-m3", 0, "title")],
    "USE, whole text + title": [("use-m3", 0, "text"), ("use-m3", 0, "title")],
    "e5-small, 60 chars": [("e5-small", 60, "text")],
    "e5-small, 120 chars": [("e5-small", 120, "text")],
    "e5-small, 300 chars": [("e5-small", 300, "text")],
    "e5-small, title cut to 120 chars": [("e5-small", 120, "title")],
    "USE whole + e5-small 60 chars": [("use-m3", 0, "text"), ("e5-small", 60, "text")],
    "USE whole + e5-small 120 chars": [("use-m3", 0, "text"), ("e5-small", 120, "text")],
    "USE whole + e5-small 300 chars": [("use-m3", 0, "text"), ("e5-small", 300, "text")],
}
FULL_SIZE_TEXTS = 84_916
SPEED_TEXTS = 256  # uncached texts embedded to time an encoder
SERVED_TEXTS = 40  # held-out texts answered one by one to time a variant


def f1(labels: np.ndarray, proba: np.ndarray) -> float:
    return round(weighted_f1(labels, proba.argmax(axis=1)), 4)


def title(text: str) -> str:
    return text.partition("\n")[0]


def inputs(texts: list[str], part: Part) -> list[str]:
    return [title(t) for t in texts] if part[2] == "title" else texts


def image_probabilities(data: TrainingData, folds: np.ndarray, settings: Settings, path: Path) -> dict[str, np.ndarray]:
    """The default image model's out-of-fold (learning rows) and held-out probabilities, trained once and kept."""
    learning, test = data.learning(), data.split("test")
    if path.is_file():
        with np.load(path) as stored:
            if np.array_equal(stored["learning_ids"], learning["productid"].to_numpy()):
                return {"oof": stored["oof"], "test": stored["test"]}
    from rakuten_classifier.modeling.image.options import ImageTrainingOptions
    from rakuten_classifier.modeling.image.training import fit_image_model
    from rakuten_classifier.pipeline.scoring import image_proba_for_paths

    features = settings.features_dir
    model, oof, _ = fit_image_model(
        learning["image_path"].tolist(),
        learning["prdtypecode"].astype(int).tolist(),
        folds,
        ImageTrainingOptions.from_settings(settings),
        cache_dir=features,
    )
    held_out = image_proba_for_paths(model, test["image_path"].tolist(), features)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, learning_ids=learning["productid"].to_numpy(), oof=oof, test=held_out)
    return {"oof": oof, "test": held_out}


def best_fusion(text: np.ndarray, image: np.ndarray, y: np.ndarray, folds: np.ndarray, seed: int) -> tuple:
    """(candidate name, its nested scores, its fitter): the one `select_fusion` would pick."""
    fitters = candidates(seed)
    table = {name: nested_scores(text, image, y, folds, fit) for name, fit in fitters.items()}
    name = max(table, key=lambda n: table[n]["weighted_f1_with_image"])
    return name, table[name], fitters[name]


def median_ms(call: Callable[[int], object], count: int) -> float:
    call(0)  # warm-up
    times = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def accuracy(args: argparse.Namespace, settings: Settings, data: TrainingData) -> list[dict]:
    learning, test = data.learning(), data.split("test")
    folds = learning_folds(data, settings)
    y, y_test = learning["label_index"].to_numpy(), test["label_index"].to_numpy()
    texts, test_texts = learning["text"].tolist(), test["text"].tolist()
    codes = learning["prdtypecode"].astype(int).tolist()
    image = image_probabilities(data, folds, settings, args.image_oof)
    both = has_both(np.zeros_like(image["oof"]), image["oof"])

    started = time.perf_counter()
    tfidf, tfidf_oof = cross_fit_tfidf(texts, codes, folds)
    tfidf_s = time.perf_counter() - started
    tfidf_proba = softmax(tfidf_oof, fit_temperature(tfidf_oof, y))
    name, nested, fit = best_fusion(tfidf_proba, image["oof"], y, folds, settings.seed)
    row: dict = {"variant": "TF-IDF alone (today)", "text_oof": f1(y, tfidf_proba), "fused_oof": nested["weighted_f1"]}
    row.update({"fusion": name, "fit_s": round(tfidf_s, 1)})
    if args.held_out:
        tfidf_test = softmax(tfidf.scores(test_texts), fit_temperature(tfidf_oof, y))
        config = fit(tfidf_proba[both], image["oof"][both], y[both])
        row.update(
            {"text_test": f1(y_test, tfidf_test), "fused_test": f1(y_test, fuse(tfidf_test, image["test"], config))}
        )
    rows = [row]
    print(json.dumps(row), file=sys.stderr, flush=True)

    for label in args.variants:
        parts = VARIANTS[label]
        started = time.perf_counter()
        encoders = [CachedSentenceEncoder(name, chars, 2, settings.features_dir) for name, chars, _ in parts]
        x = np.hstack([e.embed(inputs(texts, part)) for e, part in zip(encoders, parts, strict=True)])
        head, head_oof, c_table = cross_fit_head(x, y, folds, settings.seed)
        head_s = time.perf_counter() - started
        for method in COMBINATION_METHODS:
            text_oof = nested_combination(tfidf_oof, head_oof, y, folds, method)
            combination = fit_combination(tfidf_oof, head_oof, y, method)
            name, nested, fit = best_fusion(text_oof, image["oof"], y, folds, settings.seed)
            row = {
                "variant": f"{label}, {method} mean",
                "encoder_oof": round(weighted_f1(y, head_oof.argmax(1)), 4),
                "text_oof": f1(y, text_oof),
                "fused_oof": nested["weighted_f1"],
                "fusion": name,
                "head_C": head.C,
                "head_c_grid": c_table,
                "tfidf_weight": combination.tfidf_weight,
                "fit_s": round(tfidf_s + head_s, 1),
            }
            if args.held_out:
                x_test = np.hstack([e.embed(inputs(test_texts, part)) for e, part in zip(encoders, parts, strict=True)])
                text_test = combination.proba(tfidf.scores(test_texts), head.scores(x_test))
                config = fit(text_oof[both], image["oof"][both], y[both])
                row["encoder_test"] = round(weighted_f1(y_test, head.scores(x_test).argmax(1)), 4)
                row["text_test"] = f1(y_test, text_test)
                row["fused_test"] = f1(y_test, fuse(text_test, image["test"], config))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def encoder_of(runtime: str, name: str, max_chars: int, threads: int) -> SentenceEncoder:
    """The encoder on ``runtime``: ONNX Runtime where it has a graph (what the project runs), or the package's."""
    graph = encoder_graph(encoder_spec(name)) if runtime == "onnx" else None
    return SentenceEncoder(name, max_chars, threads=threads, graph=graph)


def cost(args: argparse.Namespace, data: TrainingData) -> list[dict]:
    learning, test = data.learning(), data.split("test")
    texts = data.products["text"].sample(SPEED_TEXTS, random_state=0).tolist()
    served = test["text"].tolist()[:SERVED_TEXTS]
    tfidf = TfidfTextModel(
        text_pipeline(TfidfParams()).fit(learning["text"].tolist(), learning["label_index"].to_numpy()),
        1.0,
        TfidfParams(),
    )
    rows = [
        {"variant": "TF-IDF alone (today)", "serving_ms": median_ms(lambda i: tfidf.predict_proba([served[i]]), 40)}
    ]
    speeds: dict[Part, dict] = {}
    for label in args.variants:
        parts = VARIANTS[label]
        for part in parts:
            if part not in speeds:
                encoder = encoder_of(args.runtime[0], part[0], part[1], threads=2)
                encoder.embed(texts[:4])
                wall, cpu = time.perf_counter(), time.process_time()
                encoder.embed(inputs(texts, part))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                speeds[part] = {"texts_per_s": len(texts) / wall, "cpu_ms": 1000 * cpu / len(texts)}
        throughput = 1 / sum(1 / speeds[part]["texts_per_s"] for part in parts)
        single = [encoder_of(args.runtime[0], name, chars, threads=1) for name, chars, _ in parts]
        # What EncoderChannel.proba runs; a head's cost does not depend on its values.
        head = EncoderHead(np.zeros((27, sum(e.spec.dim for e in single))), np.zeros(27), 0.01)

        def serve(i: int, single: list[SentenceEncoder] = single, head: EncoderHead = head, parts=parts) -> None:
            x = np.hstack([e.embed(inputs([served[i]], part)) for e, part in zip(single, parts, strict=True)])
            Combination(1.0, 1.0, 0.5).proba(tfidf.scores([served[i]]), head.scores(x))

        row = {
            "variant": label,
            "texts_per_s_2_threads": round(throughput, 1),
            "full_size_minutes": round(FULL_SIZE_TEXTS / throughput / 60, 1),
            "cpu_ms_per_text": round(sum(speeds[part]["cpu_ms"] for part in parts), 2),
            "serving_ms": median_ms(serve, SERVED_TEXTS),
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def full_size(args: argparse.Namespace) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_full_scale import build_catalogue

    with tempfile.TemporaryDirectory() as work:
        build_catalogue(args.data_dir, Path(work), FULL_SIZE_TEXTS, 0, 0.0, seed=0)  # texts only, no photos
        x = pd.read_csv(Path(work) / X_TRAIN_FILE, index_col=0, keep_default_na=False)
    texts = [
        product_text(title, description) for title, description in zip(x["designation"], x["description"], strict=True)
    ]
    texts = texts[: args.texts]
    rows = []
    parts = dict.fromkeys(part for label in args.variants for part in VARIANTS[label])
    for part, runtime in [(part, runtime) for part in parts for runtime in args.runtime]:
        encoder = encoder_of(runtime, part[0], part[1], threads=2)
        chunk = 2048
        load_before = os.getloadavg()
        wall, cpu = time.perf_counter(), time.process_time()
        for start in tqdm(range(0, len(texts), chunk), desc=f"{part[0]} {part[1]} chars", unit_scale=chunk):
            encoder.embed(inputs(texts[start : start + chunk], part))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        row = {"encoder": part[0], "max_chars": part[1], "input": part[2], "runtime": runtime, "texts": len(texts)}
        row.update({"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()})
        row.update({"mean_chars": round(float(np.mean([len(t) for t in texts])), 1), "wall_s": round(wall, 1)})
        row.update({"texts_per_s": round(len(texts) / wall, 1), "cpu_ms_per_text": round(1000 * cpu / len(texts), 2)})
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/rakuten-sample"))
    parser.add_argument("--image-oof", type=Path, default=Path("data/image_oof.npz"))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="VARIANT")
    parser.add_argument("--cost", action="store_true", help="time the encoders and serving instead")
    parser.add_argument("--held-out", action="store_true", help="also score the held-out split (after choosing)")
    parser.add_argument("--full-size", action="store_true", help="embed 84,916 challenge-size texts instead")
    parser.add_argument("--runtime", nargs="+", choices=("onnx", "package"), default=["onnx"], help="see above")
    parser.add_argument("--texts", type=int, default=FULL_SIZE_TEXTS, help="with --full-size: the first N texts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings()
    data = load_training_data(args.data_dir, settings=settings)
    if args.full_size:
        rows = full_size(args)
    else:
        rows = cost(args, data) if args.cost else accuracy(args, settings, data)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return 0
    columns = list(dict.fromkeys(key for row in rows for key in row if key != "head_c_grid"))
    sys.stdout.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
    for row in rows:
        sys.stdout.write("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
