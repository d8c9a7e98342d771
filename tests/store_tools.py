"""Tools for tests that change a model store: a copy of the session's store, and edits made in a subprocess.

Stores other than the session's are read and written through a `python -c` subprocess: BentoML
resolves its home once per process, so the test process only ever sees the session's store.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from conftest import run_json

# Runs in a subprocess whose BENTOML_HOME is another store; prints one JSON document.
STORE_TOOL = r'''
import json, shutil, sys
import bentoml
from rakuten_classifier import registry as r

def versions(name):
    try:
        return sorted((m for m in bentoml.models.list(name)), key=lambda m: m.info.creation_time)
    except bentoml.exceptions.NotFound:
        return []

def copy_version(tag, name, edit=None):
    """A new version of `name` holding the files of `tag` (same labels and metadata), via save_to_store."""
    source, info = r.model_path(tag), r.model_info(tag)
    def write(directory):
        for item in source.iterdir():
            if item.name in (r.MANIFEST_FILE, "model.yaml"):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, directory / item.name)
        if edit:
            edit(directory)
    return r.save_to_store(name, write, info["labels"], info["metadata"])

op = sys.argv[1]
if op == "state":
    production = r.production_trio()
    print(json.dumps({
        "production": None if production is None else production.__dict__,
        "fusion": [str(m.tag) for m in versions(r.FUSION_MODEL)],
        "production_fusion": [str(m.tag) for m in versions(r.FUSION_MODEL)
                              if m.info.labels.get("stage") == r.STAGE_PRODUCTION],
        "text": [str(m.tag) for m in versions(r.TEXT_MODEL)],
        "image": [str(m.tag) for m in versions(r.IMAGE_MODEL)],
    }))
elif op == "corrupt-production":
    # A new production trio: a copy of the production text model, then truncated, and a fusion naming it.
    current = r.production_trio()
    text_tag = copy_version(current.text, r.TEXT_MODEL)
    def point_at_copy(directory):
        config = json.loads((directory / r.FUSION_FILE).read_text())
        config["text_model"] = text_tag
        (directory / r.FUSION_FILE).write_text(json.dumps(config, indent=2))
    fusion_tag = copy_version(current.fusion, r.FUSION_MODEL, point_at_copy)
    folder = r.model_path(text_tag)
    largest = max((p for p in folder.rglob("*") if p.is_file() and p.name not in (r.MANIFEST_FILE, "model.yaml")),
                  key=lambda p: p.stat().st_size)
    size = largest.stat().st_size
    with open(largest, "r+b") as handle:
        handle.truncate(size // 2)
    print(json.dumps({"fusion": fusion_tag, "text": text_tag, "truncated": largest.name, "bytes": [size, size // 2],
                      "previous": current.__dict__}))
elif op == "new-trio":
    # A new production trio without training: copies of the production text and image versions
    # (new tags, same files) and a copy of the fusion version naming them, labelled production.
    current = r.production_trio()
    text_tag, image_tag = copy_version(current.text, r.TEXT_MODEL), copy_version(current.image, r.IMAGE_MODEL)
    def point_at_copies(directory):
        config = json.loads((directory / r.FUSION_FILE).read_text())
        config["text_model"], config["image_model"] = text_tag, image_tag
        (directory / r.FUSION_FILE).write_text(json.dumps(config, indent=2))
    fusion_tag = copy_version(current.fusion, r.FUSION_MODEL, point_at_copies)
    print(json.dumps({"fusion": fusion_tag, "text": text_tag, "image": image_tag, "previous": current.__dict__}))
'''


def store_tool(home: Path, *arguments: str) -> dict:
    """Run STORE_TOOL against the store at ``home``."""
    return run_json([sys.executable, "-c", STORE_TOOL, *arguments], dict(os.environ, BENTOML_HOME=str(home)), 300)


def copy_session_store(target: Path) -> Path:
    """A copy of the session's model store (after `trained`), so a test may change it freely."""
    home = target / "bentoml"
    shutil.copytree(Path(os.environ["BENTOML_HOME"]) / "models", home / "models")
    return home
