"""Edits of a model store other than the session's, made in a subprocess (BentoML resolves its home once per
process); a copy to edit: conftest.TinyTrio.copy."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import program, run_json


def store_tool(home: Path, *arguments: str) -> dict:
    """Run tests/programs/store_tool.py against the store at ``home``."""
    return run_json(program("store_tool", *arguments), dict(os.environ, BENTOML_HOME=str(home)), 300)
