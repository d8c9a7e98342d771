"""Arrays cached by string key in ``.npz`` shards: the image-feature cache and the text-embedding cache.

A shard holds the keys and their rows under two named fields; shards are written whole or not at
all (a temporary file renamed into place) and any unreadable shard is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def read_shards(cache_dir: Path, prefix: str, wanted: set[str], fields: tuple[str, str]) -> dict[str, np.ndarray]:
    """The rows of the ``wanted`` keys found in the shards ``<prefix>-*.npz`` (``fields``: keys, rows)."""
    key_field, row_field = fields
    found: dict[str, np.ndarray] = {}
    for shard in sorted(cache_dir.glob(f"{prefix}-*.npz")):
        if len(found) == len(wanted):
            break
        try:
            with np.load(shard, allow_pickle=False) as stored:
                keys = stored[key_field].tolist()
                rows = [i for i, key in enumerate(keys) if key in wanted and key not in found]
                if rows:
                    found.update(zip((keys[i] for i in rows), stored[row_field][rows], strict=True))
        except (OSError, KeyError, ValueError) as exc:
            log.warning("cache shard %s unreadable (%s); ignored", shard, exc)
    return found


def write_shard(cache_dir: Path, prefix: str, keys: list[str], rows: np.ndarray, fields: tuple[str, str]) -> Path:
    """One shard ``<prefix>-<hash of its keys>.npz`` holding ``keys`` and their ``rows``."""
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    shard = cache_dir / f"{prefix}-{digest}.npz"
    cache_dir.mkdir(parents=True, exist_ok=True)
    # This thread's own temporary file, outside the ``<prefix>-*.npz`` that readers glob: two writers
    # filling one cache (the suite's two workers, Spark's executors) may write the same shard at once.
    partial = cache_dir / f".{shard.stem}.{os.getpid()}-{threading.get_ident()}.tmp.npz"
    arrays: dict[str, np.ndarray] = {fields[0]: np.array(keys), fields[1]: rows}
    np.savez(partial, allow_pickle=False, **arrays)
    os.replace(partial, shard)  # a reader never sees half a shard
    return shard
