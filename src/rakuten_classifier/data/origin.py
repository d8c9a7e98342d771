"""Where training data came from: the synthetic demo catalogue or real products.

`rakuten data synth` leaves MARKER_FILE in the folder it writes; a folder without it holds real
products. `rakuten data load` records each load's origin in the ``loads`` table, training carries
the origin of the rows it learned from into every model version (metadata ``trained_on``, and the
fusion version's JSON), and the service shows it: /health (``trained_on``, ``warning``) and /ui.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..config import Settings, get_settings

# Written by the synthetic writer beside the CSVs (JSON: seed, rows, image size).
MARKER_FILE = "SYNTHETIC_CATALOGUE.json"

SYNTHETIC = "synthetic"
REAL = "real"
CORRECTION = "correction"  # a product an operator corrected (data/corrections.py): a real product
MIXED = "mixed"  # some rows synthetic, some real
UNKNOWN = "unknown"  # loaded before origins were recorded

_WARNINGS = {
    SYNTHETIC: "These models were trained only on the synthetic demo catalogue (titles drawn from short "
    "word lists, images of coloured shapes), never on real products: their answers on real titles and "
    "photos mean little.",
    MIXED: "Part of the data these models were trained on is the synthetic demo catalogue, not real "
    "products: their answers are skewed by it.",
}


def how_to_train_on_real_data(settings: Settings) -> str:
    """Where the challenge files go and what to run, in this configuration's paths."""
    raw = settings.raw_dir.as_posix()
    # Never the URL of a configured database: it may hold a password, and /health and /ui show this text.
    database = settings.sqlite_file.as_posix() if settings.db_url is None else "the database of RAKUTEN_DB_URL"
    return (
        "To train on the real challenge data, put X_train_update.csv, Y_train_CVw08PX.csv and "
        f"images/image_train/ in {raw}/, delete {database} (it holds the synthetic rows), "
        f"then run `make demo` again (or `rakuten data load --data-dir {raw}` and `rakuten train all`)."
    )


def folder_origin(data_dir: str | Path) -> str:
    """SYNTHETIC when the folder was written by the synthetic writer, REAL otherwise."""
    return SYNTHETIC if (Path(data_dir) / MARKER_FILE).is_file() else REAL


def combined_origin(origins: Iterable[str | None]) -> str:
    """The origin of a set of rows from each row's (None: not recorded)."""
    found = {REAL if origin == CORRECTION else origin or UNKNOWN for origin in origins}
    if SYNTHETIC in found:
        return SYNTHETIC if found == {SYNTHETIC} else MIXED
    return REAL if found == {REAL} else UNKNOWN


def origin_warning(origin: str | None) -> str | None:
    """What a user must be told about models trained on data of this origin (None: nothing)."""
    warning = _WARNINGS.get(origin or UNKNOWN)
    return None if warning is None else f"{warning} {how_to_train_on_real_data(get_settings())}"
