"""Thin entry point: `python training/evaluate.py --data-dir DIR [--split test] [--json]` = `rakuten evaluate ...`."""

import sys

from rakuten_classifier.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["evaluate", *sys.argv[1:]]))
