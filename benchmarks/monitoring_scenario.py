"""Monitoring scenario: 300 ordinary products, then 300 drifted ones; drift must flag only the second.

Serve the trained models with a drift window of 300 and an admin token, then run this script:

    RAKUTEN_DRIFT_WINDOW=300 RAKUTEN_ADMIN_TOKEN=admin bentoml serve service:RakutenClassifier --port 3200 &
    .venv/bin/python benchmarks/monitoring_scenario.py --url http://127.0.0.1:3200 --token admin \\
        --data-dir ../shared/rakuten-sample --json

Window 1: 300 held-out products (the test split: rows no model was fitted or selected on, the
same population as the reference profile) with their images when present.
Window 2 (--drift books): 300 products drawn only from the book and magazine categories;
(--drift images-only): 300 held-out images sent without any text.
After each window, POST /monitor/drift recomputes drift and the gauge; `rakuten monitor drift
--last 300` (run by the caller on the server's database) writes the HTML report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import httpx
import numpy as np

BOOK_CODES = (10, 2280, 2403, 2705)


def held_out_products(data_dir: Path, seed: int = 42):
    """Test rows of the challenge folder (the held-out split), split exactly as training splits them."""
    from rakuten_classifier.config import Settings
    from rakuten_classifier.data.reader import read_challenge_dir
    from rakuten_classifier.data.split import assign_splits

    settings = Settings()
    frame = read_challenge_dir(data_dir).products
    frame["split"] = assign_splits(frame, settings.seed, settings.val_fraction, settings.test_fraction)
    return frame[frame["split"] == "test"].reset_index(drop=True)


def scenario_windows(data_dir: Path, drift: str = "books", size: int = 300, seed: int = 0):
    """The two windows of products: (ordinary, drifted), each a list of dicts."""
    rng = np.random.default_rng(seed)
    held_out = held_out_products(data_dir)
    ordinary = held_out.iloc[rng.choice(len(held_out), size, replace=False)]
    if drift == "books":
        books = held_out[held_out["prdtypecode"].isin(BOOK_CODES)]
        drifted = books.iloc[rng.choice(len(books), size, replace=len(books) < size)]
    elif drift == "images-only":
        with_image = held_out[held_out["image_path"].notna()]
        drifted = with_image.iloc[rng.choice(len(with_image), size, replace=len(with_image) < size)].copy()
        drifted["designation"], drifted["description"] = "", ""
    else:
        raise ValueError(f"unknown drift kind {drift!r}")
    return ordinary.to_dict("records"), drifted.to_dict("records")


async def send_window(url: str, products: list[dict], clients: int = 8, headers: dict | None = None) -> list[dict]:
    """POST each product to /predict_multimodal with `clients` in flight; returns status and id per product."""
    queue: asyncio.Queue = asyncio.Queue()
    for product in products:
        queue.put_nowait(product)
    results: list[dict] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            product = queue.get_nowait()
            files = {}
            if isinstance(product.get("image_path"), str):
                files["image"] = ("image.jpg", Path(product["image_path"]).read_bytes(), "image/jpeg")
            data = {k: str(product[k]) for k in ("designation", "description") if product.get(k)}
            answer = await client.post("/predict_multimodal", data=data, files=files or None, headers=headers)
            body = answer.json()
            results.append(
                {
                    "status": answer.status_code,
                    "prediction_id": body.get("prediction_id"),
                    "prdtypecode": body.get("prdtypecode"),
                }
            )

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return results


def drift_now(url: str, token: str) -> dict:
    """POST /monitor/drift: drift of the server's recent window, and the gauges it sets."""
    answer = httpx.post(f"{url}/monitor/drift", headers={"Authorization": f"Bearer {token}"}, timeout=120)
    answer.raise_for_status()
    return answer.json()


def gauges(url: str) -> dict:
    """rakuten_drift_score and rakuten_drift_detected as scraped from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name in ("rakuten_drift_score", "rakuten_drift_detected"):
                values[sample.name] = sample.value
    return values


def run(url: str, data_dir: Path, token: str, drift: str = "books", size: int = 300) -> dict:
    """Both windows, with drift and gauges read after each."""
    ordinary, drifted = scenario_windows(data_dir, drift, size)
    outcome = {}
    for name, products in (("ordinary", ordinary), ("drifted", drifted)):
        answers = asyncio.run(send_window(url, products))
        result = drift_now(url, token)
        outcome[name] = {
            "sent": len(products),
            "ok": sum(a["status"] == 200 for a in answers),
            "prediction_ids": [a["prediction_id"] for a in answers if a["prediction_id"]],
            "drift_score": result["drift_score"],
            "drifted": result["drifted"],
            "drifted_features": result["drifted_features"],
            "window": result["window"],
            "gauges": gauges(url),
        }
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--token", required=True, help="the server's RAKUTEN_ADMIN_TOKEN (admin)")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/rakuten-sample"))
    parser.add_argument("--drift", choices=["books", "images-only"], default="books")
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    outcome = run(args.url, args.data_dir, args.token, args.drift, args.size)
    for window in outcome.values():
        window["prediction_ids"] = len(window["prediction_ids"])
    if args.json:
        sys.stdout.write(json.dumps(outcome) + "\n")
    else:
        for name, window in outcome.items():
            sys.stdout.write(f"{name}: {window}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
