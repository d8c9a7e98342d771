"""`make setup` is idempotent: run again after `make test`'s own run, it installs nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

# What the Makefile's install recipe runs; none of it may appear in a second run's output.
INSTALL_COMMANDS = ("pip install", " -m venv ")


def _installs(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(command in line for command in INSTALL_COMMANDS)]


def test_second_make_setup_installs_nothing():
    # Under `make test` (MAKELEVEL set) or in CI, setup has just run for this venv: it must be up to date.
    just_set_up = "MAKELEVEL" in os.environ or bool(os.environ.get("CI"))
    if shutil.which("make") is None or sys.prefix == sys.base_prefix:
        if just_set_up:
            pytest.fail("make setup must be checkable here: `make` and a virtual environment are required")
        pytest.skip("needs `make` and a virtual environment")
    # The venv running the tests is the one `make setup` manages (.venv in CI; a developer's may live elsewhere).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    command = ["make", "--no-print-directory", "-C", str(REPO_ROOT), f"VENV={sys.prefix}", "setup"]

    planned = subprocess.run([*command, "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert planned.returncode == 0, planned.stderr
    if _installs(planned.stdout) and not just_set_up:
        # Never reinstall a developer's venv from a test: a lock newer than its stamp means setup is due.
        pytest.skip(f"{sys.prefix} is older than this checkout's lock files: run `make setup` (or `make test`)")
    assert _installs(planned.stdout) == [], f"make setup would install again:\n{planned.stdout}"

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _installs(done.stdout + done.stderr) == [], done.stdout + done.stderr
    # The offline weights step also found its checkpoint in place (and verified it) rather than copying.
    assert Path(sys.prefix, ".installed-stamp").is_file()
