"""Fault injection: SIGKILL a model worker of a running server under load, and watch it recover.

    .venv/bin/python benchmarks/fault_kill_worker.py --url http://127.0.0.1:3400 \
        [--pid PID] [--clients 8] [--workers ImageModelService TextModelService] [--observe 120] [--json]

`bentoml serve` runs a circus arbiter whose children are one process per service worker:
``python -m _bentoml_impl.worker.service service:RakutenClassifier --service-name ImageModelService ...``
(TextModelService, and the entry RakutenClassifier). For each named service this script, while
--clients clients send /predict_multimodal (real sample title + photo, so every request needs both
model workers), kills that worker with SIGKILL and reports:

  * the requests that failed, by status code (0 = no HTTP answer), and when;
  * recovery_s: seconds from the kill until requests succeed again: the first success of a request
    sent after the kill and after the last failure (requests held while the worker restarts count
    as a stall, not a failure: see longest_gap_between_successes_s and max_latency_after_kill_s);
  * whether the arbiter respawned the worker (a new pid with the same --service-name) and when it
    was ready (first success after the respawn).

Each kill is preceded by --baseline seconds of load (must be all 200) and followed by up to
--observe seconds; the next worker is killed only once the previous one answers again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

from soak import SAMPLE, products, server_process


def service_name(process: psutil.Process) -> str | None:
    """The --service-name of a BentoML worker process, or None for anything else."""
    try:
        command = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if "_bentoml_impl.worker.service" not in command or "--service-name" not in command:
        return None
    return command[command.index("--service-name") + 1]


def workers(root: psutil.Process) -> dict[str, list[int]]:
    """Pids of the server's workers by service name."""
    found: dict[str, list[int]] = {}
    for child in root.children(recursive=True):
        name = service_name(child)
        if name:
            found.setdefault(name, []).append(child.pid)
    return found


class Load:
    """--clients clients sending /predict_multimodal back to back; every outcome with its times."""

    def __init__(self, url: str, items, clients: int):
        self.url, self.items, self.clients = url, items, clients
        self.outcomes: list[tuple[float, float, int | str]] = []  # (started, finished, status)
        self.stopping = False

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.url, timeout=120, limits=limits) as client:
            await asyncio.gather(*(self._client(client, n) for n in range(self.clients)))

    async def _client(self, client: httpx.AsyncClient, number: int) -> None:
        position = number
        while not self.stopping:
            form, image = self.items[position % len(self.items)]
            position += self.clients
            started = time.monotonic()
            try:
                answer = await client.post(
                    "/predict_multimodal", data=form, files={"image": ("p.jpg", image, "image/jpeg")}
                )
                status: int | str = answer.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            self.outcomes.append((started, time.monotonic(), status))

    def since(self, moment: float) -> list[tuple[float, float, int | str]]:
        return [o for o in self.outcomes if o[1] >= moment]


