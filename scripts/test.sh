#!/usr/bin/env bash
# Install what the tests need, start the emulated Pi, run the whole test suite.
#   scripts/test.sh [PYTEST ARGS]   everything (what CI runs)
#   scripts/test.sh --quick         the fast tier: no slow tests, no emulated Pi (its tests skip)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
bash scripts/host-deps
python3 -m pip install -q -c constraints.txt -e ".[dev,bench,openvino,executorch,ncnn]"
if [ "$quick" = 1 ]; then
  ruff check .
  exec python3 -m pytest -q -rs -m "not slow and not device and not serial and not gpu" "$@"
fi
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
