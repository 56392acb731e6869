#!/usr/bin/env bash
# The main job, end to end on a fresh machine (Debian 12, Python 3.11, root):
# install, evaluate the committed models, build the default model for the Pi, start the
# emulated Pi, benchmark it there over RPC on Set5, upscale a sample image on it, read the
# board's health over its serial console, profile the module per layer on the device, and
# compare PyTorch / ONNX Runtime / TVM latency on the host (reports/bench/).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

step() { printf '\n== %s\n' "$*"; }

step "host tools: cross compiler, QEMU, debootstrap, socat (apt, when missing)"
bash scripts/host-deps

step "install edge-sr (pins in pyproject.toml, tools in constraints.txt)"
python3 -m pip install -q -c constraints.txt -e ".[bench,openvino,executorch,ncnn]"

step "committed models on Set5 (PyTorch fp32, host x86)"
edge-sr zoo --dataset set5

step "build the default model for the Raspberry Pi 4 (python compile/build.py --target arm)"
python3 compile/build.py --target arm
ARTIFACT=artifacts/ecbsr_m4c16_x2-rpi4-float32

step "start the emulated Raspberry Pi (QEMU aarch64, RPC on 127.0.0.1:9090)"
bash scripts/emulated-pi setup
bash scripts/emulated-pi start
bash scripts/emulated-pi status

step "benchmark on the device over RPC: Set5 latency and PSNR (emulated: ratios, not a Pi's ms)"
edge-sr bench-device --artifact "$ARTIFACT" --device 127.0.0.1:9090 --dataset set5 --repeat 5

step "upscale a sample image on the device with runtime.upscale"
SAMPLE="$(python3 -c 'from edge_sr.data import DATASETS_DIR; print(DATASETS_DIR / "set5" / "img_002.png")')"
bash scripts/emulated-pi upscale "$SAMPLE" artifacts/sample_x2.png "$ARTIFACT"
echo "wrote artifacts/sample_x2.png"

step "the board over its serial console (emulated: a PTY with a login prompt)"
bash scripts/emulated-pi serial-start
CONSOLE="$(bash scripts/emulated-pi serial-status)"
PORT="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["port"])' "$CONSOLE")"
PWFILE="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["password_file"])' "$CONSOLE")"
edge-sr device info --serial "$PORT" --user pi --password-file "$PWFILE"
bash scripts/emulated-pi serial-stop

step "per-layer profile of the module on the device"
edge-sr profile --artifact "$ARTIFACT" --device 127.0.0.1:9090 --repeat 3

step "latency side by side on the host: fsrcnn_x2 at 360x640 (tuned database committed)"
edge-sr bench --model fsrcnn_x2 --repeat 10 --out reports/bench
