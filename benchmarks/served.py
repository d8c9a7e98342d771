"""`bentoml serve service:RakutenClassifier` of any checkout of this repository, for the served benchmarks.

The server runs from ``repo`` (its service.py, and its package first on PYTHONPATH) with the
``bentoml`` of ``bin_dir`` (a venv: the project's, or one holding only requirements-serving.lock),
in its own process group, against the store named by BENTOML_HOME and RAKUTEN_DATA_ROOT.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_kill_worker import workers
from scale_apart import free_port, wait_ready

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Served:
    url: str
    process: subprocess.Popen

    def processes(self) -> dict[int, str]:
        """Every process of the server, pid -> role: the service name of a worker, else its command."""
        root = psutil.Process(self.process.pid)
        roles = {pid: name for name, pids in workers(root).items() for pid in pids}
        roles[root.pid] = "bentoml serve (arbiter)"
        for process in root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                roles.setdefault(process.pid, " ".join(process.cmdline()[:3]))
        return roles


def commit_of(repo: Path) -> str:
    """The checkout's commit, with "+changes" when its tracked files differ from it."""
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(repo), "diff", "--quiet", "HEAD"], capture_output=True).returncode
    return head.stdout.strip() + ("+changes" if dirty else "")


@contextlib.contextmanager
def serving(repo: Path, log: Path, bin_dir: Path = BIN, timeout: float = 300, **env: str) -> Iterator[Served]:
    """A ready server of ``repo``'s service, with ``env`` on top of this process's environment; stopped after."""
    port = free_port()
    command = [str(bin_dir / "bentoml"), "serve", "service:RakutenClassifier", "--port", str(port)]
    command += ["--host", "127.0.0.1", "--timeout-graceful-shutdown", "5"]
    path = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(Path(repo).resolve() / "src")}
    process = subprocess.Popen(
        command,
        cwd=repo,
        env={**os.environ, **path, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=timeout)
        yield Served(url, process)
    finally:
        # Workers run in process groups of their own: note them before stopping the server's group.
        children = []
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(process.pid).children(recursive=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
