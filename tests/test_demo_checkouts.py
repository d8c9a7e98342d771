"""`make demo` keeps its models in its own checkout: two clones' demos, one after the other, never see,
gate against nor serve each other's models, and the default store (~/bentoml) stays untouched. When
the page answers, the demo prints one block (the page's address, the admin token it gave the server,
where the models are, how to stop), and with the printed token the page saves a correction."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import REPO_ROOT, free_port
from store_tools import store_tool

# The synthetic catalogue at its smallest that trains every model (as tests/test_ui.py's): each demo
# took about 85 s to ready on a busy 2-core box, most of it training.
TINY_DEMO = ("DEMO_ROWS=300", "DEMO_IMAGE_SIZE=32", "DEMO_CV_FOLDS=2")
READY = re.compile(
    r"The demo is ready\. Open (?P<page>\S+)\n"
    r"admin token: (?P<token>\S+)\n.*?"
    r"model store: (?P<store>\S+) \(BENTOML_HOME\)\n"
    r"stop: Ctrl-C\n",
    re.DOTALL,
)


def _needs(*tools: str, venv: bool = False) -> None:
    """Skip without the tools (and a virtual environment, when the demo runs): fail instead under CI."""
    what = ", ".join(tools) + (" and a virtual environment" if venv else "")
    if any(shutil.which(tool) is None for tool in tools) or (venv and sys.prefix == sys.base_prefix):
        if os.environ.get("CI"):
            pytest.fail(f"the demo must be checkable here: it needs {what}")
        pytest.skip(f"needs {what}")


def _make_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: no store, data root or feature cache chosen (this session's
    are in os.environ), nor a make run around it; HOME a folder of its own, to see whether ~/bentoml is used."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RAKUTEN_", "MLFLOW_"))
        and name not in ("BENTOML_HOME", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHONPATH")
    }
    return {**env, "HOME": str(home), **extra}


def checkout(target: Path) -> Path:
    """A clone of this repository, holding this working tree's tracked files (so that uncommitted changes
    to the Makefile and tools/ are what runs)."""
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(target)], check=True, timeout=120)
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=60
    ).stdout
    for name in filter(None, tracked.split("\0")):
        if (REPO_ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, target / name)
    return target


class Demo:
    """`make demo` in a checkout, run as a terminal runs it (a process group of its own), its output kept."""

    def __init__(self, folder: Path, env: dict[str, str], port: int):
        self.folder = folder
        self.port = port
        self.lines: list[str] = []
        # This venv serves as the clone's: VENV names it and -o keeps make from reinstalling it (its stamp is
        # older than a fresh clone's lock files); PYTHONPATH stands for a clone's own editable install.
        command = ["make", "--no-print-directory", "demo", f"VENV={sys.prefix}", f"PORT={port}", *TINY_DEMO]
        command += ["-o", f"{sys.prefix}/.installed-stamp"]
        self.process = subprocess.Popen(
            command,
            cwd=folder,
            env={**env, "PYTHONPATH": str(folder / "src")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 420) -> dict[str, str]:
        """The ready block's fields, once printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = READY.search(self.output())
            if found:
                return found.groupdict()
            if self.process.poll() is not None:
                pytest.fail(f"make demo stopped before the page was ready:\n{self.output()[-4000:]}")
            time.sleep(1)
        pytest.fail(f"make demo not ready in {timeout:.0f} s:\n{self.output()[-4000:]}")

    def interrupt(self) -> None:
        """Ctrl-C: the terminal signals the foreground group (make and tools/demo_serve.py, not the server's)."""
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(90)
        self._reader.join(10)

    def kill(self) -> None:
        """Whatever is left of this demo, when a test fails midway (the server runs in groups of its own)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running_demo(folder: Path, env: dict[str, str]) -> Iterator[tuple[str, dict[str, str], Demo]]:
    """`make demo` up to its ready block: (the server's address, the block's fields, the demo); then Ctrl-C."""
    demo = Demo(folder, env, free_port())
    try:
        ready = demo.wait_ready()
        yield f"http://127.0.0.1:{demo.port}", ready, demo
        demo.interrupt()
        assert not _listening(demo.port), "the server outlived Ctrl-C"
    finally:
        if demo.process.poll() is None:
            demo.kill()


def correct_on_the_page(page, url: str, token: str) -> None:
    """What the ready block tells a user to do: on /ui, classify a gallery example, then "Wrong category?"
    with the printed token (first without it)."""
    page.goto(f"{url}/ui")
    page.wait_for_selector("body[data-ready=true]", state="attached")
    page.click("#gallery .example >> nth=0")  # the demo's gallery: the catalogue it trained on
    page.wait_for_selector('#results[data-state="done"]', state="attached")
    page.click("#correction summary")
    page.select_option("#correct-code", "2583")
    page.click("#correct-submit")
    page.wait_for_selector('#correction[data-state="error"]', state="attached")
    assert "make demo" in page.text_content("#correct-status")  # says where the token comes from
    page.fill("#admin-token", token)
    page.click("#correct-submit")
    page.wait_for_selector('#correction[data-state="saved"]', state="attached")
    assert "is now category 2583" in page.text_content("#correct-status")


@pytest.mark.slow
@pytest.mark.system
def test_two_checkouts_demos_keep_their_own_models_and_leave_the_default_store_alone(tmp_path, page):
    _needs("make", "git", venv=True)
    home = tmp_path / "home"
    home.mkdir()
    env = _make_env(home)
    first, second = checkout(tmp_path / "first"), checkout(tmp_path / "second")

    with running_demo(first, env) as (url, ready, demo):
        assert re.fullmatch(r"http://localhost:\d+/ui", ready["page"])
        assert ready["store"] == str(first / "bentoml_home")
        token_file = first / "data" / ".demo-admin-token"
        assert token_file.read_text().strip() == ready["token"]
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert "starting the server on port" in demo.output()
        health = httpx.get(f"{url}/health", timeout=30).json()
        correct_on_the_page(page, url, ready["token"])
    first_store = store_tool(first / "bentoml_home", "state")
    assert health["models"] == first_store["production"]

    with running_demo(second, env) as (url, again, demo):
        second_health = httpx.get(f"{url}/health", timeout=30).json()
        product = {"designation": "Piscine hors sol acier", "description": "", "prdtypecode": "2583"}
        assert httpx.post(f"{url}/corrections", data=product, timeout=60).status_code == 401
        bearer = {"Authorization": f"Bearer {again['token']}"}
        assert httpx.post(f"{url}/corrections", data=product, headers=bearer, timeout=60).status_code == 201
    second_store = store_tool(second / "bentoml_home", "state")
    # The second clone trained into an empty store of its own: its promotion gate found no production
    # models to compare with (it never saw the first clone's), and it served its own.
    assert "no production models yet" in demo.output()
    assert again["store"] == str(second / "bentoml_home")
    assert second_health["models"] == second_store["production"]
    first_tags = {tag for name in ("text", "image", "fusion") for tag in first_store[name]}
    second_tags = {tag for name in ("text", "image", "fusion") for tag in second_store[name]}
    assert first_tags.isdisjoint(second_tags)
    assert again["token"] != ready["token"]  # one token per checkout

    assert store_tool(first / "bentoml_home", "state") == first_store  # untouched by the second demo
    assert not (home / "bentoml").exists()  # BentoML's default home was never used


def test_the_model_store_is_the_checkouts_unless_bentoml_home_is_given(tmp_path):
    _needs("make")
    help_of = ["make", "--no-print-directory", "-C", str(REPO_ROOT), "help"]

    def store(*arguments: str, **env: str) -> str:
        shown = subprocess.run(
            [*help_of, *arguments], env=_make_env(tmp_path, **env), capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0, shown.stderr
        return re.search(r"BENTOML_HOME=(\S+)", shown.stdout)[1]  # type: ignore[index]

    assert store() == str(REPO_ROOT / "bentoml_home")
    assert store(BENTOML_HOME="") == str(REPO_ROOT / "bentoml_home")  # set but empty is not a choice
    assert store(BENTOML_HOME="/srv/models") == "/srv/models"  # the user's environment wins
    assert store("BENTOML_HOME=/srv/other", BENTOML_HOME="/srv/models") == "/srv/other"  # then make's argument


# ---------------------------------------------------------------- tools/demo_serve.py with stand-in servers

DEMO_SERVE = [sys.executable, str(REPO_ROOT / "tools" / "demo_serve.py")]
# A stand-in server: writes its pid and the admin token it was given, then answers 200 to every GET once
# argv[3] is "ready" (else it never listens).
STAND_IN = """
import http.server, os, sys, time
open(sys.argv[1], "w").write(f"{os.getpid()} {os.environ.get('RAKUTEN_ADMIN_TOKEN')}")
if sys.argv[3] != "ready":
    time.sleep(120)
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), Ok).serve_forever()
"""


def _stand_in(record: Path, port: int, state: str) -> list[str]:
    return ["--", sys.executable, "-c", STAND_IN, str(record), str(port), state]


def test_a_server_not_ready_in_time_is_stopped_and_the_demo_says_so(tmp_path):
    port, record = free_port(), tmp_path / "server"
    options = ["--port", str(port), "--token-file", str(tmp_path / "token"), "--ready-timeout", "3"]
    done = subprocess.run(
        [*DEMO_SERVE, *options, *_stand_in(record, port, "never")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "did not answer /readyz within 3 s" in done.stderr
    assert "The demo is ready" not in done.stdout
    pid = int(record.read_text().split()[0])
    assert not psutil.pid_exists(pid)  # stopped and reaped, not left behind


def test_a_taken_port_is_said_before_anything_starts(tmp_path):
    record = tmp_path / "server"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        options = ["--port", str(port), "--token-file", str(tmp_path / "token")]
        done = subprocess.run(
            [*DEMO_SERVE, *options, *_stand_in(record, port, "ready")], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert f"port {port} is in use" in done.stderr
    assert f"make demo PORT={port + 1}" in done.stderr
    assert not record.exists()  # the server command never ran


def test_the_environments_admin_token_is_given_to_the_server_not_printed_and_sigterm_stops_it(tmp_path):
    port, record = free_port(), tmp_path / "server"
    options = ["--port", str(port), "--token-file", str(tmp_path / "token"), "--ready-timeout", "60"]
    env = dict(os.environ, RAKUTEN_ADMIN_TOKEN="chosen-by-the-user")
    demo = subprocess.Popen(
        [*DEMO_SERVE, *options, *_stand_in(record, port, "ready")], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:  # up to the block's last line, or the end when it never comes
            lines.append(line)
            if line == "stop: Ctrl-C\n":
                break
        shown = "".join(lines)
        demo.send_signal(signal.SIGTERM)  # passed on to the server's group
        assert demo.wait(60) == 0
    finally:
        demo.kill()
    assert f"Open http://localhost:{port}/ui" in shown
    assert "the value of RAKUTEN_ADMIN_TOKEN in your environment" in shown
    assert "chosen-by-the-user" not in shown
    pid, given = record.read_text().split()
    assert given == "chosen-by-the-user"
    assert not psutil.pid_exists(int(pid))
    assert not (tmp_path / "token").exists()  # no file written when the environment names the token
