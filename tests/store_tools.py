"""Reads or changes a model store other than the session's, in this process (conftest.model_store stands it in
for the session's while an operation runs); a copy to edit: conftest.TinyTrio.copy. Operations:

- ``state``: the production trio and every version of each model, oldest first;
- ``corrupt-production``: a new production trio whose text version (a copy of the production one) is
  then truncated;
- ``new-trio``: a new production trio without training: copies of the production versions (new tags,
  the same files) and a fusion version naming them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from conftest import model_store

from rakuten_classifier import registry


def store_tool(home: Path, operation: str) -> dict:
    """``operation`` (one of OPERATIONS) on the store at ``home``: what it reports."""
    with model_store(home):
        return OPERATIONS[operation]()


def copy_version(tag: str, name: str, edit: Callable[[Path], None] | None = None) -> str:
    """A new version of ``name`` holding the files of ``tag`` (same labels and metadata), via save_to_store."""
    source, info = registry.model_path(tag), registry.model_info(tag)

    def write(directory: Path) -> None:
        for item in source.iterdir():
            if item.name in (registry.MANIFEST_FILE, "model.yaml"):
                continue
            if item.is_dir():
                shutil.copytree(item, directory / item.name)
            else:
                shutil.copy2(item, directory / item.name)
        if edit:
            edit(directory)

    return registry.save_to_store(name, write, info["labels"], info["metadata"])


def fusion_naming(text_tag: str, image_tag: str | None = None) -> Callable[[Path], None]:
    """An edit of a copied fusion version: its config names these text (and image) versions."""

    def edit(directory: Path) -> None:
        config = json.loads((directory / registry.FUSION_FILE).read_text())
        config["text_model"] = text_tag
        if image_tag is not None:
            config["image_model"] = image_tag
        (directory / registry.FUSION_FILE).write_text(json.dumps(config, indent=2))

    return edit


def production() -> registry.Trio:
    current = registry.production_trio()
    if current is None:
        raise AssertionError("no production trio in this store")
    return current


def state() -> dict:
    current = registry.production_trio()
    return {
        "production": None if current is None else vars(current),
        "fusion": [str(m.tag) for m in registry.versions(registry.FUSION_MODEL)],
        "production_fusion": [
            str(m.tag)
            for m in registry.versions(registry.FUSION_MODEL)
            if m.info.labels.get("stage") == registry.STAGE_PRODUCTION
        ],
        "text": [str(m.tag) for m in registry.versions(registry.TEXT_MODEL)],
        "image": [str(m.tag) for m in registry.versions(registry.IMAGE_MODEL)],
    }


def corrupt_production() -> dict:
    """A new production trio: a copy of the production text model, then truncated, and a fusion naming it."""
    current = production()
    text_tag = copy_version(current.text, registry.TEXT_MODEL)
    fusion_tag = copy_version(current.fusion, registry.FUSION_MODEL, fusion_naming(text_tag))
    folder = registry.model_path(text_tag)
    largest = max(
        (p for p in folder.rglob("*") if p.is_file() and p.name not in (registry.MANIFEST_FILE, "model.yaml")),
        key=lambda p: p.stat().st_size,
    )
    size = largest.stat().st_size
    with open(largest, "r+b") as handle:
        handle.truncate(size // 2)
    return {
        "fusion": fusion_tag,
        "text": text_tag,
        "truncated": largest.name,
        "bytes": [size, size // 2],
        "previous": vars(current),
    }


def new_trio() -> dict:
    """A new production trio without training: copies of the production versions and a fusion naming them."""
    current = production()
    text_tag = copy_version(current.text, registry.TEXT_MODEL)
    image_tag = copy_version(current.image, registry.IMAGE_MODEL)
    fusion_tag = copy_version(current.fusion, registry.FUSION_MODEL, fusion_naming(text_tag, image_tag))
    return {"fusion": fusion_tag, "text": text_tag, "image": image_tag, "previous": vars(current)}


OPERATIONS: dict[str, Callable[[], dict]] = {
    "state": state,
    "corrupt-production": corrupt_production,
    "new-trio": new_trio,
}
