"""Tools for tests that change a model store: a copy of the session's store, and edits made in a subprocess."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import program, run_json


def store_tool(home: Path, *arguments: str) -> dict:
    """Run tests/programs/store_tool.py against the store at ``home``."""
    return run_json(program("store_tool", *arguments), dict(os.environ, BENTOML_HOME=str(home)), 300)


def copy_session_store(target: Path) -> Path:
    """A copy of the session's model store (after `trained`), so a test may change it freely."""
    home = target / "bentoml"
    shutil.copytree(Path(os.environ["BENTOML_HOME"]) / "models", home / "models")
    return home
