"""Store a measurement in docs/results/ and render docs/results.md and the README's tables.

    python scripts/results.py add zoo --kind zoo reports/zoo.json
    python scripts/results.py add bench-host --kind bench reports/bench/bench.json
    python scripts/results.py add bench-rpi4 --kind bench FILE --machine "emulated aarch64 ..."
    python scripts/results.py render
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_sr.benchmark.results import KINDS, add, render  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("add", help="store FILE as docs/results/NAME.json")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--machine", default="", help="where it ran (default: this host)")
    p.add_argument("--note", default="")
    sub.add_parser("render", help="write docs/results.md and the README's result tables")
    args = parser.parse_args(argv)
    if args.cmd == "add":
        try:
            data = json.loads(Path(args.file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"results: error: {args.file}: {exc}", file=sys.stderr)
            return 2
        print(add(args.name, args.kind, data, args.machine, args.note))
    else:
        render()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
