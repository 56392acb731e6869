#!/usr/bin/env bash
# Retrain every committed checkpoint with the settings they were trained with (2-core CPU).
# Each run is resumable: rerun the script after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { edge-sr train --threads 2 "$@"; }
# 148 parameters: a higher rate and a longer schedule (20k steps at 5e-4 stayed below bicubic)
run --model fsrcnn_tiny_x2 --iters 60000 --lr 2e-3 --val-every 5000
run --model xlsr_x3 --iters 15000 --val-every 1500
run --model fsrcnn_s_x2 --iters 15000 --val-every 1500
run --model fsrcnn_x2 --iters 10000 --val-every 1000
run --model ecbsr_m4c16_x2 --iters 6000 --val-every 600
run --model ghostsr_x2 --iters 3000 --val-every 500
run --model srresnet_b4_x4 --iters 1500 --val-every 250
# (resumed once: 500 steps of a 2500-step schedule, then 1500 in total)
run --model srresnet_b16_x4 --iters 1500 --val-every 250
for m in fsrcnn_tiny_x2 xlsr_x3 fsrcnn_s_x2 fsrcnn_x2 ecbsr_m4c16_x2 ghostsr_x2 srresnet_b4_x4 srresnet_b16_x4; do
  cp "runs/$m/log.csv" "edge_sr/weights/$m.csv"
done
