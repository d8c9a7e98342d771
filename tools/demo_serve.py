"""`make demo`'s last step: run the server, and say once, when the page answers, where to go and how to stop.

    python tools/demo_serve.py --port 3000 --token-file data/.demo-admin-token -- \\
        bentoml serve service:RakutenClassifier --port 3000 --timeout-graceful-shutdown 30

1. The admin token: RAKUTEN_ADMIN_TOKEN from the environment when set, else the checkout's token
   file, written once (random, mode 600) so that the token stays the same from one demo to the next.
   The server gets it, so the page's "Wrong category?" (POST /corrections) works on first contact.
2. The server command runs in a process group of its own (its log goes to this terminal), and
   /readyz is asked once a second for at most --ready-timeout seconds: the server is stopped, and
   this exits 1, when it stops or is not ready by then.
3. One block when ready: the page's address, the admin token, the model store, how to stop.
4. Then it waits on the server. Ctrl-C (SIGINT), SIGTERM and SIGHUP are passed on to the server's
   group, which stops gracefully; whatever is left after --stop-timeout seconds is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

RULE = "=" * 78


def admin_token(token_file: Path) -> tuple[str, str]:
    """The admin token and where it came from: the environment, or the checkout's file (written if absent)."""
    given = os.environ.get("RAKUTEN_ADMIN_TOKEN", "").strip()
    if given:
        return given, "environment"
    if token_file.is_file() and token_file.read_text().strip():
        return token_file.read_text().strip(), "file"
    token = secrets.token_urlsafe(18)
    token_file.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(token + "\n")
    return token, "new file"


def port_taken(port: int) -> bool:
    """Whether something already accepts connections on the port (bentoml would fail after loading everything)."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def answers(url: str) -> bool:
    """Whether GET ``url`` answers 200 within 2 s; never through a proxy of the environment."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def ready_block(port: int, token: str, source: str, token_file: Path) -> str:
    """What the terminal shows once the page answers."""
    if source == "environment":
        token_lines = ["admin token: the value of RAKUTEN_ADMIN_TOKEN in your environment"]
    else:
        kept = "new, kept" if source == "new file" else "kept"
        token_lines = [
            f"admin token: {token}",
            f"  ({kept} in {token_file}; RAKUTEN_ADMIN_TOKEN=... make demo chooses another)",
        ]
    store = os.environ.get("BENTOML_HOME") or str(Path.home() / "bentoml")
    lines = [
        RULE,
        f"The demo is ready. Open http://localhost:{port}/ui",
        *token_lines,
        '  The page asks for it under an answer, in "Wrong category?" > "Admin token", to save a',
        "  correction; the administrative endpoints take it as: Authorization: Bearer <token>",
        f"model store: {store} (BENTOML_HOME)",
        "stop: Ctrl-C",
        RULE,
    ]
    return "\n".join(lines)


class Server:
    """The server command in a process group of its own, with the signals this process gets passed on to it."""

    def __init__(self, stop_timeout: float):
        self.process: subprocess.Popen | None = None
        self.stop_timeout = stop_timeout
        self.stop_asked_at: float | None = None
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._forward)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        # A hang-up (the terminal closed) stops the server like SIGTERM: its group has no terminal to lose.
        self.stop(signal.SIGTERM if signum == signal.SIGHUP else signum)

    def start(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(command, env=env, start_new_session=True)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the server's group to stop (BentoML's arbiter stops its workers gracefully)."""
        if self.stop_asked_at is None:
            self.stop_asked_at = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signum)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self) -> int:
        """The server's exit status, once it has stopped; killed (workers too) when a stop takes too long."""
        assert self.process is not None
        while True:
            try:
                return self.process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if self.stop_asked_at is not None and time.monotonic() - self.stop_asked_at > self.stop_timeout:
                    self._kill()

    def _kill(self) -> None:
        import psutil  # BentoML's own dependency: always in the venv that runs `bentoml serve`

        assert self.process is not None
        print(f"the server did not stop within {self.stop_timeout:.0f} s: killing it", file=sys.stderr, flush=True)
        # BentoML's workers run in process groups of their own: kill them by pid as well.
        workers = psutil.Process(self.process.pid).children(recursive=True)
        os.killpg(self.process.pid, signal.SIGKILL)
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the port the server command listens on")
    parser.add_argument("--token-file", type=Path, required=True, help="where the generated admin token is kept")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for /readyz")
    parser.add_argument("--stop-timeout", type=float, default=45.0, help="seconds a stop may take before a kill")
    parser.add_argument("command", nargs="+", help="the server command, after --")
    args = parser.parse_args(argv)

    token, source = admin_token(args.token_file)
    if port_taken(args.port):
        taken = f"port {args.port} is in use: stop what listens there, or: make demo PORT={args.port + 1}"
        print(taken, file=sys.stderr)
        return 1
    server = Server(args.stop_timeout)
    print(
        f"starting the server on port {args.port}: it loads the production models first (about 10-30 s);"
        " its address is printed here when the page answers",
        flush=True,
    )
    server.start(args.command, dict(os.environ, RAKUTEN_ADMIN_TOKEN=token))
    deadline = time.monotonic() + args.ready_timeout
    while server.running() and server.stop_asked_at is None and time.monotonic() < deadline:
        if answers(f"http://127.0.0.1:{args.port}/readyz"):
            print(ready_block(args.port, token, source, args.token_file), flush=True)
            break
        time.sleep(1)
    else:
        if server.stop_asked_at is None:
            why = "stopped" if not server.running() else f"did not answer /readyz within {args.ready_timeout:.0f} s"
            print(f"the server {why}: its log above says why", file=sys.stderr, flush=True)
            server.stop()
            server.wait()
            return 1
    status = server.wait()
    if server.stop_asked_at is not None:
        return 0
    print(f"the server stopped (exit status {status})", file=sys.stderr)
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
