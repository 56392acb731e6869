#!/usr/bin/env python3
"""Side-by-side latency benchmark: ``python scripts/bench.py [--model ...] [--size 360x640]``.

The same as ``edge-sr bench``: PyTorch eager, ONNX Runtime fp32 and int8 (static QDQ),
TVM untuned and tuned fp32 and int8, on one input, in one run; writes
reports/bench/{bench.json, bench.md, latency.png, pareto.png}.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_sr.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
