"""Thin entry point: `python training/train_text.py [--data-dir DIR | --db URL] ...` = `rakuten train text ...`."""

import sys

from rakuten_classifier.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", "text", *sys.argv[1:]]))
