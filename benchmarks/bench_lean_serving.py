"""What every process of a served `bentoml serve` maps and holds: torch or CUDA libraries, resident memory.

    BENTOML_HOME=<store> RAKUTEN_DATA_ROOT=<data root> .venv/bin/python benchmarks/bench_lean_serving.py \
        [--repo .] [--bin .venv/bin] [--requests 1000] [--clients 8] [--rss-limit-mib 350] [--json]

Starts `bentoml serve service:RakutenClassifier` from --repo (any checkout: main's code gives the
"before" figures) with the `bentoml` of --bin (the project's venv, or one holding only
requirements-serving.lock, which proves serving needs nothing more), against the production trio
of the store (`rakuten train all --data-dir ../shared/rakuten-sample` makes one). Then sends
--requests /predict_multimodal calls (real sample title + photo) from --clients clients, and prints,
for every process of the server (arbiter, entry, text worker, each image worker):

  * torch_or_cuda: the libtorch, libc10, torchvision, triton and CUDA (libcudart, libcublas,
    libcudnn, nvidia/...) files in /proc/PID/maps after the load (a lazy import shows up by then);
  * rss_mib after the load (what the issue's 350 MB limit is about), and uss_mib (its own pages).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import run_clients
from served import BIN, REPO, commit_of, serving
from soak import SAMPLE, products

TORCH_OR_CUDA = re.compile(
    r"/(torch|torchvision|triton|nvidia)/"
    r"|/lib(torch|c10|cudart|cublas|cudnn|cuda|nvrtc|nvJitLink|nccl|cufft|curand|cusparse|cusolver|cupti)[^/]*$"
)
IMAGE_SERVICE = "ImageModelService"


def torch_or_cuda_files(pid: int) -> list[str]:
    """The torch and CUDA files mapped into ``pid`` (from /proc/PID/maps), by file name."""
    names = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and TORCH_OR_CUDA.search(fields[5].strip()):
            names.add(Path(fields[5].strip()).name)
    return sorted(names)


def process_figures(pid: int, role: str) -> dict:
    memory = psutil.Process(pid).memory_full_info()
    mapped = torch_or_cuda_files(pid)
    return {
        "pid": pid,
        "role": role,
        "rss_mib": round(memory.rss / 2**20, 1),
        "uss_mib": round(memory.uss / 2**20, 1),
        "torch_or_cuda_count": len(mapped),
        "torch_or_cuda": mapped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose service.py is served")
    parser.add_argument("--bin", type=Path, default=BIN, help="bin folder of the venv whose bentoml serves")
    parser.add_argument("--data-dir", type=Path, default=SAMPLE)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rss-limit-mib", type=float, default=350)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    items = products(args.data_dir, 200)
    with tempfile.TemporaryDirectory() as work, serving(args.repo, Path(work) / "serve.log", args.bin) as served:
        load = asyncio.run(run_clients(served.url, items, args.clients, args.requests))
        figures = [process_figures(pid, role) for pid, role in sorted(served.processes().items())]
    image_rss = [p["rss_mib"] for p in figures if p["role"] == IMAGE_SERVICE]
    result = {
        "code": str(args.repo.resolve()),
        "commit": commit_of(args.repo),
        "python": str(args.bin / "python"),
        "cpus": os.cpu_count(),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "load": load,
        "processes": figures,
        "no_torch_or_cuda_mapped": not any(p["torch_or_cuda"] for p in figures),
        "image_worker_rss_mib_max": max(image_rss, default=None),
        "rss_limit_mib": args.rss_limit_mib,
        "image_workers_within_limit": bool(image_rss) and max(image_rss) <= args.rss_limit_mib,
    }
    if not args.json:  # the file lists are long on main's code: counts on screen, names in --json
        for process in result["processes"]:
            process["torch_or_cuda"] = process["torch_or_cuda"][:3] + (["..."] if process["torch_or_cuda"][3:] else [])
    sys.stdout.write(json.dumps(result, indent=None if args.json else 2) + "\n")


if __name__ == "__main__":
    main()
