"""Where training data came from: the synthetic demo catalogue or real products.

`rakuten data synth` leaves MARKER_FILE in the folder it writes; a folder without it holds real
products. `rakuten data load` records each load's origin in the ``loads`` table, training carries
the origin of the rows it learned from into every model version (metadata ``trained_on``, and the
fusion version's JSON), and the service shows it: /health (``trained_on``, ``warning``) and /ui.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# Written by the synthetic writer beside the CSVs (JSON: seed, rows, image size).
MARKER_FILE = "SYNTHETIC_CATALOGUE.json"

SYNTHETIC = "synthetic"
REAL = "real"
MIXED = "mixed"  # some rows synthetic, some real
UNKNOWN = "unknown"  # loaded before origins were recorded

HOW_TO_TRAIN_ON_REAL_DATA = (
    "To train on the real challenge data, put X_train_update.csv, Y_train_CVw08PX.csv and "
    "images/image_train/ in data/raw/, delete data/rakuten.db (it holds the synthetic rows), "
    "then run `make demo` again (or `rakuten data load --data-dir data/raw` and `rakuten train all`)."
)
_WARNINGS = {
    SYNTHETIC: "These models were trained only on the synthetic demo catalogue (titles drawn from short "
    "word lists, images of coloured shapes), never on real products: their answers on real titles and "
    "photos mean little. " + HOW_TO_TRAIN_ON_REAL_DATA,
    MIXED: "Part of the data these models were trained on is the synthetic demo catalogue, not real "
    "products: their answers are skewed by it. " + HOW_TO_TRAIN_ON_REAL_DATA,
}


def folder_origin(data_dir: str | Path) -> str:
    """SYNTHETIC when the folder was written by the synthetic writer, REAL otherwise."""
    return SYNTHETIC if (Path(data_dir) / MARKER_FILE).is_file() else REAL


def combined_origin(origins: Iterable[str | None]) -> str:
    """The origin of a set of rows from each row's (None: not recorded)."""
    found = {origin or UNKNOWN for origin in origins}
    if SYNTHETIC in found:
        return SYNTHETIC if found == {SYNTHETIC} else MIXED
    return REAL if found == {REAL} else UNKNOWN


def origin_warning(origin: str | None) -> str | None:
    """What a user must be told about models trained on data of this origin (None: nothing)."""
    return _WARNINGS.get(origin or UNKNOWN)
