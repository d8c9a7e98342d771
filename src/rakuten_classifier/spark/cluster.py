"""A Spark standalone cluster on this machine: a master and workers, each a JVM of its own started by pyspark's
own launcher (``bin/spark-class``: the wheel has no ``start-master.sh``), each in a process group of its own
so that stopping, or killing, one takes its executors and their Python workers with it.

For the tests and benchmarks, and to try the standalone mode before a real cluster (docs/scale.md). Every
process binds to 127.0.0.1 (``SPARK_LOCAL_IP``): otherwise the workers registered on the machine's other
interface (issue 35).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pyspark

log = logging.getLogger(__name__)

SPARK_CLASS = Path(pyspark.__file__).resolve().parent / "bin" / "spark-class"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class StandaloneCluster:
    """``workers`` workers of ``cores`` cores and ``memory`` each under one master, logs and work dirs in ``folder``.

    A context manager: started on entry (master and every worker registered), stopped on exit.
    """

    def __init__(self, folder: Path, workers: int = 2, cores: int = 1, memory: str = "2g", start_timeout: float = 180):
        self.folder = Path(folder)
        self.cores, self.memory, self.start_timeout = cores, memory, start_timeout
        self.port, self.ui_port = _free_port(), _free_port()
        self.url = f"spark://{HOST}:{self.port}"
        self.env = {**os.environ, "SPARK_LOCAL_IP": HOST, "SPARK_LOG_DIR": str(self.folder)}
        self.master: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen | None] = [None] * workers

    def _launch(self, name: str, arguments: list[str]) -> subprocess.Popen:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / f"{name}.log").open("ab") as out:
            return subprocess.Popen(
                [str(SPARK_CLASS), *arguments],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: its executors and Python workers go with it
            )

    def state(self) -> dict:
        """The master's JSON state (workers, alive ones, applications)."""
        with urllib.request.urlopen(f"http://{HOST}:{self.ui_port}/json/", timeout=5) as answer:
            return json.loads(answer.read())

    def _state_field(self, key: str) -> object:
        try:
            return self.state()[key]
        except (OSError, ValueError, KeyError):  # not answering yet
            return None

    def alive_workers(self) -> int:
        """Workers the master counts as alive (0 while it does not answer)."""
        alive = self._state_field("aliveworkers")
        return alive if isinstance(alive, int) else 0

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if self.master is not None and self.master.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"Spark {what} not ready in {self.start_timeout:.0f} s; logs in {self.folder}")

    def start_worker(self, number: int) -> None:
        """Start worker ``number`` (again, after a kill) and wait until the master counts it."""
        expected = sum(1 for w in self.workers if w is not None and w.poll() is None) + 1
        worker_args = ["--host", HOST, "--cores", str(self.cores), "--memory", self.memory]
        worker_args += ["--webui-port", str(_free_port()), "--work-dir", str(self.folder / f"work-{number}")]
        self.workers[number] = self._launch(f"worker-{number}", [WORKER_CLASS, *worker_args, self.url])
        self._wait(lambda: self.alive_workers() >= expected, f"worker {number}")

    def start(self) -> StandaloneCluster:
        """Start the master, then each worker; returns once all are registered."""
        started = time.perf_counter()
        self.master = self._launch(
            "master", [MASTER_CLASS, "--host", HOST, "--port", str(self.port), "--webui-port", str(self.ui_port)]
        )
        self._wait(lambda: self._state_field("status") == "ALIVE", "master")
        for number in range(len(self.workers)):
            self.start_worker(number)
        log.info(
            "Spark standalone %s: %d workers in %.1f s", self.url, len(self.workers), time.perf_counter() - started
        )
        return self

    def worker_pid(self, number: int) -> int:
        """The process id (and process group) of a running worker."""
        worker = self.workers[number]
        if worker is None or worker.poll() is not None:
            raise RuntimeError(f"worker {number} is not running")
        return worker.pid

    def kill_worker(self, number: int) -> None:
        """SIGKILL worker ``number``'s process group: the worker, its executor and that executor's Python workers."""
        os.killpg(self.worker_pid(number), signal.SIGKILL)
        self.workers[number].wait()  # type: ignore[union-attr]

    def stop(self) -> None:
        """Stop every worker, then the master (SIGTERM to each process group, SIGKILL after 20 s)."""
        for process in [*self.workers, self.master]:
            if process is None or process.poll() is not None:
                continue
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def __enter__(self) -> StandaloneCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()
