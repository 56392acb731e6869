#!/usr/bin/env python3
"""Compile a model into a deployable TVM artifact: ``python compile/build.py --target arm``.

The same as ``edge-sr build``; see ``python compile/build.py --help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runnable from a checkout without installing (the package lives one folder up).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_sr.cli import add_build_args, add_tune_args, main  # noqa: E402


def run() -> int:
    parser = argparse.ArgumentParser(prog="compile/build.py", description=__doc__)
    add_build_args(parser)
    parser.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                        help="tune this many trials into the database first")
    add_tune_args(parser)
    parser.parse_args()  # --help and argument errors from this program's own parser
    return main(["build", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(run())
