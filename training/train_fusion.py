"""Thin entry point: `python training/train_fusion.py [--data-dir DIR | --db URL] ...` = `rakuten train fusion ...`."""

import sys

from rakuten_classifier.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", "fusion", *sys.argv[1:]]))
