"""Benchmark: `make demo` in a checkout as a new user runs it, each output line with its second.

    python3 benchmarks/demo_timeline.py CHECKOUT [--port 3055] [--json]

Runs `make demo PORT=...` in CHECKOUT (a fresh `git clone`: no .venv, no data/, no bentoml_home/) with the
user's environment less this project's settings (RAKUTEN_*, MLFLOW_*, BENTOML_HOME, PYTHONPATH), prints
every line it writes prefixed with the seconds since the start, and stops the demo (Ctrl-C to its process
group) once its ready block has been printed; with --json, one object instead: the seconds to the ready
block and every (second, line). The figures of docs/deployment.md, "What the terminal shows".
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", help="a fresh clone of the repository")
    parser.add_argument("--port", type=int, default=3055)
    parser.add_argument("--json", action="store_true", help="one JSON object at the end instead of the lines")
    args = parser.parse_args()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RAKUTEN_", "MLFLOW_")) and name not in ("BENTOML_HOME", "PYTHONPATH")
    }
    started = time.monotonic()
    demo = subprocess.Popen(
        ["make", "demo", f"PORT={args.port}"],
        cwd=args.checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert demo.stdout is not None
    lines: list[tuple[float, str]] = []
    ready = None
    for line in demo.stdout:
        lines.append((round(time.monotonic() - started, 1), line.rstrip("\n")))
        if not args.json:
            sys.stdout.write(f"{lines[-1][0]:7.1f} {line}")
            sys.stdout.flush()
        if line.startswith("stop: Ctrl-C"):  # the ready block's last line
            ready = lines[-1][0]
            os.killpg(demo.pid, signal.SIGINT)
            break
    demo.wait(120)
    if args.json:
        sys.stdout.write(json.dumps({"ready_s": ready, "exit_status": demo.returncode, "lines": lines}) + "\n")
    else:
        sys.stdout.write(f"{time.monotonic() - started:7.1f} [demo stopped, exit status {demo.returncode}]\n")
    return 0 if ready is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
