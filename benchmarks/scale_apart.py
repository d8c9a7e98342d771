"""Scaling apart on one machine: the entry and two image-service processes behind one address.

    BENTOML_HOME=<a store with production models> .venv/bin/python benchmarks/scale_apart.py \
        [--clients 16] [--seconds 40] [--json]

Starts, each as its own `bentoml serve` on a loopback port: two `service:ImageModelService` processes,
HAProxy (Debian's package) balancing them at one address with health checks on their /readyz and
retries on a connection failure, and the entry `service:RakutenClassifier` with
RAKUTEN_IMAGE_SERVICE_URL pointing at HAProxy (BentoML's dependency URL: the entry starts no image
worker of its own). Then, with --clients clients sending /predict_multimodal (real sample title +
photo) back to back, three phases of --seconds each:

  one   image process B held out of the balancer (HAProxy maintenance state): one image process;
  two   both image processes;
  kill  both, and half-way through, image process B (arbiter and workers) gets SIGKILL.

Every answer is checked: status 200 and the same top category as the answer to the same product
before the load. Prints, per phase: answers, products/s, p50/p95 latency, failed requests (by
status, 0 = no HTTP answer) and wrong answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import SAMPLE, products

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

HAPROXY = """global
    stats socket {socket} mode 600 level admin
    # A request can be retried on the other process only while HAProxy still holds all of it.
    tune.bufsize 1048576
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response 502 503
    option http-buffer-request
frontend image
    bind 127.0.0.1:{port}
    default_backend image
backend image
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 1s fall 2 rise 2
    server a 127.0.0.1:{port_a} check
    server b 127.0.0.1:{port_b} check
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], log: Path, **env: str) -> subprocess.Popen:
    """A child in its own process group (stopped, or killed, by group)."""
    return subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def serve(target: str, port: int, home: Path, log: Path, **env: str) -> subprocess.Popen:
    """`bentoml serve TARGET` with a BentoML home of its own (each server empties its metrics folder)."""
    home.mkdir()
    (home / "models").symlink_to(Path(os.environ["BENTOML_HOME"]).resolve() / "models", target_is_directory=True)
    command = [str(BIN / "bentoml"), "serve", target, "--port", str(port), "--host", "127.0.0.1"]
    return start(command, log, BENTOML_HOME=str(home), **env)


def wait_ready(url: str, path: str = "/readyz", timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # short timeouts: BentoML holds readiness probes sent during start-up
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} not ready in {timeout:.0f} s")


def haproxy_command(sock: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(sock))
        client.sendall(command.encode() + b"\n")
        return client.recv(65536).decode()


async def load(url: str, items: list, reference: list[str], clients: int, seconds: float, during=None) -> dict:
    """--clients clients for `seconds`; every answer's status, latency and top category checked."""
    outcomes: list[tuple[float, int, bool]] = []  # (latency, status, right)
    stop_at = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient, number: int) -> None:
        position = number
        while time.monotonic() < stop_at:
            index = position % len(items)
            form, image = items[index]
            position += clients
            started = time.monotonic()
            try:
                answer = await http.post(
                    "/predict_multimodal", data=form, files={"image": ("p.jpg", image, "image/jpeg")}
                )
                status = answer.status_code
                right = status == 200 and answer.json()["top_k"][0]["prdtypecode"] == reference[index]
            except httpx.HTTPError:
                status, right = 0, False
            outcomes.append((time.monotonic() - started, status, right))

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        tasks = [client(http, n) for n in range(clients)]
        if during is not None:
            tasks.append(during())
        await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    latencies = np.array([o[0] for o in outcomes if o[1] == 200]) * 1000
    return {
        "answers": len(outcomes),
        "products_per_s": round(sum(o[1] == 200 for o in outcomes) / elapsed, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1) if len(latencies) else None,
        "p95_ms": round(float(np.percentile(latencies, 95)), 1) if len(latencies) else None,
        "failed": dict(Counter(str(o[1]) for o in outcomes if o[1] != 200)),
        "wrong": sum(o[1] == 200 and not o[2] for o in outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=40, help="length of each phase")
    parser.add_argument("--products", type=int, default=48)
    parser.add_argument("--data-dir", type=Path, default=SAMPLE)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("haproxy") is None:
        raise SystemExit("haproxy is missing: apt-get install haproxy (Debian's package)")
    if "BENTOML_HOME" not in os.environ:
        raise SystemExit("set BENTOML_HOME to a store holding production models")

    work = Path(tempfile.mkdtemp(prefix="rakuten-scale-apart-"))
    port_a, port_b, port_proxy, port_entry = (free_port() for _ in range(4))
    sock = work / "haproxy.sock"
    (work / "haproxy.cfg").write_text(HAPROXY.format(socket=sock, port=port_proxy, port_a=port_a, port_b=port_b))
    children = {
        "image_a": serve("service:ImageModelService", port_a, work / "home-a", work / "image-a.log"),
        "image_b": serve("service:ImageModelService", port_b, work / "home-b", work / "image-b.log"),
    }
    try:
        for port in (port_a, port_b):
            wait_ready(f"http://127.0.0.1:{port}")
        children["haproxy"] = start(["haproxy", "-f", str(work / "haproxy.cfg")], work / "haproxy.log")
        children["entry"] = serve(
            "service:RakutenClassifier",
            port_entry,
            work / "home-entry",
            work / "entry.log",
            RAKUTEN_IMAGE_SERVICE_URL=f"http://127.0.0.1:{port_proxy}",
        )
        entry = f"http://127.0.0.1:{port_entry}"
        wait_ready(entry)
        items = products(args.data_dir, args.products)
        reference = []
        for form, image in items:
            answer = httpx.post(
                f"{entry}/predict_multimodal", data=form, files={"image": ("p.jpg", image, "image/jpeg")}, timeout=120
            )
            answer.raise_for_status()
            reference.append(answer.json()["top_k"][0]["prdtypecode"])

        phases = {}
        haproxy_command(sock, "set server image/b state maint")
        phases["one"] = asyncio.run(load(entry, items, reference, args.clients, args.seconds))
        haproxy_command(sock, "set server image/b state ready")
        time.sleep(3)  # two health checks
        phases["two"] = asyncio.run(load(entry, items, reference, args.clients, args.seconds))

        async def kill_b() -> None:
            await asyncio.sleep(args.seconds / 2)
            # The arbiter and every worker (BentoML puts workers in process groups of their own).
            root = psutil.Process(children["image_b"].pid)
            for process in [*root.children(recursive=True), root]:
                process.kill()

        phases["kill"] = asyncio.run(load(entry, items, reference, args.clients, args.seconds, kill_b))
        # srv_op_state (6th field): 2 = up, 0 = down.
        states = haproxy_command(sock, "show servers state image").splitlines()[2:]
        phases["kill"]["balancer_after"] = {f.split()[3]: "up" if f.split()[5] == "2" else "down" for f in states if f}
    finally:
        # Workers run in process groups of their own: note them before stopping each server's group.
        workers = []
        for child in children.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                workers += psutil.Process(child.pid).children(recursive=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
    result = {"clients": args.clients, "seconds_per_phase": args.seconds, "cpus": os.cpu_count(), "phases": phases}
    result["speedup_two_vs_one"] = round(phases["two"]["products_per_s"] / phases["one"]["products_per_s"], 2)
    sys.stdout.write(json.dumps(result, indent=None if args.json else 2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
