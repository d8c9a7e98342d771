"""Soak test: sustained /predict_multimodal load while the server's memory is sampled.

    .venv/bin/python benchmarks/soak.py --url http://127.0.0.1:3400 [--seconds 300] [--clients 32] \
        [--pid PID] [--warmup 60] [--sample-every 5] [--json]

Clients send real sample products (title, description and photo from ../shared/rakuten-sample)
back to back. The server is the `bentoml serve` process given by --pid, or the one listening on
the --url port; its RSS is summed over it and every descendant (the circus arbiter and the
service workers) every --sample-every seconds. Memory growth compares the last sample with the
first sample taken after --warmup seconds (model loading, allocator and cache warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import psutil

from rakuten_classifier.data.reader import read_challenge_dir

SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "rakuten-sample"


def products(data_dir: Path, count: int) -> list[tuple[dict, bytes]]:
    """Sample products that have a photo: (form fields, JPEG bytes)."""
    frame = read_challenge_dir(data_dir).products.dropna(subset=["image_path"]).head(count)
    return [
        ({"designation": r.designation, "description": r.description}, Path(r.image_path).read_bytes())
        for r in frame.itertuples()
    ]


def server_process(pid: int | None, port: int) -> psutil.Process:
    """The `bentoml serve` process: by pid, or the top of the process tree listening on ``port``."""
    if pid is not None:
        return psutil.Process(pid)
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            process = psutil.Process(connection.pid)
            # The listening socket may belong to a worker: climb to the `bentoml serve` ancestor.
            for ancestor in [process, *process.parents()]:
                if any("bentoml" in part for part in ancestor.cmdline()[:3]) and "serve" in ancestor.cmdline():
                    return ancestor
            return process
    raise SystemExit(f"no process listens on port {port}; give --pid")


def tree_rss(root: psutil.Process) -> tuple[int, int]:
    """Summed RSS (bytes) of a process and all its descendants, and how many processes that is."""
    total, count = 0, 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total, count


async def soak(
    url: str,
    items: list[tuple[dict, bytes]],
    clients: int,
    seconds: float,
    root: psutil.Process,
    sample_every: float,
    timeout: float,
) -> dict:
    statuses: Counter = Counter()
    latencies: list[float] = []
    samples: list[dict] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def client_loop(client: httpx.AsyncClient, number: int) -> None:
        position = number
        while time.perf_counter() < deadline:
            form, image = items[position % len(items)]
            position += clients
            began = time.perf_counter()
            try:
                answer = await client.post(
                    "/predict_multimodal", data=form, files={"image": ("p.jpg", image, "image/jpeg")}
                )
                statuses[answer.status_code] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - began)

    async def sampler() -> None:
        while True:
            rss, count = tree_rss(root)
            samples.append(
                {
                    "t": round(time.perf_counter() - started, 1),
                    "rss_mib": round(rss / 2**20, 1),
                    "processes": count,
                    "requests": sum(statuses.values()),
                }
            )
            if time.perf_counter() >= deadline:
                return
            await asyncio.sleep(min(sample_every, max(deadline - time.perf_counter(), 0.01)))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        await asyncio.gather(sampler(), *(client_loop(client, n) for n in range(clients)))
    wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "wall_s": round(wall, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "requests": sum(statuses.values()),
        "requests_per_s": round(sum(statuses.values()) / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--pid", type=int, help="pid of `bentoml serve` (default: found by the --url port)")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=60, help="seconds before the reference RSS sample")
    parser.add_argument("--sample-every", type=float, default=5)
    parser.add_argument("--timeout", type=float, default=120, help="client timeout per request (s)")
    parser.add_argument("--data-dir", type=Path, default=SAMPLE)
    parser.add_argument("--products", type=int, default=400, help="distinct sample products to cycle through")
    parser.add_argument("--max-growth", type=float, default=10.0, help="RSS growth %% above which the run fails")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    root = server_process(args.pid, urlparse(args.url).port or 80)
    items = products(args.data_dir, args.products)
    result = asyncio.run(soak(args.url, items, args.clients, args.seconds, root, args.sample_every, args.timeout))
    after_warmup = next((s for s in result["samples"] if s["t"] >= args.warmup), result["samples"][-1])
    end = result["samples"][-1]
    errors = result["requests"] - result["statuses"].get("200", 0)
    growth = 100.0 * (end["rss_mib"] - after_warmup["rss_mib"]) / after_warmup["rss_mib"]
    result.update(
        {
            "url": args.url,
            "server_pid": root.pid,
            "clients": args.clients,
            "seconds": args.seconds,
            "errors": errors,
            "products": len(items),
            "rss_start_mib": result["samples"][0]["rss_mib"],
            "rss_after_warmup_mib": after_warmup["rss_mib"],
            "rss_after_warmup_t": after_warmup["t"],
            "rss_end_mib": end["rss_mib"],
            "rss_max_mib": max(s["rss_mib"] for s in result["samples"]),
            "rss_growth_pct": round(growth, 2),
            "passed": errors == 0 and growth < args.max_growth,
            "load_average": [round(v, 2) for v in psutil.getloadavg()],
            "cpus": psutil.cpu_count(),
        }
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['requests']} requests in {result['wall_s']} s ({result['requests_per_s']}/s) "
            f"from {args.clients} clients; statuses {result['statuses']}; errors {errors}"
        )
        print(f"latency p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms")
        print(
            f"RSS (server tree, {end['processes']} processes): start {result['rss_start_mib']} MiB, "
            f"after warm-up (t={after_warmup['t']} s) {after_warmup['rss_mib']} MiB, end {end['rss_mib']} MiB, "
            f"growth {growth:+.2f} %"
        )
        print("PASS" if result["passed"] else "FAIL")
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
