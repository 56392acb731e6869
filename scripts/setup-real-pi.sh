#!/usr/bin/env bash
# Prepare a real Raspberry Pi (64-bit Raspberry Pi OS / Debian bookworm, aarch64) as an
# edge-sr device. Run ON THE PI from a copy of this repository's runtime/ folder:
#
#   scp -r runtime scripts/setup-real-pi.sh pi@raspberrypi:edge-sr/
#   ssh pi@raspberrypi 'cd edge-sr && sudo bash setup-real-pi.sh'
#
# Installs the device runtime (TVM runtime, numpy, pillow; never torch) into a venv and a
# systemd unit that keeps the RPC server running on 127.0.0.1:9090. Reach it from the host
# through an SSH tunnel (ssh -L 9090:127.0.0.1:9090 pi@raspberrypi), or register it with a
# tracker on a private network (EDGE_SR_TRACKER=host:9190 EDGE_SR_KEY=rpi4) -- TVM RPC runs
# any uploaded library, so never expose it on an untrusted network. EDGE_SR_PEERS=1 also
# installs `edge-sr bench`'s peers on the board (ONNX Runtime, ncnn) in a folder of their
# own, kept out of the runtime's venv.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PREFIX=/opt/edge-sr
[ "$(uname -m)" = aarch64 ] || { echo "setup-real-pi: run this on the Pi (aarch64)" >&2; exit 1; }
apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 \
  numpy pillow cloudpickle psutil
# Runtime-only TVM: the compiler library is not needed on the device.
rm -f "$PREFIX"/venv/lib/python3*/site-packages/tvm/lib/libtvm_compiler.so
rm -rf "$PREFIX/runtime" && cp -r "$HERE/runtime" "$PREFIX/runtime"
PYPATH="$PREFIX"
if [ "${EDGE_SR_PEERS:-0}" = 1 ]; then
  rm -rf "$PREFIX/bench-site"
  for peer in onnxruntime ncnn; do  # one at a time: a peer without a wheel skips alone
    "$PREFIX/venv/bin/pip" install -q --upgrade --target "$PREFIX/bench-site" "$peer" \
      "numpy<2.5" || echo "setup-real-pi: warning: no $peer wheel: bench runs without it"
  done
  PYPATH="$PREFIX:$PREFIX/bench-site"
fi
TRACKER_ARGS=""
[ -n "${EDGE_SR_TRACKER:-}" ] && TRACKER_ARGS="--tracker $EDGE_SR_TRACKER --key ${EDGE_SR_KEY:-rpi4}"
cat > /etc/systemd/system/edge-sr-rpc.service <<UNIT
[Unit]
Description=edge-sr TVM RPC server
After=network-online.target

[Service]
Environment=TVM_USE_RUNTIME_LIB=1 PYTHONPATH=$PYPATH
ExecStart=$PREFIX/venv/bin/python -m runtime.server --host 127.0.0.1 --port 9090 $TRACKER_ARGS
Restart=always
User=nobody

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now edge-sr-rpc.service
echo "setup-real-pi: edge-sr-rpc.service running on 127.0.0.1:9090"
echo "setup-real-pi: tune for this board from the host (through an SSH tunnel to port 9090):"
echo "  edge-sr tune --target rpi4 --model fsrcnn_x2 --size 128x128 --device 127.0.0.1:9090 --minutes 30"
