"""Benchmark: one-time SQL load of a full-size (84,916-row) synthetic catalogue.

    .venv/bin/python benchmarks/bench_load.py [--rows 84916] [--db URL] [--json]

The catalogue is written once to --work-dir (reused on later runs); only the load is timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from rakuten_classifier.data.store import load_into_db
from rakuten_classifier.data.synthetic import write_synthetic_catalogue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=84_916)
    parser.add_argument("--image-size", type=int, default=32, help="small images: only headers are read")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "rakuten-bench-load")
    parser.add_argument("--db", help="SQLAlchemy URL (default: a fresh SQLite file in --work-dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    catalogue = args.work_dir / f"catalogue-{args.rows}"
    if not (catalogue / "X_train_update.csv").is_file():
        write_synthetic_catalogue(catalogue, args.rows, seed=0, image_size=args.image_size)
    db_file = args.work_dir / "bench.db"
    db_file.unlink(missing_ok=True)
    url = args.db or f"sqlite:///{db_file}"
    started = time.perf_counter()
    first = load_into_db(catalogue, url, seed=42, val_fraction=0.15, test_fraction=0.20)
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    second = load_into_db(catalogue, url, seed=42, val_fraction=0.15, test_fraction=0.20)
    second_seconds = time.perf_counter() - started
    result = {
        "rows": first["rows"],
        "inserted_first": first["inserted"],
        "inserted_second": second["inserted"],
        "first_load_s": round(first_seconds, 2),
        "second_load_s": round(second_seconds, 2),
        "rows_per_s": round(first["rows"] / first_seconds),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "db": url.split("://")[0],
        "target_s": 60,
    }
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        for key, value in result.items():
            sys.stdout.write(f"{key}: {value}\n")


if __name__ == "__main__":
    main()
