#!/usr/bin/env bash
# Install what the tests need, start the emulated Pi, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
bash scripts/host-deps
python3 -m pip install -q -c constraints.txt -e ".[dev,bench]"
bash scripts/emulated-pi setup
# status_field CMD KEY: one field of `scripts/emulated-pi CMD`'s JSON, as Python prints it.
status_field() {
  bash scripts/emulated-pi "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}
started=0
if [ "$(status_field status answers)" != True ]; then
  bash scripts/emulated-pi start
  started=1
fi
serial_started=0
if [ "$(status_field serial-status running)" != True ]; then
  bash scripts/emulated-pi serial-start
  serial_started=1
fi
cleanup() {
  [ "$serial_started" = 1 ] && bash scripts/emulated-pi serial-stop || true
  [ "$started" = 1 ] && bash scripts/emulated-pi stop || true
}
trap cleanup EXIT
ruff check .
python3 -m pytest -q -rs "$@"
