"""Real Prometheus and Alertmanager (Debian's packages, `make monitoring-tools`) for the monitoring tests: their
configuration rendered from deploy/ by tools/monitoring_config.py, each started as a server child of the
`serve` fixture (stopped by process group when the test's scope ends), and their HTTP APIs."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT, Server, ServerFactory, free_port

sys.path.insert(0, str(REPO_ROOT / "tools"))
import monitoring_config  # tools/ is no package: on the path above

PROMETHEUS, ALERTMANAGER, PROMTOOL, AMTOOL = "prometheus", "prometheus-alertmanager", "promtool", "amtool"


def tool(name: str) -> str:
    """The path of a monitoring tool; fails with the way to install it when it is missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} not found: install Debian's prometheus and prometheus-alertmanager (`make monitoring-tools`)"
        )
    return found


def shortened(rendered: dict[str, dict], seconds: int = 1) -> dict[str, dict]:
    """The test-only variant of the rendered files: every interval ``seconds``, every rule's `for` 0 (fires at
    the first evaluation that sees it), Alertmanager's group waits ``seconds`` (its repeat interval stays long:
    a re-send is sent by the test itself)."""
    period = f"{seconds}s"
    rendered["prometheus.yml"]["global"].update(scrape_interval=period, evaluation_interval=period)
    for group in rendered["alerts.yml"]["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    rendered["alertmanager.yml"]["route"].update(group_wait=period, group_interval=period)
    return rendered


def start_prometheus(serve: ServerFactory, request: pytest.FixtureRequest, folder: Path) -> Server:
    """Prometheus on ``folder``/prometheus.yml (and its rules beside it), ready."""
    port = free_port()
    command = [
        tool(PROMETHEUS),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    server = serve.start(request, command, port, {"PATH": "/usr/bin:/bin"}, folder, folder / "prometheus.log")
    server.wait_ready(60, "/-/ready", every=0.3)
    return server


def start_alertmanager(serve: ServerFactory, request: pytest.FixtureRequest, folder: Path, port: int) -> Server:
    """Alertmanager on ``folder``/alertmanager.yml at ``port`` (no cluster), ready."""
    command = [
        tool(ALERTMANAGER),
        f"--config.file={folder / 'alertmanager.yml'}",
        f"--storage.path={folder / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    server = serve.start(request, command, port, {"PATH": "/usr/bin:/bin"}, folder, folder / "alertmanager.log")
    server.wait_ready(60, "/-/ready", every=0.3)
    return server


def query(prometheus: Server, expr: str) -> list[dict]:
    """The instant query's result (its series) through Prometheus's HTTP API."""
    answer = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": expr}, timeout=10)
    body = answer.json()
    assert answer.status_code == 200, (expr, body)
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def until(condition, timeout: float, what: str, period: float = 0.5):
    """``condition()``'s first truthy value, polled every ``period`` seconds; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(period)


def render(folder: Path, service: Server, alertmanager_port: int, token_file: Path | None = None) -> Path:
    """The shortened configuration for ``service`` and an Alertmanager at ``alertmanager_port``, in ``folder``."""
    rendered = monitoring_config.configs(
        f"127.0.0.1:{service.port}", f"127.0.0.1:{alertmanager_port}", token_file=token_file
    )
    monitoring_config.write(shortened(rendered), folder)
    return folder
