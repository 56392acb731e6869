"""The zoo's long trainings: every recipe as one resumable run, advanced within a budget.

Runs live in ``edge_sr/weights/runs/MODEL/`` and are committed with the weights, so a
later call (on this machine or another) continues each schedule where it stopped and
training time adds up. A model whose recipe starts from another model (FSRCNN x3/x4 from
x2, the k-means GhostSR from its plain twin, pruned SRResNets from 16 blocks) waits until
that model's schedule is complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .models import WEIGHTS_DIR, get_spec
from .train import TrainConfig, train

RUNS_DIR = WEIGHTS_DIR / "runs"

# The zoo's models in training order (sources before the models that start from them).
ZOO = ("fsrcnn_x2", "ecbsr_m4c16_x2", "fsrcnn_s_x2", "fsrcnn_tiny_x2", "xlsr_x3",
       "ghostsr_x2", "edsrlite_x2", "srresnet_b16_x4", "fsrcnn_x3", "fsrcnn_x4",
       "ghostsr_km_x2", "srresnet_b12_x4", "srresnet_b8_x4", "srresnet_b4_x4",
       "srresnet_b2_x4")


@dataclass
class ZooTrainConfig:
    """Arguments of ``train_zoo``.

    Attributes:
        models: Models to advance (default: ``ZOO``), in this order.
        minutes: Budget of this call, shared equally by the runs that can advance.
        runs: Runs folder (default ``RUNS_DIR``).
        threads: torch intra-op threads (0 = torch default).
        device: ``"cpu"`` or ``"cuda"``.
    """

    models: list[str] = field(default_factory=list)
    minutes: float = 60.0
    runs: str = ""
    threads: int = 0
    device: str = "cpu"


def run_state(runs: Path, name: str) -> tuple[int, int]:
    """(steps done, steps in the schedule) of a model's run; (0, recipe iters) if none."""
    last = runs / name / "last.pt"
    iters = get_spec(name).recipe.iters
    if not last.exists():
        return 0, iters
    state = torch.load(last, map_location="cpu", weights_only=False)
    return state["iter"], state.get("schedule", {}).get("iters", iters)


def _ready(runs: Path, name: str) -> bool:
    """Whether a run can advance: unfinished, and its source model's run is complete."""
    done, iters = run_state(runs, name)
    if done >= iters:
        return False
    source = get_spec(name).recipe.init
    if not source:
        return True
    s_done, s_iters = run_state(runs, source)
    return s_done >= s_iters


def train_zoo(cfg: ZooTrainConfig) -> dict:
    """Advance the zoo's runs within ``cfg.minutes``; rerun to continue.

    Returns:
        Per model: steps done / in the schedule, best validation PSNR, weights exported.
    """
    runs = Path(cfg.runs) if cfg.runs else RUNS_DIR
    names = cfg.models or list(ZOO)
    for name in names:
        get_spec(name)  # an unknown name fails before any training
    deadline = time.time() + 60 * cfg.minutes
    report: dict[str, dict] = {}
    while time.time() < deadline - 5:
        pending = [n for n in names if _ready(runs, n)]
        if not pending:
            break
        slice_min = (deadline - time.time()) / 60 / len(pending)
        for name in pending:
            left = (deadline - time.time()) / 60
            if left <= 0.05:
                break
            result = train(TrainConfig(model=name, out=str(runs / name),
                                       minutes=min(slice_min, left), threads=cfg.threads,
                                       device=cfg.device))
            report[name] = {"iter": result["iter"], "iters": get_spec(name).recipe.iters,
                            "best_psnr": result["best_psnr"], "weights": result["weights"]}
    for name in names:
        done, iters = run_state(runs, name)
        report.setdefault(name, {"iter": done, "iters": iters})
    return report