async def kill_and_watch(
    load: Load, root: psutil.Process, name: str, baseline: float, observe: float, settle: float
) -> dict:
    before_start = time.monotonic()
    await asyncio.sleep(baseline)
    baseline_outcomes = load.since(before_start)
    pids = workers(root).get(name)
    if not pids:
        raise SystemExit(f"no worker named {name} under pid {root.pid}: {workers(root)}")
    others = {n: p for n, p in workers(root).items() if n != name}
    victim = pids[0]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)

    respawned_pid, respawned_s = None, None
    deadline = killed_at + observe
    recovered_at = None
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        if respawned_pid is None:
            fresh = [p for p in workers(root).get(name, []) if p != victim]
            if fresh:
                respawned_pid, respawned_s = fresh[0], round(time.monotonic() - killed_at, 2)
        after = load.since(killed_at)
        last_failure = max((o[1] for o in after if o[2] != 200), default=killed_at)
        # Recovered: a request sent after the kill (and after the last failure) succeeded, and
        # `settle` seconds passed after that success without a new failure.
        good = [o for o in after if o[2] == 200 and o[0] >= last_failure]
        if good and time.monotonic() - min(o[1] for o in good) >= settle:
            recovered_at = min(o[1] for o in good)
            break
    after = load.since(killed_at)
    failures = [o for o in after if o[2] != 200]
    successes = sorted(o[1] for o in load.outcomes if o[2] == 200 and o[1] >= killed_at - baseline)
    gaps = [b - a for a, b in itertools.pairwise(successes)]
    window = int(min(time.monotonic() - killed_at, 40))
    per_second = [
        sum(1 for o in after if o[2] == 200 and killed_at + s <= o[1] < killed_at + s + 1) for s in range(window)
    ]
    return {
        "worker": name,
        "killed_pid": victim,
        "baseline": {
            "requests": len(baseline_outcomes),
            "requests_per_s": round(len(baseline_outcomes) / baseline, 2),
            "statuses": dict(Counter(str(o[2]) for o in baseline_outcomes)),
        },
        "requests_after_kill": len(after),
        "in_flight_at_kill": sum(1 for o in after if o[0] < killed_at),
        "failed_requests": len(failures),
        "failed_by_status": dict(Counter(str(o[2]) for o in failures)),
        "failures_from_s": round(min(o[1] for o in failures) - killed_at, 2) if failures else None,
        "failures_until_s": round(max(o[1] for o in failures) - killed_at, 2) if failures else None,
        "recovered": recovered_at is not None,
        "recovery_s": None if recovered_at is None else round(recovered_at - killed_at, 2),
        "longest_gap_between_successes_s": round(max(gaps), 2) if gaps else None,
        "max_latency_after_kill_s": round(max((o[1] - o[0] for o in after), default=0), 2),
        "successes_per_second_after_kill": per_second,
        "respawned": respawned_pid is not None,
        "new_pid": respawned_pid,
        "respawn_seen_after_s": respawned_s,
        "other_workers_unchanged": {n: p for n, p in workers(root).items() if n != name} == others,
        "observed_s": round(time.monotonic() - killed_at, 1),
    }


async def scenario(
    url: str,
    items,
    clients: int,
    root: psutil.Process,
    names: list[str],
    baseline: float,
    observe: float,
    settle: float,
) -> dict:
    load = Load(url, items, clients)
    runner = asyncio.create_task(load.run())
    results = []
    try:
        for name in names:
            results.append(await kill_and_watch(load, root, name, baseline, observe, settle))
            if not results[-1]["recovered"]:
                break  # the next kill would measure nothing
    finally:
        load.stopping = True
        await runner
    return {
        "kills": results,
        "total_requests": len(load.outcomes),
        "total_statuses": dict(Counter(str(o[2]) for o in load.outcomes)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--pid", type=int, help="pid of `bentoml serve` (default: found by the --url port)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", nargs="+", default=["ImageModelService", "TextModelService"])
    parser.add_argument("--baseline", type=float, default=10, help="seconds of load before each kill")
    parser.add_argument("--observe", type=float, default=120, help="longest wait for recovery after a kill (s)")
    parser.add_argument("--settle", type=float, default=10, help="seconds without failure that count as recovered")
    parser.add_argument("--data-dir", type=Path, default=SAMPLE)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    root = server_process(args.pid, urlparse(args.url).port or 80)
    before = workers(root)
    items = products(args.data_dir, 200)
    result = asyncio.run(
        scenario(args.url, items, args.clients, root, args.workers, args.baseline, args.observe, args.settle)
    )
    result.update(
        {
            "url": args.url,
            "server_pid": root.pid,
            "clients": args.clients,
            "workers_before": before,
            "workers_after": workers(root),
            "server_alive": root.is_running(),
            "load_average": [round(v, 2) for v in psutil.getloadavg()],
        }
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for kill in result["kills"]:
            print(
                f"{kill['worker']} (pid {kill['killed_pid']}) SIGKILL: {kill['failed_requests']} of "
                f"{kill['requests_after_kill']} requests failed {kill['failed_by_status']}; "
                f"recovered: {kill['recovered']} after {kill['recovery_s']} s (longest gap between successes "
                f"{kill['longest_gap_between_successes_s']} s); respawned: {kill['respawned']} "
                f"(new pid {kill['new_pid']}, seen after {kill['respawn_seen_after_s']} s)"
            )
        print(f"workers before {before}, after {result['workers_after']}")
    sys.exit(0 if all(k["recovered"] and k["respawned"] for k in result["kills"]) else 1)


if __name__ == "__main__":
    main()
