"""Thin entry point: `python training/train_all.py [--data-dir DIR | --db URL] ...` = `rakuten train all ...`."""

import sys

from rakuten_classifier.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", "all", *sys.argv[1:]]))
