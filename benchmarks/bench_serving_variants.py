"""Served /predict_multimodal of several variants in one run: code before/after, or worker layouts.

    BENTOML_HOME=<store> RAKUTEN_DATA_ROOT=<data root> .venv/bin/python benchmarks/bench_serving_variants.py \
        --variant before=/tmp/before --variant after=. [--rounds 2] [--sequential 100] \
        [--clients 32] [--requests 400] [--json]
    ... --variant w1=.,RAKUTEN_IMAGE_WORKERS=1 --variant w2=.,RAKUTEN_IMAGE_WORKERS=2 ...

Each --variant is NAME=REPO[,VAR=VALUE...]: `bentoml serve service:RakutenClassifier` from that
checkout (see served.py) with those environment variables (a layout setting, or another
BENTOML_HOME and RAKUTEN_DATA_ROOT when a variant needs its own models). The variants take turns,
--rounds times (before, after, before, after...), so that a shared box's drift falls on all of
them; each turn starts a fresh server, measures it with bench_serving.measure (warm-up, then
--sequential calls from one client, then --requests calls from each --clients count) and stops it.
Prints every turn (with the 1-minute load average before it) and, per variant, the median over
rounds of the single-client p50 and of the products/s at each clients count, and the share of texts
the text worker found in its memory of recent embeddings (RAKUTEN_TEXT_EMBEDDING_MEMORY, /metrics).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import measure
from served import BIN, commit_of, serving
from soak import SAMPLE, products


def variant(text: str) -> tuple[str, Path, dict[str, str]]:
    """NAME=REPO[,VAR=VALUE...] -> (name, repo, environment)."""
    name, _, rest = text.partition("=")
    repo, *settings = rest.split(",")
    if not name or not repo or not all("=" in s for s in settings):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=REPO[,VAR=VALUE...]")
    return name, Path(repo), dict(s.split("=", 1) for s in settings)


def embedding_memory(url: str) -> dict[str, float]:
    """The text worker's memory of recent embeddings, from /metrics: texts found there (hit) and embedded (miss)."""
    counts: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("rakuten_text_embedding_memory_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = counts.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def summary(turns: list[dict]) -> dict:
    """Median over rounds: single-client p50 and products/s per clients count."""
    concurrent: dict[int, list[float]] = {}
    for turn in turns:
        for row in turn["concurrent"]:
            concurrent.setdefault(row["clients"], []).append(row["requests_per_s"])
    memory = [turn["text_embedding_memory"] for turn in turns if turn.get("text_embedding_memory")]
    hits, misses = sum(m.get("hit", 0) for m in memory), sum(m.get("miss", 0) for m in memory)
    return {
        **({"embedding_memory_hit_rate": round(hits / (hits + misses), 3)} if hits + misses else {}),
        "one_client_p50_ms": round(statistics.median(t["sequential"]["p50_ms"] for t in turns), 1),
        "requests_per_s": {str(c): round(statistics.median(v), 2) for c, v in concurrent.items()},
        "errors": sum(t["sequential"]["errors"] + sum(r["errors"] for r in t["concurrent"]) for t in turns),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", type=variant, action="append", required=True)
    parser.add_argument("--bin", type=Path, default=BIN, help="bin folder of the venv whose bentoml serves")
    parser.add_argument("--data-dir", type=Path, default=SAMPLE)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--clients", type=int, nargs="+", default=[32])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    items = products(args.data_dir, 200)
    turns: dict[str, list[dict]] = {name: [] for name, _, _ in args.variant}
    with tempfile.TemporaryDirectory() as work:
        for round_number in range(args.rounds):
            for name, repo, env in args.variant:
                loadavg = os.getloadavg()[0]
                log = Path(work) / f"{name}-{round_number}.log"
                with serving(repo, log, args.bin, **env) as served:
                    figures = measure(served.url, items, args.sequential, args.clients, args.requests)
                    figures["text_embedding_memory"] = embedding_memory(served.url)
                turns[name].append({"round": round_number, "loadavg_1m_before": round(loadavg, 2), **figures})
                sys.stderr.write(f"{name} round {round_number}: {json.dumps(summary(turns[name][-1:]))}\n")
    result = {
        "cpus": os.cpu_count(),
        "variants": {
            name: {"code": str(repo.resolve()), "commit": commit_of(repo), "env": env, **summary(turns[name])}
            for name, repo, env in args.variant
        },
        "turns": turns,
    }
    sys.stdout.write(json.dumps(result, indent=None if args.json else 2) + "\n")


if __name__ == "__main__":
    main()
