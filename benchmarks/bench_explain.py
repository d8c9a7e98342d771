"""Benchmark: what `explain` adds to one client's /predict_multimodal latency, on held-out sample products;
and what the class maps' second output costs the image graph when they are not asked for.

    .venv/bin/python benchmarks/bench_explain.py --url http://127.0.0.1:3000 [--rounds 60] [--json]
    .venv/bin/python benchmarks/bench_explain.py --url URL --compare-url OTHER_URL [--rounds 60]
    .venv/bin/python benchmarks/bench_explain.py --graph MODEL_DIR [--rounds 200]

HTTP: one client, calls one after the other, each product asked without and with ``explain`` in turn
(the order alternating), so both see the same products and the same machine load. Reported: p50 and
p95 of each, and the p50 of the paired differences (with minus without, same product, back to back).

Compare: explain off on two servers of the same models (this code and another, e.g. main's, which
has no ``explain`` field), called in turn with the same products: p50 of each and of the differences.

Graph (a saved image model folder): one ONNX Runtime thread, batch 1, the stored graph asked for its
logits alone, for logits and class maps, and the same graph with the class-map output removed (a
graph as exported before it), interleaved call by call; the p50 of each.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx
import numpy as np

from rakuten_classifier.pipeline.training_data import load_training_data

SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "rakuten-sample"


def held_out_products(data_dir: Path, count: int) -> list[tuple[dict, bytes]]:
    """Form fields and photo of the first ``count`` held-out (split 'test') products with a photo."""
    rows = load_training_data(data_dir).split("test").dropna(subset=["image_path"]).head(count)
    return [
        ({"designation": r.designation, "description": r.description}, Path(r.image_path).read_bytes())
        for r in rows.itertuples()
    ]


def timed_call(client: httpx.Client, form: dict, image: bytes, explain: bool | None) -> float:
    """Milliseconds of one /predict_multimodal call (an answer other than 200 stops the benchmark);
    ``explain`` None sends no such field (a server without it)."""
    started = time.perf_counter()
    fields = form if explain is None else {**form, "explain": "true" if explain else "false"}
    answer = client.post("/predict_multimodal", data=fields, files={"image": ("p.jpg", image, "image/jpeg")})
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 200 or ("explanation" in answer.json()) != bool(explain):
        raise SystemExit(f"unexpected answer {answer.status_code}: {answer.text[:300]}")
    return elapsed


def measure(url: str, products: list[tuple[dict, bytes]], rounds: int, warmup: int) -> dict:
    off, on = [], []
    with httpx.Client(base_url=url, timeout=120) as client:
        for form, image in products[:warmup]:
            timed_call(client, form, image, False)
            timed_call(client, form, image, True)
        for number in range(rounds):
            form, image = products[number % len(products)]
            first = number % 2 == 0  # alternate which goes first
            pair = {
                first: timed_call(client, form, image, first),
                not first: timed_call(client, form, image, not first),
            }
            off.append(pair[False])
            on.append(pair[True])
    off_ms, on_ms = np.asarray(off), np.asarray(on)

    def summary(ms: np.ndarray) -> dict:
        return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1)}

    return {
        "rounds": rounds,
        "explain_off": summary(off_ms),
        "explain_on": summary(on_ms),
        "added_p50_ms": round(float(np.percentile(on_ms, 50) - np.percentile(off_ms, 50)), 1),
        "paired_difference_p50_ms": round(float(np.percentile(on_ms - off_ms, 50)), 1),
    }


def compare_off(url: str, other_url: str, products: list[tuple[dict, bytes]], rounds: int, warmup: int) -> dict:
    here, there = [], []
    with httpx.Client(base_url=url, timeout=120) as client, httpx.Client(base_url=other_url, timeout=120) as other:
        for form, image in products[:warmup]:
            timed_call(client, form, image, False)
            timed_call(other, form, image, None)
        for number in range(rounds):
            form, image = products[number % len(products)]
            if number % 2 == 0:
                here.append(timed_call(client, form, image, False))
                there.append(timed_call(other, form, image, None))
            else:
                there.append(timed_call(other, form, image, None))
                here.append(timed_call(client, form, image, False))
    here_ms, there_ms = np.asarray(here), np.asarray(there)
    return {
        "rounds": rounds,
        "explain_off_p50_ms": round(float(np.percentile(here_ms, 50)), 1),
        "other_p50_ms": round(float(np.percentile(there_ms, 50)), 1),
        "paired_difference_p50_ms": round(float(np.percentile(here_ms - there_ms, 50)), 1),
    }


def measure_graph(directory: Path, rounds: int) -> dict:
    import onnx
    import onnxruntime as ort

    from rakuten_classifier.modeling.image.onnx_runtime import CLASS_MAPS, ONNX_FILE, OnnxImageClassifier

    served = OnnxImageClassifier.load(directory, threads=1)
    graph = onnx.load(directory / ONNX_FILE)
    kept = [output for output in graph.graph.output if output.name != CLASS_MAPS]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    options = served.session.get_session_options()
    without = ort.InferenceSession(graph.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    size = served.geometry.crop
    pixels = {"pixels": np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)}
    calls = {
        "graph_without_class_maps_ms": lambda: without.run(["logits"], pixels),
        "logits_only_ms": lambda: served.session.run(["logits"], pixels),
        "logits_and_class_maps_ms": lambda: served.session.run(["logits", CLASS_MAPS], pixels),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    for number in range(rounds + 5):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if number >= 5:  # the first calls warm the sessions up
                times[name].append((time.perf_counter() - started) * 1000)
    return {"rounds": rounds, **{name: round(float(np.percentile(ms, 50)), 2) for name, ms in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--data-dir", type=Path, default=SAMPLE)
    parser.add_argument("--rounds", type=int, default=60, help="products asked both ways")
    parser.add_argument("--products", type=int, default=30, help="distinct held-out products cycled through")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compare-url", help="another server of the same models: compare explain off with it")
    parser.add_argument("--graph", type=Path, help="a saved image model folder: time its ONNX graph instead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.graph:
        result = measure_graph(args.graph, args.rounds)
    elif args.compare_url:
        products = held_out_products(args.data_dir, args.products)
        result = compare_off(args.url, args.compare_url, products, args.rounds, args.warmup)
    else:
        result = measure(args.url, held_out_products(args.data_dir, args.products), args.rounds, args.warmup)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
