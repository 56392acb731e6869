#!/usr/bin/env bash
# Advance every model's training run (recipes in edge_sr/models/recipe.py) for a time
# budget, then stop with each run checkpointed in edge_sr/weights/runs/. Rerun to continue:
# the schedules pick up where they stopped, on this machine or another, so training time
# adds up. Weights in edge_sr/weights/ are replaced only when a run's best beats them on the
# held-out validation images (the last 20 of BSD200). Commit edge_sr/weights/ afterwards.
#
#   bash scripts/train_all.sh [MINUTES] [edge-sr train-zoo options, e.g. --model fsrcnn_x2]
#   bash scripts/train_all.sh 30 --device cuda --jobs 8   # a GPU trains runs side by side
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-60}"
shift || true
edge-sr train-zoo --minutes "$minutes" "$@"
