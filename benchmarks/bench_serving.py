"""Benchmark: /predict_multimodal over HTTP with real sample products (text + image).

    .venv/bin/python benchmarks/bench_serving.py --url http://127.0.0.1:3000 \
        [--sequential 50] [--clients 1 16] [--requests 200] [--json]

Sequential mode sends one call after the other (latency); each --clients value runs that many
concurrent clients sharing --requests calls (throughput). Every request's status is counted.
`bench_serving_variants.py` and `bench_lean_serving.py` start servers and measure them with this.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import SAMPLE, products

Product = tuple[dict, bytes]


async def run_clients(url: str, items: list[Product], clients: int, total: int) -> dict:
    """``clients`` concurrent clients sharing ``total`` calls: statuses, products/s and latency percentiles."""
    latencies, statuses = [], []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(total):
        queue.put_nowait(number)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while True:
            try:
                number = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            form, image = items[number % len(items)]
            started = time.perf_counter()
            try:
                answer = await client.post(
                    "/predict_multimodal", data=form, files={"image": ("p.jpg", image, "image/jpeg")}
                )
                statuses.append(answer.status_code)
            except httpx.HTTPError:
                statuses.append(0)
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": total,
        "errors": int(sum(s != 200 for s in statuses)),
        "requests_per_s": round(total / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def measure(url: str, items: list[Product], sequential: int, clients: list[int], requests: int) -> dict:
    """Five warm-up calls, then ``sequential`` calls one after the other, then each count of clients."""
    asyncio.run(run_clients(url, items, 1, 5))
    return {
        "sequential": asyncio.run(run_clients(url, items, 1, sequential)),
        "concurrent": [asyncio.run(run_clients(url, items, c, requests)) for c in clients],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--data-dir", type=Path, default=SAMPLE)
    parser.add_argument("--sequential", type=int, default=50, help="calls for the sequential latency figure")
    parser.add_argument("--clients", type=int, nargs="*", default=[16])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = measure(args.url, products(args.data_dir, 200), args.sequential, args.clients, args.requests)
    if args.json:
        sys.stdout.write(json.dumps(results) + "\n")
    else:
        for row in [results["sequential"], *results["concurrent"]]:
            sys.stdout.write(" ".join(f"{k}={v}" for k, v in row.items()) + "\n")


if __name__ == "__main__":
    main()
