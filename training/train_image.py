"""Thin entry point: `python training/train_image.py [--data-dir DIR | --db URL] ...` = `rakuten train image ...`."""

import sys

from rakuten_classifier.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", "image", *sys.argv[1:]]))
